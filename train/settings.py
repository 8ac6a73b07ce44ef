"""The `train` params of the SenseFlow loop: defaults, per-family presets, overrides.

Where a value comes from, lowest to highest precedence:

1. `DEFAULTS` below (the paper's choices where paper and released code differ);
2. the preset file `configs/families/<train.preset>.yaml` (the released code's per-family
   values, shared/reference/senseflow_code.md section 7);
3. explicit values in params.yaml's `train:` section (a `null` there means "not set here",
   so the preset's value applies);
4. the entry `variants.<name>` of params.yaml when the loop runs with `--variant name`;
5. command-line `-S key=value` (`-S train.ttur=3` or `-S ttur=3`; values parsed as YAML).

The resolved settings carry `_provenance`: every value that differs from the preset (DEFAULTS <
preset), with the preset's value and where it was set; the loop prints it at start and writes it
to summary.json (`differs_from_preset`).

Unknown keys are rejected at every level, so a typo fails before any model is loaded.

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

from configs.params import ParamsError, load_params

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs" / "families"
PROVENANCE = "_provenance"  # settings key: {key: {"value": v, "preset": preset's value, "by": where it was set}}
PRECISIONS = ("fp32", "bf16")
OPTIMIZERS = ("adamw", "adamw8bit")
DMD_T_SAMPLINGS = ("uniform", "training")

DEFAULTS: dict[str, Any] = {
    # what to distill
    "family": "toy",                 # backbones.FAMILIES key
    "preset": "toy",                 # configs/families/<preset>.yaml; null: DEFAULTS only
    "teacher": "models/toy/teacher",  # local diffusers folder of the teacher
    "dataset": "data/toyworld/train/dataset.json",  # official SenseFlow JSON (image paths + prompts)
    "resolution": 32,                # image side in pixels (dataset images must have it)
    "num_steps": 4,                  # student steps = number of anchors
    # run length and batch
    "seed": 0,
    "steps": 400,                    # training iterations (each = one fake-score + one discriminator step)
    "batch_size": 8,                 # per process
    "threads": 0,                    # torch CPU threads per process (0: torch default)
    "num_workers": 0,                # DataLoader workers
    # Algorithm 1
    "ttur": 5,                       # fake-score/discriminator updates per generator update
    "backsim_prob": 0.5,             # P(x_{t_i} by backward simulation) vs forward diffusion of the real image
    "real_guidance": 2.0,            # teacher guidance for DMD: number, or [lo, hi] drawn per call
    "dmd_t_sampling": "uniform",     # "uniform": U_int[min, max] on the index axis; "training": family density
    "dmd_t_min": 0.02,
    "dmd_t_max": 0.98,
    "dmd_t_shift": 1.0,              # static shift of the index -> timestep table (SD3.5 / toy: 3)
    "ida": True,
    "ida_lambda": 0.97,              # fake <- lambda * fake + (1 - lambda) * generator
    "isg": True,
    "isg_weight": 1.0,
    "isg_guidance": 2.0,             # teacher guidance for the tau -> tau_mid step: number or [lo, hi]
    "isg_margin": 20.0,              # index units kept free at both segment ends
    "isg_shift": 1.0,                # index-axis shift for tau_mid (SD3.5 / toy: 3)
    "isg_loss": "l2",                # "l2" (paper) or "pseudo_huber" (released)
    "isg_huber_c": 1.0e-3,
    "vfm": True,
    "adv_weight": 0.1,               # generator adversarial weight (lambda_adv)
    "adv_time_weight": "alpha_sq",   # see train.vfm_discriminator.TIME_WEIGHT_MODES
    "vfm_backbone": "models/toy/dinov2",  # local Dinov2Model folder
    "clip": "models/toy/clip",       # local CLIPModel folder (+ tokenizer) for the text condition
    "vfm_layers": None,              # hidden_states indices; null: released hooks scaled to depth
    "vfm_downsample": 3,
    "vfm_resolution": None,          # resize before DINOv2; null: image size (released)
    "diffaug": "color,translation,cutout",
    # optimisation
    "lr_generator": 1.0e-5,
    "lr_fake": 1.0e-5,
    "lr_discriminator": 1.0e-5,
    "warmup_steps": 0,               # linear warm-up of all lrs over this many iterations ...
    "warmup_start": 1.0,             # ... starting at this fraction of each lr (FLUX released: 0.5)
    "betas": [0.9, 0.999],
    "eps": 1.0e-8,
    "weight_decay": 0.0,
    "grad_clip": 1.0,                # max grad norm for every module; 0 disables
    "ema": 0.0,                      # EMA decay of the generator; 0: off (released: off)
    "precision": "fp32",             # "fp32" or "bf16" (policy: train/senseflow.py docstring)
    "gradient_checkpointing": False,  # activation checkpointing of every transformer/UNet block
    "fsdp": False,                   # FSDP2 (fully_shard) generator, fake score and EMA
    "shard_teacher": False,          # with fsdp: shard the frozen teacher and T5 encoder too
    "cpu_offload": False,            # with fsdp: sharded weights, grads and optimizer states in CPU memory
    "optimizer": "adamw",            # "adamw" (torch) or "adamw8bit" (torchao, with fsdp; released SD3.5-L / FLUX)
    "init_student": None,            # diffusers folder to start the generator from (e.g. an earlier 4-step student)
    "launch": "python",              # the distill stage's launcher: python | torchrun ... | accelerate launch ... (README)
    # bookkeeping
    "checkpoint_every": 200,
    "keep_checkpoints": 2,
    "log_every": 10,
    "loss_window": 50,               # iterations in the rolling std of the fake-score loss
    "sample_every": 200,             # sample grid every N iterations (0: only at the end)
    "sample_prompts": 8,
}


def _check_keys(values: dict, where: str) -> None:
    if not isinstance(values, dict):
        raise ParamsError(f"{where} must be a mapping of train keys")
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise ParamsError(f"unknown train key(s) {unknown} in {where}; known: {sorted(DEFAULTS)}")


def load_preset(name: str | None, preset_dir: Path = PRESET_DIR) -> dict[str, Any]:
    """The values of configs/families/<name>.yaml ({} for None)."""
    if name is None:
        return {}
    path = Path(preset_dir) / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(preset_dir).glob("*.yaml"))
        raise ParamsError(f"train.preset {name!r}: no file {str(path)!r}; known presets: {known}")
    values = yaml.safe_load(path.read_text()) or {}
    _check_keys(values, str(path))
    return values


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
    _check_keys(out, "-S overrides")
    return out


def resolve(explicit: dict[str, Any], variant: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
            preset_dir: Path = PRESET_DIR) -> dict[str, Any]:
    """Merge DEFAULTS < preset < explicit (non-null) < variant < overrides, then validate."""
    _check_keys(explicit, "params section 'train'")
    late = {**(variant or {}), **(overrides or {})}
    _check_keys(late, "variant/overrides")
    given = {k: v for k, v in explicit.items() if v is not None}
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
    """Range and type checks with one message per problem (raised before any work)."""
    problems = []

    def need(ok: bool, msg: str):
        if not ok:
            problems.append(msg)

    for key in ("steps", "batch_size", "ttur", "num_steps", "checkpoint_every", "log_every", "keep_checkpoints",
                "loss_window"):
        need(isinstance(s[key], int) and not isinstance(s[key], bool) and s[key] >= 1, f"train.{key} must be an integer >= 1")
    for key in ("sample_every", "warmup_steps", "threads", "num_workers", "sample_prompts", "seed"):
        need(isinstance(s[key], int) and not isinstance(s[key], bool) and s[key] >= 0, f"train.{key} must be an integer >= 0")
    for key in ("ida", "isg", "vfm", "gradient_checkpointing", "fsdp", "shard_teacher", "cpu_offload"):
        need(isinstance(s[key], bool), f"train.{key} must be true or false")
    need(0.0 <= float(s["backsim_prob"]) <= 1.0, "train.backsim_prob must be in [0, 1]")
    need(0.0 <= float(s["ida_lambda"]) <= 1.0, "train.ida_lambda must be in [0, 1]")
    need(0.0 <= float(s["ema"]) < 1.0, "train.ema must be in [0, 1) (0 = off)")
    need(0.0 <= float(s["dmd_t_min"]) <= float(s["dmd_t_max"]) <= 1.0, "need 0 <= train.dmd_t_min <= train.dmd_t_max <= 1")
    need(s["dmd_t_sampling"] in DMD_T_SAMPLINGS, f"train.dmd_t_sampling must be one of {DMD_T_SAMPLINGS}")
    need(s["precision"] in PRECISIONS, f"train.precision must be one of {PRECISIONS}")
    need(s["optimizer"] in OPTIMIZERS, f"train.optimizer must be one of {OPTIMIZERS}")
    for key in ("shard_teacher", "cpu_offload"):
        need(not s[key] or s["fsdp"] is True, f"train.{key} needs train.fsdp: true")
    need(s["optimizer"] != "adamw8bit" or s["fsdp"] is True,
         "train.optimizer: adamw8bit needs train.fsdp: true (its states are checkpointed with "
         "torch.distributed.checkpoint; one process works too)")
    need(s["init_student"] is None or (isinstance(s["init_student"], str) and bool(s["init_student"])),
         "train.init_student must be a local diffusers folder or null")
    need(s["isg_loss"] in ("l2", "pseudo_huber"), "train.isg_loss must be 'l2' or 'pseudo_huber'")
    need(s["adv_time_weight"] in ("alpha_sq", "one_minus_sigma_sq", "sqrt_alphabar"),
         "train.adv_time_weight must be alpha_sq, one_minus_sigma_sq or sqrt_alphabar")
    need(isinstance(s["betas"], (list, tuple)) and len(s["betas"]) == 2, "train.betas must be [beta1, beta2]")
    need(0.0 < float(s["warmup_start"]) <= 1.0, "train.warmup_start must be in (0, 1]")
    for key in ("lr_generator", "lr_fake", "lr_discriminator", "eps", "weight_decay", "grad_clip", "adv_weight",
                "isg_weight", "isg_margin"):
        need(float(s[key]) >= 0, f"train.{key} must be >= 0")
    for key in ("real_guidance", "isg_guidance"):
        try:
            guidance_range(s[key], key)
        except ParamsError as e:
            problems.append(str(e))
    need(isinstance(s["launch"], str) and bool(s["launch"].strip()), "train.launch must be a command (e.g. python)")
    for key in ("teacher", "dataset"):
        need(isinstance(s[key], str) and bool(s[key]), f"train.{key} is not set: point it at a local path")
    if s["vfm"]:
        for key in ("vfm_backbone", "clip"):
            need(isinstance(s[key], str) and bool(s[key]),
                 f"train.{key} is not set but train.vfm is on: point it at a local folder (or set vfm: false)")
    if problems:
        raise ParamsError("invalid train params:\n  " + "\n  ".join(problems))


__all__ = ["DEFAULTS", "PRESET_DIR", "load_settings", "load_preset", "parse_overrides", "resolve", "validate",
           "guidance_range"]
