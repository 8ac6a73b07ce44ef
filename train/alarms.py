"""Collapse and oscillation alarms of the SenseFlow loop: the failures users of distillation
frameworks find only after days (solid-colour or identical samples, an oscillating fake score, a
discriminator that has won), raised while the run is still cheap to stop.

Signals, one value per logging window (`train.log_every` iterations, the mean of per-iteration
values, each computed from tensors the iteration already holds, no extra network pass):

- `sample_diversity`: the generator's x0 predictions' standard deviation across the batch (per
  element, averaged) over the same statistic of the real batch. About 1 when the samples vary as the
  data does; towards 0 when every sample is the same (mode collapse, samples that ignore the noise).
- `sample_contrast`: the mean spatial standard deviation of each x0 prediction over the real images'.
  Towards 0 for solid-colour or washed-out samples; far above 1 when the samples blow up (a too high
  generator learning rate: 3-80 on ToyWorld at lr 3e-2, 0.9-1.1 at the default 1e-4).
- `fake_loss_cv`: the fake-score loss's rolling standard deviation over `train.loss_window`
  iterations divided by its rolling mean: the oscillation the paper's Fig. 3 shows without IDA.
- `d_logit_gap`: the VFM discriminator's mean real logit minus its mean fake logit (hinge targets
  +1 / -1, so 2 is a discriminator that separates every pair; far above it the generator's
  adversarial gradient is saturated). Only with `train.vfm`.

Each signal has threshold params (`train.alarm_*`; null switches one off). On the default ToyWorld
run the signals stay at diversity >= 0.8, contrast 0.9-1.1, fake_loss_cv <= 0.31, logit gap <= 1.44
after 100 iterations; the defaults leave a wide margin on both sides. From `train.alarm_after`
iterations on, a window beyond its threshold prints a warning, logs `alarm/<signal>` = 1 to dvclive
and is recorded in summary.json `alarms` as {"step", "signal", "value", "threshold", "key"}.
"""
from __future__ import annotations

import math

import torch

# (signal, params key of its threshold, direction: the alarm fires below "min" / above "max", what it means)
THRESHOLDS = [
    ("sample_diversity", "alarm_diversity_min", "min", "the samples are collapsing towards one image"),
    ("sample_contrast", "alarm_contrast_min", "min", "the samples are losing contrast (solid-colour images)"),
    ("sample_contrast", "alarm_contrast_max", "max", "the samples are blowing up (far noisier than the data)"),
    ("fake_loss_cv", "alarm_fake_loss_cv_max", "max", "the fake-score loss oscillates"),
    ("d_logit_gap", "alarm_logit_gap_max", "max", "the discriminator separates real and fake completely"),
]


def _ratio(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = float(a), float(b)
    return a / b if b > 0 else float("nan")


@torch.no_grad()
def sample_signals(x0_generated: torch.Tensor, x0_real: torch.Tensor) -> dict[str, float]:
    """sample_diversity and sample_contrast of one batch (module docstring); (B, C, ...) tensors."""
    gen, real = x0_generated.detach().float(), x0_real.detach().float()
    signals = {"sample_contrast": _ratio(gen.flatten(2).std(-1).mean(), real.flatten(2).std(-1).mean())}
    if len(gen) > 1:
        signals["sample_diversity"] = _ratio(gen.std(0).mean(), real.std(0).mean())
    return signals


@torch.no_grad()
def logit_gap(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> float:
    return float(real_logits.detach().float().mean() - fake_logits.detach().float().mean())


def fake_loss_cv(std: float, mean: float) -> float:
    return std / abs(mean) if math.isfinite(std) and mean else float("nan")


def check_alarms(values: dict[str, float], settings: dict, step: int) -> list[dict]:
    """The alarms a logging window's values raise (none before `alarm_after` iterations)."""
    if step < settings["alarm_after"]:
        return []
    fired = []
    for signal, key, direction, _ in THRESHOLDS:
        threshold, value = settings[key], values.get(signal)
        if threshold is None or value is None or not math.isfinite(value):
            continue
        if (value < threshold) if direction == "min" else (value > threshold):
            fired.append({"step": int(step), "signal": signal, "value": float(value), "threshold": float(threshold),
                          "key": key})
    return fired


def describe(alarm: dict) -> str:
    _, key, direction, meaning = next(t for t in THRESHOLDS if t[1] == alarm["key"])
    return (f"alarm at iteration {alarm['step']}: {alarm['signal']} = {alarm['value']:.4g} "
            f"{'<' if direction == 'min' else '>'} {alarm['threshold']:.4g} (train.{key}): {meaning}; look at the "
            f"sample grids and curves before spending more compute")


__all__ = ["THRESHOLDS", "sample_signals", "logit_gap", "fake_loss_cv", "check_alarms", "describe"]
