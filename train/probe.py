"""Metrics along training (the paper's Fig. 11 and Tab. 8: FID-T of each variant at chosen iterations).

Every `train.eval_every` iterations (and at iteration 0 and at the end) the SenseFlow loop samples a
fixed probe set, the same prompts with the same initial noise every time, with the student at its
step count and `train.eval_sampler`, and this module scores those images:

- `eval/fd_t_toyworld` (ToyWorld) or `eval/fid_t` (real families, needs `train.eval_inception`):
  the Fréchet distance to the teacher's samples of the same prompts and noise (Euler,
  `train.eval_teacher_steps` at `train.eval_teacher_guidance`), in the toy CLIP's feature space as
  the metrics stage's `fd_t_toyworld`, or clean-fid's Inception features as its `fid_t`;
- `eval/clip_score`: CLIP score on the paper's cosine scale (the metrics stage's default) with `train.eval_clip` (ToyWorld:
  `train.clip`, the toy CLIP; real families: off unless set);
- `eval/oracle_accuracy` (ToyWorld): the oracle's GenEval-rule accuracy, the mean over the six tasks.

The probe set is small (`train.eval_prompts`, default 96): the curves compare a run with itself over
time and variants with each other at the same N; a Fréchet distance of 96 images is biased upwards
and not comparable with the final evaluation's (N = `eval.fid_prompts`) or with published values.
`python -m evaluate.checkpoints` scores a run's saved checkpoints the same way after the fact.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from configs.params import ParamsError
from configs.paths import readable_file, readable_folder, text_lines
from measures.clip_score import ClipScorer
from measures.frechet import INCEPTION_FILE, FrechetError, InceptionFeatures, fd
from protocols.images import to_uint8
from toyworld.grading import grade
from toyworld.grammar import GENEVAL_TASKS
from toyworld.world import PromptSpec

KEYS = {"fd_t_toyworld": "eval/fd_t_toyworld", "fid_t": "eval/fid_t", "clip_score": "eval/clip_score",
        "oracle_accuracy": "eval/oracle_accuracy"}  # shared/DESIGN.md's dvclive keys


@dataclass
class ProbeSet:
    """The fixed prompts (ToyWorld: with their specs, graded by the oracle) and the noise seed."""
    prompts: list[str]
    specs: list[PromptSpec] | None
    seed: int

    def digest(self) -> str:
        return hashlib.sha256(json.dumps([self.prompts, self.seed]).encode()).hexdigest()[:16]


def probe_set(settings: dict, dataset_prompts: list[str]) -> ProbeSet:
    """ToyWorld: GenEval-style prompts, an equal share per task (half held out of training where the
    task has held-out prompts, as the teacher's own evaluation). Real families: the first
    `eval_prompts` lines of `train.eval_prompt_file`, or prompts spread evenly over the dataset."""
    n, seed = int(settings["eval_prompts"]), int(settings["eval_seed"])
    if settings["family"] == "toy":
        from toyworld.eval_prompts import eval_prompts

        per_task = max(1, math.ceil(n / len(GENEVAL_TASKS)))
        specs = [spec for spec, _ in eval_prompts(per_task, seed)]
        return ProbeSet([s.prompt for s in specs], specs, seed)
    if settings["eval_prompt_file"]:
        lines = text_lines(settings["eval_prompt_file"], "the along-training prompt file", "train.eval_prompt_file")
        if len(lines) < n:
            raise ParamsError(f"the along-training prompt file has {len(lines)} prompts, fewer than "
                              f"train.eval_prompts = {n} (train.eval_prompt_file: {settings['eval_prompt_file']})")
        return ProbeSet(lines[:n], None, seed)
    rows = np.linspace(0, len(dataset_prompts) - 1, min(n, len(dataset_prompts))).round().astype(int)
    return ProbeSet([dataset_prompts[i] for i in rows], None, seed)


@torch.no_grad()
def sample_probe(backbone, net: torch.nn.Module, probe: ProbeSet, *, resolution: int, steps: int, sampler: str,
                 guidance: float, batch_size: int, precision=contextlib.nullcontext) -> np.ndarray:
    """(N, H, W, 3) uint8 samples of `net` for the probe prompts: the initial noise of all N drawn at
    once from a generator seeded `probe.seed`, the stochastic sampler's re-noising seeded
    `probe.seed + 1 + batch index` (own generators: no global RNG is touched). The same images
    whether the loop or `evaluate.checkpoints` samples them; `precision` is the loop's autocast
    context (bf16 runs)."""
    device = backbone.device
    shape = backbone.latent_shape(resolution, resolution)
    noise = torch.randn((len(probe.prompts), *shape), generator=torch.Generator().manual_seed(probe.seed))
    out = []
    for b, i in enumerate(range(0, len(probe.prompts), batch_size)):
        with precision():
            x0 = backbone.sample(net, backbone.encode_prompts(probe.prompts[i:i + batch_size]),
                                 noise[i:i + batch_size].to(device), steps, sampler=sampler, guidance_scale=guidance,
                                 generator=torch.Generator(device).manual_seed(probe.seed + 1 + b))
            out.append(to_uint8(backbone.decode(x0)))
    return np.concatenate(out)


def teacher_guidance(settings: dict) -> float:
    """The reference samples' CFG: train.eval_teacher_guidance, else train.real_guidance (a range's mid-point)."""
    g = settings["eval_teacher_guidance"]
    if g is None:
        g = settings["real_guidance"]
        if isinstance(g, (list, tuple)):
            g = (float(g[0]) + float(g[1])) / 2
    return float(g)


def reference_record(settings: dict, probe: ProbeSet) -> dict:
    """What defines the teacher's reference images (a cached reference is reused only if it matches)."""
    teacher = Path(settings["teacher"])
    files = sorted([str(f.relative_to(teacher)), f.stat().st_size, f.stat().st_mtime_ns]
                   for f in teacher.rglob("*") if f.is_file()) if teacher.is_dir() else []
    return {"teacher": str(settings["teacher"]), "teacher_files": files,  # retrained in place: sampled again
            "family": settings["family"], "resolution": settings["resolution"],
            "steps": settings["eval_teacher_steps"], "guidance": teacher_guidance(settings), "sampler": "euler",
            "prompts": probe.digest(), "precision": settings["precision"]}


