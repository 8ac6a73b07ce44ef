"""Training logs of the SenseFlow loop: accelerate's trackers (train.trackers: dvclive by default,
TensorBoard, Weights & Biases offline), window means of every logged value, the fake-score loss
oscillation, sample grids.

Metrics (dvclive `<out>/dvclive/`, and the other trackers when chosen; one point every `train.log_every` iterations, each the mean over
the iterations since the previous point; generator terms only exist on generator turns):
loss_dmd, loss_adv, loss_isg, loss_generator, loss_fake_score, loss_d_real, loss_d_fake,
grad_norm_{generator,fake_score,discriminator}, lr_{generator,fake_score,discriminator},
s_per_iter, backsim_fraction, and fake_score_loss_std: the standard deviation of the fake-score
loss over the last `train.loss_window` iterations (the oscillation the paper's Fig. 3 discusses);
the alarm signals sample_diversity, sample_contrast, fake_loss_cv, d_logit_gap and, when one fires,
alarm/<signal> = 1 (train/alarms.py).
"""
from __future__ import annotations

import math
from collections import defaultdict, deque
from pathlib import Path

import numpy as np

from protocols.images import save_grid, to_uint8


class RollingStd:
    """Standard deviation (population) of the last `window` values."""

    def __init__(self, window: int):
        self.values: deque[float] = deque(maxlen=int(window))

    def add(self, value: float) -> None:
        self.values.append(float(value))

    @property
    def std(self) -> float:
        if len(self.values) < 2:
            return float("nan")
        return float(np.std(np.asarray(self.values, dtype=np.float64)))

    @property
    def mean(self) -> float:
        return float(np.mean(np.asarray(self.values, dtype=np.float64))) if self.values else float("nan")

    def state(self) -> list[float]:
        return list(self.values)

    def load(self, values: list[float]) -> None:
        self.values.clear()
        self.values.extend(float(v) for v in values)


class WindowMeans:
    """Per-key means of the values added since the last `pop`."""

    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] += float(v)
            self.counts[k] += 1

    def pop(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums.clear()
        self.counts.clear()
        return out


def flat_config(settings: dict) -> dict:
    """Settings as dvclive params (lists and None as strings)."""
    return {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in settings.items()}


TRACKERS = ("dvclive", "tensorboard", "wandb")  # train.trackers: accelerate's trackers of those names


def tracker_project(out: Path):
    """accelerate's project configuration: TensorBoard event files under `<out>/tensorboard/`."""
    from accelerate.utils import ProjectConfiguration

    return ProjectConfiguration(project_dir=str(out), logging_dir=str(Path(out) / "tensorboard"))


def start_tracking(accelerator, out: Path, settings: dict, resume: bool) -> None:
    """The trackers of `train.trackers`, through accelerate (every logged value goes to each):
    dvclive writing `<out>/dvclive` (no DVC experiment, no dvc.yaml edits: the pipeline declares the
    plots), TensorBoard `<out>/tensorboard/senseflow/`, Weights & Biases offline `<out>/wandb/`
    (nothing is sent; `wandb sync <out>/wandb/offline-run-*` uploads it later)."""
    init = {"dvclive": {"dir": str(Path(out) / "dvclive"), "resume": resume, "save_dvc_exp": False, "dvcyaml": None},
            "wandb": {"mode": "offline", "dir": str(out), "name": Path(out).name}}
    accelerator.init_trackers("senseflow", config=flat_config(settings),
                              init_kwargs={k: v for k, v in init.items() if k in settings["trackers"]})


def log_metrics(accelerator, values: dict[str, float], step: int) -> None:
    accelerator.log({k: v for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}, step=step)


def save_sample_grid(accelerator, images, path: Path, step: int) -> Path | None:
    """Write a grid of (B, 3, H, W) images in [-1, 1] (main process) and log it to dvclive."""
    if not accelerator.is_main_process:
        return None
    arr = to_uint8(images)
    cols = int(math.ceil(math.sqrt(len(arr))))
    save_grid(arr, path, cols=cols, scale=max(1, 128 // arr.shape[1]))
    try:
        live = accelerator.get_tracker("dvclive", unwrap=True)
    except (ValueError, KeyError, AttributeError):
        live = None
    if live is not None and hasattr(live, "log_image"):
        live.log_image(f"samples/step_{step:07d}.png", str(path))
    return Path(path)


__all__ = ["TRACKERS", "tracker_project", "RollingStd", "WindowMeans", "flat_config", "start_tracking", "log_metrics", "save_sample_grid"]
