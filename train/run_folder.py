"""What a new start of the loop does with an existing run folder: nothing in it is ever deleted.

`plan_start(out, settings, mode)` reads the folder (the same on every rank, no side effects) and
decides one of:

- resume: from the newest intact checkpoint at or before `train.steps`, with older ones as
  fall-backs (a checkpoint whose state.json cannot be read is skipped with a warning; one whose
  weights fail to load falls back to the previous one, in `train.senseflow.train`). Changes of keys
  in RESUMABLE_ACROSS are silent; changes in ADJUSTABLE_ON_RESUME (learning rates, clipping,
  precision, moved weight paths: what the NaN guard's advice changes) are allowed, printed and
  recorded in summary.json.
- start: nothing to resume (an empty or new folder).
- supersede: move everything in the folder to `<out>.superseded/<UTC time>/` and start over there.
  Chosen for `--fresh`, for a folder with content but nothing resumable, and, with
  `--on-change supersede` (the DVC stage: a rerun after a params change needs no manual step),
  for a checkpoint written under other settings.

Otherwise a checkpoint of other settings makes the start fail before any model is loaded, naming
the changed keys and the two ways on (`--fresh`, or another `--out`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from train.checkpoint import list_checkpoints

# settings that do not change the training trajectory: a checkpoint written under other values of
# these is still a valid point to continue from (e.g. a longer run, other logging cadence, memory options)
RESUMABLE_ACROSS = {"steps", "log_every", "checkpoint_every", "sample_every", "sample_prompts", "keep_checkpoints",
                    "threads", "num_workers", "gradient_checkpointing", "shard_teacher", "cpu_offload", "launch"}
# settings a user may change when continuing a run (the NaN guard's advice; moved weight folders):
# the run continues from the checkpoint under the new values, which summary.json records
ADJUSTABLE_ON_RESUME = {"lr_generator", "lr_fake", "lr_discriminator", "grad_clip", "warmup_steps", "warmup_start",
                        "precision", "teacher", "dataset", "clip", "vfm_backbone"}
MODES = ("auto", "require", "fresh", "supersede")  # auto: refuse on other settings; supersede: move aside


class SettingsChangedError(RuntimeError):
    """The run folder holds a checkpoint of other settings and the start may not move it aside."""


@dataclass
class StartPlan:
    action: str                                            # "resume" | "start" | "supersede"
    checkpoints: list[Path] = field(default_factory=list)  # resume candidates, newest first
    adjusted: dict[str, tuple] = field(default_factory=dict)  # key -> (checkpoint value, new value)
    warnings: list[str] = field(default_factory=list)
    reason: str = ""


def _saved_settings(path: Path) -> dict | None:
    try:
        saved = json.loads((Path(path) / "state.json").read_text()).get("settings")
    except (OSError, ValueError, AttributeError):
        return None
    return saved if isinstance(saved, dict) else None


def _normalised(settings: dict) -> dict:
    return json.loads(json.dumps(settings, default=str))  # the same normalisation as when saved


def settings_diff(saved: dict, settings: dict) -> dict[str, tuple]:
    """key -> (saved value, new value) for every key that differs (RESUMABLE_ACROSS excluded)."""
    current = _normalised(settings)
    keys = {k for k in set(saved) | set(current) if not k.startswith("_")} - RESUMABLE_ACROSS
    return {k: (saved.get(k), current.get(k)) for k in sorted(keys) if saved.get(k) != current.get(k)}


def has_content(out: Path) -> bool:
    return Path(out).is_dir() and any(Path(out).iterdir())


def plan_start(out: Path, settings: dict, mode: str = "auto") -> StartPlan:
    """Decide what a start does with `out` (module docstring). Raises SettingsChangedError (auto /
    require with a checkpoint of other settings) or FileNotFoundError (require, nothing to resume)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    out = Path(out)
    if mode == "fresh":
        return StartPlan("supersede" if has_content(out) else "start", reason="--fresh")
    warnings, readable = [], []
    for step, path in reversed(list_checkpoints(out)):
        if step > settings["steps"]:
            continue  # belongs to a longer run of these settings: kept, not used
        saved = _saved_settings(path)
        if saved is None:
            warnings.append(f"checkpoint {path} has an unreadable state.json; skipping it")
        else:
            readable.append((path, saved))
    if not readable:
        if mode == "require":
            raise FileNotFoundError(f"--resume: no intact checkpoint at or before step {settings['steps']} in "
                                    f"{str(out / 'checkpoints')!r}")
        action = "supersede" if has_content(out) else "start"
        return StartPlan(action, warnings=warnings, reason="nothing to resume")
    newest, saved = readable[0]
    diff = settings_diff(saved, settings)
    blocking = {k: v for k, v in diff.items() if k not in ADJUSTABLE_ON_RESUME}
    if blocking:
        if mode == "supersede":
            return StartPlan("supersede", warnings=warnings, reason="other settings: " + _describe(blocking))
        raise SettingsChangedError(
            f"{out} holds a run with other settings ({_describe(blocking)}; checkpoint {newest.name}). Nothing was "
            f"changed. To keep it and start this one elsewhere, pass another --out; to move it aside to "
            f"{out.name}.superseded/ and start over in {out}, pass --fresh.")
    same = [p for p, s in readable if not {k for k in settings_diff(s, settings) if k not in ADJUSTABLE_ON_RESUME}]
    return StartPlan("resume", checkpoints=same, adjusted=diff, warnings=warnings)


def _describe(diff: dict[str, tuple]) -> str:
    return ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in diff.items())


def supersede(out: Path) -> Path:
    """Move everything in `out` to `<out>.superseded/<UTC time>/` (never deletes); returns that folder."""
    out = Path(out)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = out.parent / f"{out.name}.superseded" / stamp
    n = 1
    while target.exists():
        n += 1
        target = out.parent / f"{out.name}.superseded" / f"{stamp}-{n}"
    target.mkdir(parents=True)
    for item in sorted(out.iterdir()):
        item.rename(target / item.name)
    return target


__all__ = ["RESUMABLE_ACROSS", "ADJUSTABLE_ON_RESUME", "MODES", "SettingsChangedError", "StartPlan", "settings_diff",
           "plan_start", "supersede"]
