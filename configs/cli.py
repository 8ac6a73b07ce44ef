"""How every command reports a problem the user can fix: one line on stderr, exit status 2.

    if __name__ == "__main__":
        run_command(main)

`main(argv)` raises as usual. A `UserError` (the project's own error classes derive from it), a file
error (OSError: missing, unreadable, not writable), a file that is not UTF-8, or a params file that
is not YAML prints `error: <message>` on one line and exits with status 2; anything else is a bug and
keeps its traceback. `--debug` anywhere on the command line shows the traceback of user errors too.
"""
from __future__ import annotations

import argparse
import sys


class UserError(Exception):
    """Marker base of the errors a user causes and can fix (bad params, paths, weights, checkpoints)."""


class CommandLineError(UserError, ValueError):
    """A bad command-line argument (argparse's message, with the program named)."""


_PACKAGES = ("toyworld", "backbones", "train", "evaluate", "benchmarks", "dashboards", "configs")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors follow the convention above (one `error:` line, status 2) instead of
    printing the usage block; `--help` is unchanged. The program is named as it was started
    (`python -m evaluate.metrics`), not by its file name."""

    def __init__(self, *args, **kwargs):
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if "prog" not in kwargs and spec is not None and spec.name.split(".")[0] in _PACKAGES:
            kwargs["prog"] = "python -m " + spec.name.removesuffix(".__main__")
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise CommandLineError(f"{message} ({self.prog}): see {self.prog} --help")


def count(minimum: int):
    """An argparse type: an integer >= minimum (image counts, rounds, batch sizes)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"need an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"need an integer >= {minimum}, got {text!r}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def user_errors() -> tuple[type[BaseException], ...]:
    import yaml  # a pinned dependency; imported here so that importing this module stays free

    return UserError, OSError, UnicodeDecodeError, yaml.YAMLError


def one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    if isinstance(error, UnicodeDecodeError):
        text = f"a file is not UTF-8 text ({text}); save it as UTF-8"
    elif isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{text} ({error.filename})"
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def run_command(main, argv: list[str] | None = None):
    """Run `main(argv)` under the error convention of the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # (accepted by every command; not listed in their --help)
    argv = [a for a in argv if a != "--debug"]
    try:
        return main(argv)
    except user_errors() as e:
        if debug:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        raise SystemExit(2) from None


__all__ = ["UserError", "CommandLineError", "ArgumentParser", "count", "user_errors", "one_line", "run_command"]
