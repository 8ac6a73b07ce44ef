"""Read sections of params.yaml with one clear error for a missing file, section or key."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from configs.cli import UserError


DEFAULT_PARAMS = Path("params.yaml")
# the top-level sections of params.yaml (DESIGN.md fixed names, plus the toy encoders' section)
SECTIONS = ("seed", "toyworld", "teacher", "encoders", "train", "variants", "eval", "models", "benchmarks")


class ParamsError(UserError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {str(path)!r} not found (run from the repository root)")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"params file {str(path)!r} must be a mapping of sections")
    unknown = sorted(str(k) for k in data if k not in SECTIONS)
    if unknown:  # a typo such as `trian:` would otherwise be ignored and the run use the defaults
        hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, SECTIONS, 1)) else repr(k)
                 for k in unknown]
        raise ParamsError(f"params file {str(path)!r}: unknown section(s) {', '.join(hints)}; known: "
                          f"{', '.join(sorted(SECTIONS))}")
    return data


def section(name: str, path: str | Path = DEFAULT_PARAMS, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """One top-level section, merged over `defaults`; keys not in `defaults` are rejected when
    defaults are given, so a typo in params.yaml fails loudly instead of being ignored."""
    data = load_params(path)
    if name not in data:
        raise ParamsError(f"params file {str(path)!r} has no section {name!r}")
    if defaults is None:
        return dict(data[name] or {})
    return subsection(data, name, defaults)


def subsection(params: dict, path: str, defaults: dict[str, Any], editions: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A nested section (`benchmarks.geneval`) of loaded params merged over `defaults`, rejecting
    unknown keys; with `editions`, its `edition` must be one of them."""
    node: Any = params
    for part in path.split("."):
        node = (node or {}).get(part) if isinstance(node, dict) else None
    got = node or {}
    unknown = sorted(set(got) - set(defaults))
    if unknown:
        raise ParamsError(f"unknown key(s) {unknown} in params {path}; known: {sorted(defaults)}")
    cfg = {**defaults, **got}
    if editions is not None and cfg.get("edition") not in editions:
        raise ParamsError(f"{path}.edition must be one of {', '.join(editions)}, got {cfg.get('edition')!r}")
    return cfg
