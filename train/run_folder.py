"""What a new start of the loop does with an existing run folder: nothing in it is ever deleted.

`plan_start(out, settings, mode)` reads the folder (the same on every rank, no side effects) and
decides one of:

- resume: from the newest intact checkpoint at or before `train.steps`, with older ones as
  fall-backs (a checkpoint whose state.json cannot be read is skipped with a warning; one whose
  weights fail to load falls back to the previous one, in `train.senseflow.train`). Changes of keys
  in RESUMABLE_ACROSS are silent; changes in ADJUSTABLE_ON_RESUME (learning rates, clipping,
  precision: what the NaN guard's advice changes) are allowed, printed and recorded in summary.json.
- start: nothing to resume (an empty or new folder).
- supersede: move everything in the folder to `<out>.superseded/<UTC time>/` and start over there.
  Chosen for `--fresh`, for a run folder with nothing resumable at or before `train.steps`, and,
  with `--on-change supersede` (the DVC stage: a rerun after a params change needs no manual step),
  for a checkpoint written under other settings or by another number of processes. Only a folder
  holding nothing but run entries (RUN_ENTRIES) is ever moved.

Otherwise a checkpoint of other settings (or another world size) makes the start fail before any
model is loaded, naming the changed keys and the two ways on (`--fresh`, or another `--out`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from configs.cli import UserError
from train.checkpoint import list_checkpoints

# settings that do not change the training trajectory: a checkpoint written under other values of
# these is still a valid point to continue from (e.g. a longer run, other logging cadence, memory options)
RESUMABLE_ACROSS = {"steps", "log_every", "checkpoint_every", "sample_every", "sample_prompts", "keep_checkpoints",
                    "threads", "num_workers", "gradient_checkpointing", "shard_teacher", "cpu_offload", "launch",
                    "trackers", "alarm_after", "alarm_diversity_min", "alarm_contrast_min", "alarm_contrast_max",
                    "alarm_fake_loss_cv_max", "alarm_logit_gap_max", "eval_every", "eval_prompts", "eval_prompt_file",
                    "eval_seed", "eval_batch_size", "eval_sampler", "eval_teacher_steps", "eval_teacher_guidance",
                    "eval_clip", "eval_inception"}
# settings a user may change when continuing a run (the NaN guard's advice; moved weight folders):
# the run continues from the checkpoint under the new values, which summary.json records
ADJUSTABLE_ON_RESUME = {"lr_generator", "lr_fake", "lr_discriminator", "grad_clip", "warmup_steps", "warmup_start",
                        "precision"}
# what a run folder holds; only a folder with nothing else in it is ever moved aside automatically
RUN_ENTRIES = {"checkpoints", "dvclive", "tensorboard", "wandb", "samples", "student", "summary.json", "alarms.jsonl",
               "along_training", "along_training.jsonl",
               ".student.tmp", ".student.old"}
MODES = ("auto", "require", "fresh", "supersede")  # auto: refuse on other settings; supersede: move aside


class SettingsChangedError(UserError, RuntimeError):
    """The run folder holds a checkpoint of other settings and the start may not move it aside."""


@dataclass
class StartPlan:
    action: str                                            # "resume" | "start" | "supersede"
    checkpoints: list[Path] = field(default_factory=list)  # resume candidates, newest first
    adjusted: dict[str, tuple] = field(default_factory=dict)  # key -> (checkpoint value, new value)
    warnings: list[str] = field(default_factory=list)
    reason: str = ""


def _saved_state(path: Path) -> dict | None:
    """state.json of a checkpoint with its settings completed by today's DEFAULTS (a checkpoint
    written before a key existed had that key's default), or None when unreadable."""
    from train.settings import DEFAULTS

    try:
        state = json.loads((Path(path) / "state.json").read_text())
        saved = state.get("settings")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(saved, dict):
        return None
    return {**state, "settings": {**_normalised(DEFAULTS), **saved}}


def _normalised(settings: dict) -> dict:
    return json.loads(json.dumps(settings, default=str))  # the same normalisation as when saved


def settings_diff(saved: dict, settings: dict) -> dict[str, tuple]:
    """key -> (saved value, new value) for every key that differs (RESUMABLE_ACROSS excluded)."""
    current = _normalised(settings)
    keys = {k for k in set(saved) | set(current) if not k.startswith("_")} - RESUMABLE_ACROSS
    return {k: (saved.get(k), current.get(k)) for k in sorted(keys) if saved.get(k) != current.get(k)}


