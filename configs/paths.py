"""The files and folders a command reads and writes, checked before any work starts.

Each check raises `PathError` (a UserError: one line, exit status 2) naming the flag or params key
and the path, and writes nothing: a folder that does not exist yet is checked through its nearest
existing parent with a temporary probe file that is removed at once.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from configs.cli import UserError


class PathError(UserError, OSError):
    """A path given on the command line or in params.yaml that cannot be read or written."""

    def __str__(self) -> str:
        return str(self.args[0])


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe(folder: Path, what: str, key: str, path: Path) -> None:
    """A folder that does not exist yet is checked through its nearest existing parent."""
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise PathError(f"{what} cannot be created under a file ({key}: {path}): {base} is a file; choose another path")
    try:
        with tempfile.TemporaryFile(dir=base, prefix=".senseflow-write-probe-"):
            pass
    except OSError as e:
        raise PathError(f"{what} is not writable ({key}: {path}): {e.strerror or e}; choose a place you can "
                        f"write to") from None


def writable_folder(path: str | Path, what: str, key: str) -> Path:
    """`path` as a folder this process can create or write into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PathError(f"{what} is a file, not a folder ({key}: {path}): choose a folder path")
    _probe(path, what, key, path)
    return path


def writable_file(path: str | Path, what: str, key: str) -> Path:
    """`path` as a file this process can create or replace."""
    path = Path(path)
    if path.is_dir():
        raise PathError(f"{what} is a folder, not a file ({key}: {path}): give a file path")
    _probe(path.parent, what, key, path)
    return path


def readable_file(path: str | Path, what: str, key: str) -> Path:
    """`path` as an existing, readable, non-empty file."""
    path = Path(path)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise PathError(f"{what} {state} ({key}: {path}): point {key} at the file")
    try:
        with open(path, "rb") as f:
            if not f.read(1):
                raise PathError(f"{what} is empty ({key}: {path}): point {key} at a file with content")
    except PermissionError:
        raise PathError(f"{what} is not readable ({key}: {path}): check its permissions") from None
    return path


def readable_folder(path: str | Path, what: str, key: str) -> Path:
    """`path` as an existing folder."""
    path = Path(path)
    if not path.is_dir():
        state = "is a file" if path.exists() else "does not exist"
        raise PathError(f"{what} {state} ({key}: {path}): point {key} at the folder")
    return path


def text_lines(path: str | Path, what: str, key: str, max_chars: int = 2000) -> list[str]:
    """The non-empty lines of a UTF-8 text file (a prompt file), with the file named in every error."""
    path = readable_file(path, what, key)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PathError(f"{what} is not UTF-8 text ({key}: {path}): byte {e.start} cannot be decoded; save the file "
                        f"as UTF-8") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise PathError(f"{what} has no non-empty line ({key}: {path}): write one entry per line")
    for number, line in enumerate(lines, 1):
        if len(line) > max_chars:
            raise PathError(f"{what} has a line of {len(line)} characters ({key}: {path}, entry {number}): keep "
                            f"entries under {max_chars} characters (is it the right file?)")
    return lines


def superseded_dir(out: Path) -> Path:
    """A new, empty `<out>.superseded/<UTC time>/` folder beside `out`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = out.parent / f"{out.resolve().name}.superseded" / stamp
    n = 1
    while target.exists():
        n += 1
        target = out.parent / f"{out.resolve().name}.superseded" / f"{stamp}-{n}"
    target.mkdir(parents=True)
    return target


def supersede(out: Path) -> Path:
    """Move everything in `out` to `<out>.superseded/<UTC time>/` (never deletes); returns that folder."""
    out = Path(out)
    target = superseded_dir(out)
    for item in sorted(out.iterdir()):
        item.rename(target / item.name)
    return target


def supersede_entries(out: Path, names: list[str]) -> Path:
    """Move only the named entries of `out` (those that exist) to `<out>.superseded/<UTC time>/`."""
    out = Path(out)
    target = superseded_dir(out)
    for name in names:
        if (out / name).exists():
            (out / name).rename(target / name)
    return target


__all__ = ["PathError", "writable_folder", "writable_file", "readable_file", "readable_folder", "text_lines", "superseded_dir", "supersede", "supersede_entries"]