def check_probe_inputs(settings: dict) -> None:
    """What the probe reads, checked before any model loads (each problem naming its key)."""
    if not settings["eval_every"]:
        return
    toy = settings["family"] == "toy"
    clip = settings["eval_clip"] or (settings["clip"] if toy else None)
    key = "train.eval_clip" if settings["eval_clip"] else "train.clip"
    if clip:
        folder = readable_folder(clip, "the CLIP folder of the along-training CLIP score", key)
        if not (folder / "preprocessor_config.json").is_file():
            raise ParamsError(f"the CLIP folder of the along-training metrics has no image processor ({key}: "
                              f"{folder} lacks preprocessor_config.json): set train.eval_clip to a full CLIPModel "
                              f"folder, or train.eval_every: 0 to log no metrics along training")
    if not toy and settings["eval_inception"]:
        path = readable_file(settings["eval_inception"], "clean-fid's Inception file", "train.eval_inception")
        if path.name != INCEPTION_FILE:
            raise ParamsError(f"train.eval_inception must be the file {INCEPTION_FILE} (clean-fid loads it by that "
                              f"name), got {str(path)!r}")
    if not toy and not clip and not settings["eval_inception"]:
        raise ParamsError("nothing to measure along training (train.eval_every > 0 on a real family): set "
                          "train.eval_inception (clean-fid's inception-2015-12-05.pt, for eval/fid_t) and/or "
                          "train.eval_clip (a CLIPModel folder, for eval/clip_score), or train.eval_every: 0")
    if not toy and settings["eval_prompt_file"]:
        text_lines(settings["eval_prompt_file"], "the along-training prompt file", "train.eval_prompt_file")


def cached_reference(cache: Path, record: dict) -> np.ndarray | None:
    """The teacher's reference images in `cache` (along_training/reference.npz) if they were made for
    `record`; None when the file is missing, unreadable or of other settings (then they are sampled)."""
    try:
        with np.load(cache, allow_pickle=False) as data:
            return data["images"] if json.loads(str(data["record"])) == record else None
    except (OSError, ValueError, KeyError):
        return None


