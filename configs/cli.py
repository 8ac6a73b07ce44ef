"""How every command reports a problem the user can fix: one line on stderr, exit status 2.

    if __name__ == "__main__":
        run_command(main)

`main(argv)` raises as usual. A `UserError` (the project's own error classes derive from it), a file
error (OSError: missing, unreadable, not writable), a file that is not UTF-8, or a params file that
is not YAML prints `error: <message>` on one line and exits with status 2; anything else is a bug and
keeps its traceback. `--debug` anywhere on the command line shows the traceback of user errors too.
"""
from __future__ import annotations

import sys


class UserError(Exception):
    """Marker base of the errors a user causes and can fix (bad params, paths, weights, checkpoints)."""


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
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return main(argv)
    except user_errors() as e:
        if debug:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        raise SystemExit(2) from None


__all__ = ["UserError", "user_errors", "one_line", "run_command"]
