"""The `train` params of the SenseFlow loop: defaults, per-family presets, overrides.

Where a value comes from, lowest to highest precedence:

1. `DEFAULTS` (configs/schema.py TRAIN: every key with its rule; the paper's choices where paper and released code differ);
2. the preset file `configs/families/<train.preset>.yaml` (the released code's per-family
   values, shared/reference/senseflow_code.md section 7);
3. explicit values in params.yaml's `train:` section (a `null` there means "not set here",
   so the preset's value applies);
4. the entry `variants.<name>` of params.yaml when the loop runs with `--variant name`;
5. command-line `-S key=value` (`-S train.ttur=3` or `-S ttur=3`; values parsed as YAML).

The resolved settings carry `_provenance`: every value that differs from the preset (DEFAULTS <
preset), with the preset's value and where it was set; the loop prints it at start and writes it
to summary.json (`differs_from_preset`).

Unknown keys (with a close-match suggestion) and values of the wrong type or range are rejected at
every level, so a typo fails before any model is loaded.

Paper vs released code (defaults = paper, presets = released code):
- ISG distance: paper L2 (`isg_loss: l2`); released pseudo-Huber with c = 1e-3 (`pseudo_huber`).
- Adversarial time weight: paper alpha_t^2 (`alpha_sq`); released FLUX (1 - sigma)^2
  (`one_minus_sigma_sq`, the same for flow), SDXL sqrt(abar) (`sqrt_alphabar`). The released SD3.5
  reversed-table lookup is not offered; SD3.5 presets use `alpha_sq`.
- Teacher guidance: a number is a fixed scale, a pair [lo, hi] is drawn uniformly per call
  (released: ranges for SD3.5 and FLUX, fixed 8 for SDXL).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from configs.params import ParamsError, load_params, problems_error
from configs.schema import SCHEMA, check

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs" / "families"
PROVENANCE = "_provenance"  # settings key: {key: {"value": v, "preset": preset's value, "by": where it was set}}

DEFAULTS: dict[str, Any] = SCHEMA["train"].plain_defaults()  # every key, its default and rule: configs/schema.py


def _checked(values: dict, source: str) -> dict:
    """values with every key known and every value of the right type and range (converted); `source`
    names where they were written (a file, -S)."""
    out, problems = check(SCHEMA["train"], values, "train")
    if problems:
        raise problems_error(source, problems)
    return out


def load_preset(name: str | None, preset_dir: Path = PRESET_DIR) -> dict[str, Any]:
    """The values of configs/families/<name>.yaml ({} for None)."""
    if name is None:
        return {}
    path = Path(preset_dir) / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(preset_dir).glob("*.yaml"))
        raise ParamsError(f"train.preset {name!r}: no file {str(path)!r}; known presets: {known}")
    return _checked(yaml.safe_load(path.read_text()) or {}, str(path))


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """['train.ttur=3', 'ida=false'] -> {'ttur': 3, 'ida': False} (values as YAML)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ParamsError(f"override {pair!r} is not key=value")
        key, value = pair.split("=", 1)
        key = key.strip()
        if key.startswith("train."):
            key = key[len("train."):]
        if "." in key:
            raise ParamsError(f"override {pair!r}: only train.* keys can be set here")
        out[key] = yaml.safe_load(value)
    return _checked(out, "-S")


def resolve(explicit: dict[str, Any], variant: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
            preset_dir: Path = PRESET_DIR) -> dict[str, Any]:
    """Merge DEFAULTS < preset < explicit (non-null) < variant < overrides, then validate."""
    given = {k: v for k, v in _checked({k: v for k, v in explicit.items() if v is not None}, "params.yaml").items()}
    late = _checked({**(variant or {}), **(overrides or {})}, "variant / -S")
    preset_name = late.get("preset", given.get("preset", DEFAULTS["preset"]))
    preset = load_preset(preset_name, preset_dir)
    settings = {**DEFAULTS, **preset, **given, **late, "preset": preset_name}
    if "family" in preset and settings["family"] != preset["family"]:
        raise ParamsError(f"train.family {settings['family']!r} does not match preset {preset_name!r} "
                          f"(family {preset['family']!r}); change one of them")
    validate(settings)
    baseline = {**DEFAULTS, **preset}
    sources = [("params.yaml train", given), ("variant", variant or {}), ("-S", overrides or {})]
    settings[PROVENANCE] = {
        key: {"value": settings[key], "preset": baseline.get(key), "by": [name for name, values in sources if key in values][-1]}
        for key in sorted(settings) if key not in ("preset", PROVENANCE) and settings[key] != baseline.get(key)}
    return settings


def load_settings(params_path: str | Path = "params.yaml", variant: str | None = None,
                  overrides: list[str] | None = None, preset_dir: Path = PRESET_DIR) -> dict[str, Any]:
    """The resolved `train` settings from a params file (see the module docstring)."""
    data = load_params(params_path)
    explicit = data.get("train") or {}
    chosen = None
    if variant is not None:
        variants = data.get("variants") or {}
        if variant not in variants:
            raise ParamsError(f"variant {variant!r} not in params 'variants' (known: {sorted(variants)})")
        chosen = variants[variant] or {}
    return resolve(explicit, chosen, parse_overrides(overrides or []), preset_dir)


def guidance_range(value, key: str) -> tuple[float, float]:
    """A guidance param as (lo, hi): a number g gives (g, g)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), float(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        lo, hi = float(value[0]), float(value[1])
        if lo <= hi:
            return lo, hi
    raise ParamsError(f"train.{key} must be a number or [lo, hi] with lo <= hi, got {value!r}")


def validate(s: dict[str, Any]) -> None:
    """Every value's type and range (configs/schema.py TRAIN), then the rules between keys; every
    problem in one message, raised before any work."""
    checked, found = check(SCHEMA["train"], {k: v for k, v in s.items() if k != PROVENANCE}, "train")
    problems = list(found)

    def need(ok: bool, key: str, msg: str):
        if not ok:
            problems.append((f"train.{key}", msg))

    if not found:
        s.update(checked)  # numbers YAML read as text, converted
        need(s["dmd_t_min"] <= s["dmd_t_max"], "dmd_t_min", "need train.dmd_t_min <= train.dmd_t_max")
        for key in ("shard_teacher", "cpu_offload"):
            need(not s[key] or s["fsdp"] is True, key, "needs train.fsdp: true")
        need(s["optimizer"] != "adamw8bit" or s["fsdp"] is True, "optimizer",
             "adamw8bit needs train.fsdp: true (its states are checkpointed with torch.distributed.checkpoint; "
             "one process works too)")
        for key in ("teacher", "dataset"):
            need(isinstance(s[key], str) and bool(s[key]), key, "not set: point it at a local path")
        if s["vfm"]:
            for key in ("vfm_backbone", "clip"):
                need(isinstance(s[key], str) and bool(s[key]), key,
                     "not set but train.vfm is on: point it at a local folder (or set vfm: false)")
    if problems:
        raise problems_error("train settings", problems)


__all__ = ["DEFAULTS", "PRESET_DIR", "load_settings", "load_preset", "parse_overrides", "resolve", "validate",
           "guidance_range"]