class TrainingProbe:
    """Scores probe images (N, H, W, 3) uint8 against the teacher's reference images of the same
    prompts and noise. Construct on the process that logs (the main one)."""

    def __init__(self, settings: dict, probe: ProbeSet, device: str = "cpu"):
        self.probe, self.toy = probe, settings["family"] == "toy"
        check_probe_inputs({**settings, "eval_every": settings["eval_every"] or 1})
        clip = settings["eval_clip"] or (settings["clip"] if self.toy else None)
        self.clip = ClipScorer(clip, device) if clip else None
        self.inception = None
        if not self.toy and settings["eval_inception"]:
            path = readable_file(settings["eval_inception"], "clean-fid's Inception file", "train.eval_inception")
            self.inception = InceptionFeatures({"inception": str(path)}, device)
        self.reference: np.ndarray | None = None

    @property
    def fd_name(self) -> str | None:
        return "fd_t_toyworld" if self.toy and self.clip else "fid_t" if self.inception else None

    def describe(self) -> list[str]:
        """The dvclive keys this probe logs."""
        names = ([self.fd_name] if self.fd_name else []) + (["clip_score"] if self.clip else []) + \
            (["oracle_accuracy"] if self.toy else [])
        return [KEYS[n] for n in names]

    def _features(self, images: np.ndarray) -> np.ndarray:
        return self.clip(images) if self.toy else self.inception(images)

    def set_reference(self, images: np.ndarray) -> None:
        self.reference = self._features(images) if self.fd_name else None
        if self.reference is not None and len(self.reference) <= self.reference.shape[1]:
            n, dims = self.reference.shape
            print(f"probe: note: {KEYS[self.fd_name]} compares {n} images of {dims}-d features (train.eval_prompts "
                  f"{n} <= {dims}): the covariances are singular, so the distance is biased upwards and an "
                  f"evaluation may have none; set train.eval_prompts above {dims} for a full-rank estimate",
                  file=sys.stderr)

    def measure(self, images: np.ndarray) -> dict[str, float]:
        """{dvclive key: value} for the student's probe images."""
        if len(images) != len(self.probe.prompts):
            raise ValueError(f"{len(images)} probe images for {len(self.probe.prompts)} prompts")
        out = {}
        if self.fd_name:
            if self.reference is None:
                raise RuntimeError("set_reference() before measure(): the Fréchet distance needs the teacher's images")
            try:
                out[KEYS[self.fd_name]] = fd(self._features(images), self.reference)
            except FrechetError as e:  # a diagnostic curve must not end a training run: this point has no FD
                print(f"probe: no {KEYS[self.fd_name]} at this evaluation: {e}", file=sys.stderr)
        if self.clip:
            out[KEYS["clip_score"]] = self.clip.clip_score(images, self.probe.prompts)
        if self.toy:
            per: dict[str, list[bool]] = {}
            for image, spec in zip(images, self.probe.specs):
                per.setdefault(spec.tag, []).append(grade(image, spec)[0])
            out[KEYS["oracle_accuracy"]] = float(np.mean([np.mean(v) for v in per.values()]))
        return out


# ---- <run>/along_training.jsonl: one {"step", <key>: value, ...} line per evaluation ----------
def read_curve(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def probe_key(record: dict, settings: dict) -> str:
    """What makes two probe points comparable: the reference (teacher, prompts, noise), the student's
    sampler and steps. Stored with every point; points of another key are never mixed into a curve."""
    spec = {**record, "teacher_files": None, "sampler": settings["eval_sampler"], "steps": settings["num_steps"]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def append_point(path: Path, step: int, values: dict[str, float], key: str) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in values.items()}, "probe": key}) + "\n")


def keep_points_until(path: Path, step: int, key: str) -> Path | None:
    """A run resumed at `step` repeats the later iterations: their points are dropped. A curve of
    another probe (eval keys changed on resume) is moved to `along_training.<probe>.jsonl` (kept,
    not mixed); returns where it went."""
    path = Path(path)
    points = read_curve(path)
    other = {p["probe"] for p in points if "probe" in p} - {key}  # points written before keys were kept: compatible
    if other:
        aside = path.with_name(f"{path.stem}.{'-'.join(sorted(str(o) for o in other))}{path.suffix}")
        path.rename(aside)
        return aside
    kept = [p for p in points if p["step"] <= step]
    if path.is_file():
        path.write_text("".join(json.dumps(p) + "\n" for p in kept))
    return None


__all__ = ["cached_reference", "probe_key", "KEYS", "check_probe_inputs", "ProbeSet", "probe_set", "sample_probe", "teacher_guidance", "reference_record", "TrainingProbe", "read_curve",
           "append_point", "keep_points_until"]
