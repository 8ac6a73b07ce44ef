"""Uncertainty of the evaluation numbers: bootstrap intervals within a run, paired comparisons
between variants, and intervals across training seeds.

Within a run, prompts are the resampling unit (each FID-family image is one prompt's image, aligned
with the teacher's image of the same prompt and seed), so every bootstrap replicate draws one set
of prompt indices with replacement and applies it to every set that is compared:

- a mean over prompts (CLIP score, HPSv2, ...): percentile interval of the replicate means;
- a Fréchet distance: the replicate resamples the student's and the teacher's features with the
  same indices. Fréchet distances of N-image sets are biased upwards (of order trace(cov) / N), and
  resampling (fewer distinct images) adds the same bias again, so the replicates sit above the
  estimate by about the estimate's own bias. The interval describes the sampling spread of the
  N-image estimate: the replicates' 2.5-97.5 % range shifted by that offset so that it is centred on
  the reported value (clipped at 0), and `bias` (mean replicate - value) estimates how far the
  reported value lies above the distance an infinite sample would give. On the default ToyWorld
  evaluation (N = 384, 128-d features) that bias is about half of FD-T, and an FD at N = 384 is not
  comparable with one at N = 5,000;
- a paired comparison of variant v with `full` (`p_vs_full`): the difference of the two values on
  each replicate (same indices for v, full and the teacher reference, so the bias largely cancels);
  p is the two-sided bootstrap p-value 2 min(P(diff <= 0), P(diff >= 0)), floored at 1 / B.

Across training seeds (`n_seeds` > 1): the mean over seeds with a Student-t 95 % interval of the
seed means; with one seed the within-run interval is reported and `n_seeds` says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from measures.frechet import fd, kid

LEVEL = 0.95


@dataclass
class MetricSample:
    """What one metric's value is computed from, kept for its interval and for paired comparisons.

    kind "mean": `values` (N,) per prompt, the value is their mean (raised to `floor` when set: the
    CLIP score's max(., 0)); kind "fd": `values` (N, D) student features and `reference` (N, D) the
    teacher's features of the same prompts and seeds, the value is their Fréchet distance; kind "kid"
    the same features, the value clean-fid's KID (no bootstrap: each value is itself 100 subset
    estimates, so `run_metrics` reports it without an interval and does not keep it for comparisons). `prompts`
    (N,) names the prompt of each row, so two variants are compared on the same prompts. With
    `strata` (N,) (GenEval's tasks) the value is the mean over strata of each stratum's mean, as
    GenEval's overall score is, and resampling stays within each stratum."""
    kind: str
    values: np.ndarray
    prompts: np.ndarray
    reference: np.ndarray | None = None
    floor: float | None = None
    strata: np.ndarray | None = None

    def value(self, rows: np.ndarray | None = None) -> float:
        rows = np.arange(len(self.values)) if rows is None else rows
        if self.kind == "fd":
            return fd(self.values[rows], self.reference[rows])
        if self.kind == "kid":
            return kid(self.values[rows], self.reference[rows])
        values = np.asarray(self.values, np.float64)[rows]
        if self.strata is not None:
            labels = np.asarray(self.strata)[rows]
            mean = float(np.mean([values[labels == t].mean() for t in dict.fromkeys(labels.tolist())]))
        else:
            mean = float(np.mean(values))
        return max(mean, self.floor) if self.floor is not None else mean

    def replicate_indices(self, draws: int, seed: int) -> np.ndarray:
        return replicate_indices(len(self.values), draws, seed, self.strata)

    def replicates(self, indices: np.ndarray) -> np.ndarray:
        return np.array([self.value(rows) for rows in indices])

    def bootstrap(self, draws: int, seed: int, level: float = LEVEL) -> dict:
        """{"ci": (lo, hi), "bias": mean replicate - value (Fréchet distances) or None} (module docstring)."""
        reps = self.replicates(self.replicate_indices(draws, seed))
        if self.kind != "fd":
            return {"ci": percentile_interval(reps, level), "bias": None}
        value = self.value()
        return {"ci": fd_interval(value, reps, level), "bias": float(np.mean(reps) - value)}

    def interval(self, draws: int, seed: int, level: float = LEVEL) -> tuple[float, float]:
        """The 95 % bootstrap interval over prompts (module docstring)."""
        return self.bootstrap(draws, seed, level)["ci"]


def paired_difference(a: MetricSample, b: MetricSample, draws: int, seed: int, level: float = LEVEL) -> dict:
    """value(a) - value(b) on the prompts both share, its percentile interval over the same bootstrap
    replicates of those prompts, and the two-sided bootstrap p-value that it is zero:
    {"difference": d, "ci": (lo, hi), "p": p}."""
    if a.kind != b.kind or not np.array_equal(a.prompts, b.prompts):
        raise ValueError("a paired comparison needs two samples of the same metric on the same prompts")
    # the teacher's features, extracted again by each variant's metrics stage (equal up to GPU round-off)
    if a.kind == "fd" and not (a.reference.shape == b.reference.shape
                               and np.allclose(a.reference, b.reference, rtol=1e-4, atol=1e-5)):
        raise ValueError("a paired comparison of Fréchet distances needs the same reference features")
    indices = a.replicate_indices(draws, seed)
    differences = a.replicates(indices) - b.replicates(indices)
    return {"difference": a.value() - b.value(), "ci": percentile_interval(differences, level),
            "p": paired_p(differences)}


def paired_comparison(a: MetricSample, b: MetricSample, draws: int, seed: int) -> float:
    """Bootstrap p-value that a and b have the same value, resampling the prompts they share."""
    return paired_difference(a, b, draws, seed)["p"]


def save_samples(path: Path, samples: dict[str, MetricSample]) -> None:
    """One .npz: <metric>.values / .prompts / .reference arrays and a JSON entry for kind and floor."""
    arrays = {"_kinds": np.array(json.dumps({m: {"kind": s.kind, "floor": s.floor} for m, s in samples.items()}))}
    for m, s in samples.items():
        arrays[f"{m}.values"], arrays[f"{m}.prompts"] = np.asarray(s.values), np.asarray(s.prompts)
        for extra in ("reference", "strata"):
            if getattr(s, extra) is not None:
                arrays[f"{m}.{extra}"] = np.asarray(getattr(s, extra))
    tmp = Path(path).with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_samples(path: Path) -> dict[str, MetricSample]:
    with np.load(path, allow_pickle=False) as data:
        kinds = json.loads(str(data["_kinds"]))
        return {m: MetricSample(k["kind"], data[f"{m}.values"], data[f"{m}.prompts"],
                                data[f"{m}.reference"] if f"{m}.reference" in data else None, k["floor"],
                                data[f"{m}.strata"] if f"{m}.strata" in data else None)
                for m, k in kinds.items()}


def replicate_indices(n: int, draws: int, seed: int, strata: np.ndarray | None = None) -> np.ndarray:
    """(draws, n) row indices drawn with replacement (within each stratum when `strata` labels the
    rows: every replicate keeps each task's prompt count), the same for every set compared."""
    rng = np.random.default_rng([seed, 20250605])
    if strata is None:
        return rng.integers(0, n, size=(draws, n))
    out = np.empty((draws, n), np.int64)
    for label in dict.fromkeys(np.asarray(strata).tolist()):
        members = np.flatnonzero(np.asarray(strata) == label)
        out[:, members] = members[rng.integers(0, len(members), size=(draws, len(members)))]
    return out


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = (1 - level) / 2
    lo, hi = np.quantile(np.asarray(replicates, np.float64), [tail, 1 - tail])
    return float(lo), float(hi)


def mean_interval(values: np.ndarray, indices: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-prompt values."""
    values = np.asarray(values, np.float64)
    return percentile_interval(values[indices].mean(axis=1), level)


def fd_replicates(student: np.ndarray, teacher: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Fréchet distance of every replicate (student and teacher resampled with the same indices)."""
    return np.array([fd(student[idx], teacher[idx]) for idx in indices])


def fd_interval(value: float, replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The replicates' percentile range shifted to centre on the N-image estimate (the replicates'
    extra small-N bias removed), clipped at 0."""
    q_lo, q_hi = percentile_interval(replicates, level)
    offset = float(np.mean(replicates)) - value
    return max(0.0, q_lo - offset), max(0.0, q_hi - offset)


def paired_p(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value that a paired difference is zero."""
    d = np.asarray(differences, np.float64)
    p = 2 * min(np.mean(d <= 0), np.mean(d >= 0))
    return float(min(1.0, max(p, 1.0 / len(d))))


def seed_interval(values: list[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, lo, hi) over training seeds: Student-t interval of the mean (needs >= 2 seeds)."""
    x = np.asarray(values, np.float64)
    if len(x) < 2:
        raise ValueError("an interval across seeds needs at least 2 seeds")
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


__all__ = ["LEVEL", "MetricSample", "paired_comparison", "save_samples", "load_samples", "replicate_indices", "percentile_interval", "mean_interval", "fd_replicates", "fd_interval",
           "paired_p", "seed_interval"]