def has_content(out: Path) -> bool:
    return Path(out).is_dir() and any(Path(out).iterdir())


def teacher_weights(settings: dict) -> str | None:
    """A fingerprint of the teacher's weight files (first 16 hex of the sha256 of their sha256s; file hashes
    cached on disk by protocols/provenance.py, so only a changed file is read again), or None without a
    teacher folder. A retrained teacher at the same path makes a checkpoint of the old one "other settings"."""
    from protocols.provenance import weights_fingerprint

    return weights_fingerprint(settings.get("teacher"))


def plan_start(out: Path, settings: dict, mode: str = "auto", world_size: int = 1, teacher: str | None = None) -> StartPlan:
    """Decide what a start does with `out` (module docstring). Raises SettingsChangedError (auto /
    require with a checkpoint of other settings, another world size or another teacher's weights
    (`teacher`: teacher_weights(); checkpoints that predate the record are not compared), or a folder
    with more than a run in it) or FileNotFoundError (require, nothing to resume)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    out = Path(out)
    if mode == "fresh":
        return StartPlan(_supersede_or_start(out), reason="--fresh")
    warnings, readable = [], []
    for step, path in reversed(list_checkpoints(out)):
        if step > settings["steps"]:
            continue  # belongs to a longer run of these settings: kept, not used
        state = _saved_state(path)
        if state is None:
            warnings.append(f"checkpoint {path} has an unreadable state.json; skipping it")
        else:
            readable.append((path, state))
    if not readable:
        if mode == "require":
            raise FileNotFoundError(f"--resume: no intact checkpoint at or before step {settings['steps']} in "
                                    f"{str(out / 'checkpoints')!r}")
        return StartPlan(_supersede_or_start(out), warnings=warnings, reason="nothing to resume at or before "
                                                                              f"step {settings['steps']}")
    newest, state = readable[0]

    def blocking_of(state: dict) -> dict:
        diff = {k: v for k, v in settings_diff(state["settings"], settings).items() if k not in ADJUSTABLE_ON_RESUME}
        if state.get("world_size", world_size) != world_size:  # per-rank RNG streams need the same world
            diff["world_size"] = (state.get("world_size"), world_size)
        saved_teacher = state.get("teacher_weights")
        if None not in (teacher, saved_teacher) and saved_teacher != teacher:  # a retrained teacher, same path
            diff["teacher weights"] = (saved_teacher, teacher)
        return diff

    blocking = blocking_of(state)
    if blocking:
        if mode == "supersede":
            return StartPlan(_supersede_or_start(out), warnings=warnings, reason="other settings: " + _describe(blocking))
        raise SettingsChangedError(
            f"{out} holds a run with other settings ({_describe(blocking)}; checkpoint {newest.name}). Nothing was "
            f"changed. To keep it and start this one elsewhere, pass another --out; to move it aside to "
            f"{out.name}.superseded/ and start over in {out}, pass --fresh.")
    same = [p for p, st in readable if not blocking_of(st)]
    adjusted = {k: v for k, v in settings_diff(state["settings"], settings).items() if k in ADJUSTABLE_ON_RESUME}
    return StartPlan("resume", checkpoints=same, adjusted=adjusted, warnings=warnings)


def _supersede_or_start(out: Path) -> str:
    """"supersede" for a folder holding a run (and nothing else), "start" for an empty or new one;
    SettingsChangedError for a folder with other things in it (e.g. --out pointing at a parent)."""
    if not has_content(out):
        return "start"
    others = sorted(p.name for p in out.iterdir() if p.name not in RUN_ENTRIES)
    if others or not out.resolve().name:
        raise SettingsChangedError(
            f"{out} is not empty and does not look like a run folder (it holds {others[:5]}); nothing was moved. "
            f"Pass an empty or new --out, or the folder of a run (runs/distill/<variant>).")
    return "supersede"


def _describe(diff: dict[str, tuple]) -> str:
    return ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in diff.items())


__all__ = ["RESUMABLE_ACROSS", "ADJUSTABLE_ON_RESUME", "RUN_ENTRIES", "MODES", "SettingsChangedError", "StartPlan",
           "settings_diff", "plan_start", "teacher_weights"]
