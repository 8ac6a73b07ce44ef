"""Validate the oracle on held-out renders, clean and perturbed like generated images.

Besides the params' noise / blur (`toyworld.oracle_noise`, `oracle_blur`), every run adds the stress
conditions of `STRESS`: the params' noise with stronger blurs (generated 32-px images are softer than
renders) and with an unsharp mask (the dark halos a sharpened student draws around objects)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from toyworld.grammar import TASKS, sample_scene, sample_spec
from toyworld.oracle import detect
from toyworld.render import render
from toyworld.world import Scene

ATTRIBUTES = ("shape", "color", "texture", "cell")


STRESS = {"noise+blur0.8": (0.8, 0.0), "noise+blur1.2": (1.2, 0.0), "noise+sharpen": (0.0, 1.0)}  # (blur, sharpen)


def perturb(img: np.ndarray, rng: np.random.Generator, noise: float, blur: float, sharpen: float = 0.0) -> np.ndarray:
    """A Gaussian blur (std `blur` px), an unsharp mask (x + sharpen * (x - blur_1px(x))) and Gaussian
    pixel noise (std `noise` in 0..255 units), in that order."""
    x = img.astype(np.float64)
    if blur > 0:
        x = ndimage.gaussian_filter(x, sigma=(blur, blur, 0))
    if sharpen > 0:
        x = x + sharpen * (x - ndimage.gaussian_filter(x, sigma=(1.0, 1.0, 0)))
    if noise > 0:
        x = x + rng.normal(0.0, noise, x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _score(scene: Scene, image: np.ndarray, tally: dict) -> None:
    dets = detect(image)
    by_cell = {d.cell: d for d in dets}
    truth = sorted((o.cell, o.shape, o.color, o.texture) for o in scene.objects)
    got = sorted((d.cell, d.shape, d.color, d.texture) for d in dets)
    tally["scenes"] += 1
    tally["scene_correct"] += truth == got
    tally["count_correct"] += len(dets) == len(scene.objects)
    for o in scene.objects:
        tally["objects"] += 1
        d = by_cell.get(o.cell)
        for attr in ATTRIBUTES:
            tally[attr] += d is not None and getattr(d, attr) == getattr(o, attr)


def validate(n: int, seed: int, noise: float, blur: float) -> dict:
    """Accuracy on `n` renders drawn from all tasks with a seed the training data does not use.
    `accuracy` = fraction of images whose detected object set (cell, shape, colour, texture)
    equals the truth exactly, worst over the params' conditions; per-attribute accuracy is per object.
    The `STRESS` conditions are reported beside them (`stress_shape`: their worst shape accuracy):
    stripes fade under the stronger blurs, so texture is not expected to survive them."""
    rng = np.random.default_rng(seed)
    conditions = {"clean": (0.0, 0.0, 0.0), "noise": (noise, 0.0, 0.0), "blur": (0.0, blur, 0.0),
                  "noise+blur": (noise, blur, 0.0),
                  **{name: (noise, stress_blur, sharpen) for name, (stress_blur, sharpen) in STRESS.items()}}
    tallies = {c: dict.fromkeys(("scenes", "scene_correct", "count_correct", "objects") + ATTRIBUTES, 0)
               for c in conditions}
    weights = dict.fromkeys(TASKS, 1.0)
    for _ in tqdm(range(n), desc="oracle validation", unit="img", mininterval=2.0):
        spec = sample_spec(rng, weights, held_out=bool(rng.integers(2)))
        scene = sample_scene(spec, rng)
        img = render(scene)
        for cond, (sd, bl, sh) in conditions.items():
            _score(scene, perturb(img, rng, sd, bl, sh) if (sd or bl or sh) else img, tallies[cond])
    report: dict = {}
    for cond, t in tallies.items():
        report[cond] = {"accuracy": t["scene_correct"] / t["scenes"], "count": t["count_correct"] / t["scenes"],
                        **{attr: t[attr] / t["objects"] for attr in ATTRIBUTES}, "n_objects": t["objects"]}
    return {"accuracy": min(r["accuracy"] for c, r in report.items() if c not in STRESS),
            "stress_shape": min(report[c]["shape"] for c in STRESS), "n": n, "seed": seed,
            "perturbation": {"noise_std_255": noise, "blur_sigma_px": blur},
            "stress": {c: {"blur_sigma_px": b, "unsharp_amount": a, "noise_std_255": noise} for c, (b, a) in STRESS.items()},
            **report}


def garbage_survives(seed: int = 0) -> bool:
    """The oracle must never crash on garbage: noise, flat, NaN, tiny, huge, grey, RGBA."""
    rng = np.random.default_rng(seed)
    cases = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), np.zeros((32, 32, 3), np.uint8),
             np.full((32, 32, 3), np.nan), rng.random((5, 7, 3)), rng.integers(0, 256, (300, 200, 4), dtype=np.uint8),
             rng.integers(0, 256, (32, 32), dtype=np.uint8), np.full((32, 32, 3), 255, np.uint8)]
    for c in cases:
        detect(c)
    return True
