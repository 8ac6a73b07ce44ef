"""Rendered scene pools for the toy encoders.

Data. One pool of `images` freshly rendered scenes, deterministic in `seed` (rendered in
fixed-size chunks, each with its own seeded generator, so the pool does not depend on the
number of worker processes): a `grammar_fraction` of them from the grammar's training prompts
(`sample_spec` + `sample_scene`, i.e. the teacher's data distribution), the rest 1-3 objects
with every attribute random. Held-out prompts (`grammar.is_held_out`) are never a training
caption; the evaluation renders separate scene streams, from held-out prompts where a task has
them.
"""
from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from toyworld.grammar import TASKS, sample_scene, sample_spec
from toyworld.render import render
from toyworld.world import (PromptSpec, Scene)
from toyworld.captions import cell_labels, random_scene


CHUNK = 256  # scenes per seeded rendering chunk


GRAMMAR_WEIGHTS = dict.fromkeys(TASKS, 1.0)


@dataclass
class ScenePool:
    images: torch.Tensor                 # (N, 32, 32, 3) uint8
    scenes: list[Scene]
    specs: list[PromptSpec | None]       # the grammar prompt a scene was drawn for, if any
    labels: np.ndarray                   # (N, 3, GRID*GRID) `cell_labels`

    def __len__(self) -> int:
        return len(self.scenes)


def _render_chunk(args: tuple) -> tuple[np.ndarray, list]:
    seed, stream, chunk, size, grammar_fraction, held_out = args
    rng = np.random.default_rng([seed, stream, chunk])
    items = []
    for _ in range(size):
        if rng.random() < grammar_fraction:
            spec = sample_spec(rng, GRAMMAR_WEIGHTS, held_out=held_out)
            items.append((sample_scene(spec, rng), spec))
        else:
            items.append((random_scene(rng), None))
    return np.stack([render(scene) for scene, _ in items]), items


def render_pool(n: int, seed: int, stream: int, grammar_fraction: float, held_out: bool = False,
                workers: int = 1, desc: str = "rendering") -> ScenePool:
    """n scenes (grammar prompts from the held-out split when `held_out`), deterministic in
    (n, seed, stream, grammar_fraction, held_out) whatever the number of worker processes."""
    jobs = [(seed, stream, c, min(CHUNK, n - c * CHUNK), grammar_fraction, held_out) for c in range(math.ceil(n / CHUNK))]
    bar = tqdm(total=n, desc=desc, unit="img", mininterval=2.0)
    images, items = [], []

    def collect(result):
        images.append(result[0])
        items.extend(result[1])
        bar.update(len(result[1]))

    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as ex:
            for result in ex.map(_render_chunk, jobs):
                collect(result)
    else:
        for job in jobs:
            collect(_render_chunk(job))
    bar.close()
    scenes = [s for s, _ in items]
    return ScenePool(torch.from_numpy(np.concatenate(images)), scenes, [sp for _, sp in items],
                     np.stack([cell_labels(s) for s in scenes]))


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W): x/255, then (x - mean)/std per channel, exactly
    what the saved image processor does."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
