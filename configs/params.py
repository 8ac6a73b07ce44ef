"""Read params.yaml, checked as a whole against configs/schema.py before any command starts work.

Unknown sections and keys are refused with a close-match suggestion; every value is type- and
range-checked (a number YAML read as text, such as `1e-4`, is converted); the problems are listed in
one message naming each key. `section`/`subsection` return a section merged over its defaults.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from configs.cli import UserError
from configs.schema import SCHEMA, Section, check

DEFAULT_PARAMS = Path("params.yaml")
SECTIONS = tuple(SCHEMA)  # the top-level sections of params.yaml (DESIGN.md fixed names + the toy encoders')


class ParamsError(UserError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


def problems_error(source: str, problems: list[tuple[str, str]]) -> ParamsError:
    """One message for every problem: `invalid params (<source>: k1; k2): k1: why; k2: why`."""
    keys = "; ".join(key for key, _ in problems)
    if len(problems) == 1:
        return ParamsError(f"invalid params ({source}: {keys}): {problems[0][1]}")
    return ParamsError(f"invalid params ({source}: {keys}): " + "; ".join(f"{k}: {why}" for k, why in problems))


def validate_params(data: dict, source: str) -> dict[str, Any]:
    """The params converted and checked against the schema (raises ParamsError listing every problem)."""
    unknown = [str(k) for k in data if k not in SCHEMA]
    problems: list[tuple[str, str]] = []
    for name in unknown:  # a typo such as `trian:` would otherwise be ignored and the run use the defaults
        close = difflib.get_close_matches(name, SECTIONS, 1)
        problems.append((name, f"unknown section {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                         + f"; known sections: {', '.join(sorted(SECTIONS))}"))
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name in unknown:
            continue
        spec = SCHEMA[name]
        if name == "train":  # null = "the preset's value" (train/settings.py)
            out[name], found = check(spec, value, name, allow_null=True)
        elif name == "variants":
            out[name], found = {}, []
            if value is not None and not isinstance(value, dict):
                found = [(name, f"need a mapping of variant name -> train keys, got {value!r}")]
            for variant, keys in (value or {}).items() if isinstance(value, dict) else ():
                out[name][variant], inner = check(SCHEMA["train"], keys, f"variants.{variant}")
                found += inner
        elif isinstance(spec, Section):
            out[name], found = check(spec, value, name)
        else:
            try:
                out[name], found = spec(value, name), []
            except ValueError as e:
                out[name], found = value, [(name, str(e))]
        problems += found
    named = out.get("variants") if isinstance(out.get("variants"), dict) else {}
    problems += [(f"variants.{v}", f"a variant name may not end in {EULER_SUFFIX!r} (the report's rows of the "
                  "Euler-sampled students are named so)") for v in named if v.endswith(EULER_SUFFIX)]
    euler = out.get("euler_variants")
    if isinstance(euler, list) and euler:
        missing = [v for v in euler if v not in named]
        if missing:  # dvc.yaml's *_euler stages would wait for a student no stage trains
            problems.append(("euler_variants", f"{missing} are not distilled variants (`variants`: "
                             f"{', '.join(named) or 'none'}); list variants from there or []"))
    if problems:
        raise problems_error(source, problems)
    return out


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """The whole params file, checked and converted (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found ({path}): run from the repository root or pass --params")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"params file is not valid YAML ({path}): {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"params file is not a mapping of sections ({path}): write `section:` blocks as in "
                          f"the shipped params.yaml")
    return validate_params(data, str(path))


def section(name: str, path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """One top-level section of the params file merged over its defaults."""
    return subsection(load_params(path), name)


def subsection(params: dict, path: str, editions: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A (nested, `benchmarks.geneval`) section of loaded params merged over its schema defaults."""
    spec: Any = SCHEMA
    node: Any = params
    for part in path.split("."):
        spec = spec[part] if isinstance(spec, dict) else spec.defaults[part]
        node = (node or {}).get(part) if isinstance(node, dict) else None
    cfg = spec.plain_defaults()
    for key, value in (node or {}).items():
        cfg[key] = {**cfg[key], **(value or {})} if isinstance(cfg.get(key), dict) and key in spec.defaults \
            and isinstance(spec.defaults[key], Section) else value
    if editions is not None and cfg.get("edition") not in editions:
        raise ParamsError(f"invalid params ({path}.edition): need one of {', '.join(editions)}, got {cfg.get('edition')!r}")
    return cfg


EULER_SUFFIX = "_euler"  # report rows of the students sampled with Euler (euler_runs)


def run_name(variant: str, seed: int) -> str:
    """One distillation of the pipeline: variant `variant` trained with seed `seed`. The name is
    dvc.yaml's matrix key (`distill@full-0`) and the folder under runs/distill/ and results/*/."""
    return f"{variant}-{int(seed)}"


def pipeline_runs(params: dict) -> list[tuple[str, int, str]]:
    """(variant, seed, run name) of every distillation the pipeline runs: params `variants` x `seeds`
    (`seeds` absent: [train.seed]), variant-major as dvc.yaml's matrix expands them."""
    seeds = params.get("seeds") or [int((params.get("train") or {}).get("seed") or 0)]
    return [(v, int(s), run_name(v, s)) for v in (params.get("variants") or {}) for s in seeds]


def euler_runs(params: dict) -> list[tuple[str, int, str]]:
    """(row variant, seed, folder) of the students also scored with the Euler sampler (the paper's
    "Ours (Euler)"): params `euler_variants` that are pipeline variants x seeds, rows `<variant>_euler`,
    folders `<run>-euler` under results/samples, metrics, geneval and compbench (dvc.yaml's *_euler
    stages)."""
    chosen = set(params.get("euler_variants") or [])
    return [(f"{v}{EULER_SUFFIX}", s, f"{run}-euler") for v, s, run in pipeline_runs(params) if v in chosen]


__all__ = ["EULER_SUFFIX", "run_name", "pipeline_runs", "euler_runs", "ParamsError", "SECTIONS", "load_params", "validate_params", "section", "subsection", "problems_error"]
