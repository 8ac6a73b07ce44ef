"""Deterministic rasteriser: Scene -> uint8 RGB array (H, W, 3).

Shapes are drawn as exact coverage on a 4x supersampled grid and box-filtered down, so
circle and triangle edges are anti-aliased while squares (integer boxes) stay crisp.
"""
from __future__ import annotations

import numpy as np

from toyworld.world import COLORS, RESOLUTION, STRIPE_PERIOD, Scene, SceneObject, stripe_tone

SUPERSAMPLE = 4

_ss = (np.arange(RESOLUTION * SUPERSAMPLE) + 0.5) / SUPERSAMPLE  # sub-pixel centres, pixel units
_Y, _X = np.meshgrid(_ss, _ss, indexing="ij")


def coverage(obj: SceneObject) -> np.ndarray:
    """Boolean mask of the object on the supersampled grid."""
    x1, y1, x2, y2 = obj.box()
    if obj.shape == "square":
        return (_X >= x1) & (_X < x2) & (_Y >= y1) & (_Y < y2)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if obj.shape == "circle":
        r = obj.size / 2
        return (_X - cx) ** 2 + (_Y - cy) ** 2 <= r * r
    if obj.shape == "triangle":  # apex up, base at the bottom of the box
        frac = (_Y - y1) / (y2 - y1)
        return (_Y >= y1) & (_Y < y2) & (np.abs(_X - cx) <= frac * obj.size / 2)
    raise ValueError(f"unknown shape {obj.shape!r}")


def stripes(obj: SceneObject) -> np.ndarray:
    """Mask of the stripe-tone rows of a striped object (horizontal bands from the box top)."""
    _, y1, _, _ = obj.box()
    return (np.floor((_Y - y1) / (STRIPE_PERIOD / 2)) % 2) == 1


def render(scene: Scene) -> np.ndarray:
    img = np.empty(_X.shape + (3,), dtype=np.float64)
    img[:] = np.asarray(scene.background, dtype=np.float64)
    for obj in scene.objects:
        base = np.clip(np.asarray(COLORS[obj.color], dtype=np.float64) + np.asarray(obj.rgb_jitter), 0, 255)
        cov = coverage(obj)
        if obj.texture == "striped":
            tone = np.asarray(stripe_tone(tuple(base)), dtype=np.float64)
            band = stripes(obj) & cov
            img[cov & ~band] = base
            img[band] = tone
        else:
            img[cov] = base
    s = SUPERSAMPLE
    small = img.reshape(RESOLUTION, s, RESOLUTION, s, 3).mean(axis=(1, 3))
    return np.clip(np.round(small), 0, 255).astype(np.uint8)
