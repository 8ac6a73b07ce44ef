"""The ToyWorld oracle: reads any RGB image and returns the objects it sees.

Preprocessing path (one, documented): RGB -> (resize to 32x32 bilinear if needed) -> background
colour = median of the 1-px border -> foreground = max channel distance to background above
`FG_THRESHOLD` -> 4-connected components (holes filled, tiny blobs dropped) -> per component:
colour and texture by nearest palette tone voting over the component's interior; shape by fitting
the three shapes to the component's soft foreground map (below).

The threshold sits at ~60 % of the weakest object/background contrast (stripe tones on the
lightest background), so edge pixels of crisp squares do not flip under noise (a threshold near
50 % made squares ragged and graded as circles in a prototype).

Shape: the soft foreground map f = clip(distance to background / the object's median interior
distance, 0, 1) around the component (other components masked out) is compared with each shape
rendered (4x supersampled coverage, as `toyworld.render` draws it) at the size and centre that f's
area and centroid give, at a few scales and Gaussian blurs; the smallest squared error wins. Area
and centroid do not change under blur, so soft-edged objects (generated images are softer than
renders) keep their shape. The rule it replaces, a fill-ratio threshold on the thresholded mask,
misread the shape of 19-27 % of rendered objects (squares as circles) under a 0.8-1.2 px blur
(results/toyworld/README.md).
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from toyworld.world import CELL, COLORS, GRID, RESOLUTION, stripe_tone

FG_THRESHOLD = 64.0
MIN_AREA = 12  # pixels; smaller components are noise
FULL_SCORE_AREA = 40  # components at least this large get score 1
STRIPE_FRACTION = 0.2

_TONE_NAMES: list[tuple[str, str]] = []
_TONES: list[tuple[int, int, int]] = []
for _name, _rgb in COLORS.items():
    _TONE_NAMES.append((_name, "solid"))
    _TONES.append(_rgb)
    _TONE_NAMES.append((_name, "striped"))
    _TONES.append(stripe_tone(_rgb))
_TONE_ARRAY = np.asarray(_TONES, dtype=np.float64)


@dataclass(frozen=True)
class Detection:
    shape: str
    color: str
    texture: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive), pixels of the 32x32 frame
    score: float

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return ((x1 + x2) / 2, (y1 + y2) / 2)

    @property
    def cell(self) -> tuple[int, int]:
        cx, cy = self.center
        return (min(GRID - 1, max(0, int(cy // CELL))), min(GRID - 1, max(0, int(cx // CELL))))

    def to_dict(self) -> dict:
        return asdict(self)


def to_rgb_array(image) -> np.ndarray:
    """Any PIL image or HxW / HxWxC array (uint8 or float in [0,1] / [0,255]) -> float64 (32,32,3)."""
    if isinstance(image, Image.Image):
        pil = image.convert("RGB")
    else:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"expected an HxW or HxWxC image, got shape {arr.shape}")
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        elif arr.shape[-1] == 4:
            arr = arr[..., :3]
        elif arr.shape[-1] != 3:
            raise ValueError(f"expected 1, 3 or 4 channels, got {arr.shape[-1]}")
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if arr.max(initial=0.0) <= 1.0:
            arr = arr * 255.0
        pil = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8))
    if pil.size != (RESOLUTION, RESOLUTION):
        pil = pil.resize((RESOLUTION, RESOLUTION), Image.BILINEAR)
    return np.asarray(pil, dtype=np.float64)


SHAPE_AREA = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}  # area / size^2 of each drawn shape
FIT_SCALES = (0.94, 1.0, 1.06)  # sizes tried around the area estimate
FIT_BLURS = (0.0, 0.6, 1.0, 1.4)  # Gaussian blur std (px) of the rendered shapes tried
FIT_MARGIN = 3  # pixels around the component's box in the fitted window
_SUPERSAMPLE = 4


@functools.lru_cache(maxsize=64)
def _subpixel_centres(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) centres of the supersampled grid of an (h, w) window, pixel units (read-only, shared)."""
    s = _SUPERSAMPLE
    y, x = np.meshgrid((np.arange(h * s) + 0.5) / s, (np.arange(w * s) + 0.5) / s, indexing="ij")
    y.flags.writeable = x.flags.writeable = False
    return y, x


def _coverage(shape: str, cx: float, cy: float, size: float, h: int, w: int) -> np.ndarray:
    """(h, w) pixel coverage of a shape of bounding-box side `size` centred at (cx, cy) (pixel
    units, window coordinates), drawn as toyworld.render draws it (triangle: apex up)."""
    s = _SUPERSAMPLE
    y, x = _subpixel_centres(h, w)
    if shape == "square":
        mask = (np.abs(x - cx) <= size / 2) & (np.abs(y - cy) <= size / 2)
    elif shape == "circle":
        mask = (x - cx) ** 2 + (y - cy) ** 2 <= (size / 2) ** 2
    else:
        top = cy - size / 2
        mask = (y >= top) & (y < top + size) & (np.abs(x - cx) <= (y - top) / 2)  # half-width grows to size / 2
    return mask.reshape(h, s, w, s).mean(axis=(1, 3))


def _shape_of(soft: np.ndarray) -> str:
    """soft: (h, w) foreground fraction in [0, 1] around one object. The shape whose rendering,
    at the size and centre of `soft`'s area and centroid (a few scales and blurs), is closest."""
    h, w = soft.shape
    area = float(soft.sum())
    if area <= 0:
        return "square"
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    cy, cx = float((soft * ys).sum()) / area, float((soft * xs).sum()) / area
    best, best_err = "square", np.inf
    for shape, fraction in SHAPE_AREA.items():
        for scale in FIT_SCALES:
            size = np.sqrt(area / fraction) * scale
            centre_y = cy - size / 6 if shape == "triangle" else cy  # a triangle's centroid sits 2/3 down its box
            drawn = _coverage(shape, cx, centre_y, size, h, w)
            for blur in FIT_BLURS:
                model = ndimage.gaussian_filter(drawn, blur, mode="constant") if blur else drawn
                err = float(((model - soft) ** 2).sum())
                if err < best_err:
                    best, best_err = shape, err
    return best


def detect(image) -> list[Detection]:
    """Objects in the image, sorted by score (desc) then top-left to bottom-right. Never raises
    on valid-but-garbage pixels (noise, uniform, NaN); raises ValueError only for non-images."""
    img = to_rgb_array(image)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg = np.median(border, axis=0)
    diff = np.abs(img - bg).max(axis=-1)
    fg = diff > FG_THRESHOLD
    labels, n = ndimage.label(fg)
    dets: list[Detection] = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = ndimage.binary_fill_holes(labels[sl] == i)
        area = int(comp.sum())
        if area < MIN_AREA:
            continue
        inner = ndimage.binary_erosion(comp)
        if inner.sum() < 4:
            inner = comp
        pix = img[sl][inner]
        d2 = ((pix[:, None, :] - _TONE_ARRAY[None]) ** 2).sum(-1)
        nearest = d2.argmin(1)
        names = [_TONE_NAMES[k] for k in nearest]
        color_votes: dict[str, int] = {}
        for c, _ in names:
            color_votes[c] = color_votes.get(c, 0) + 1
        color = max(color_votes, key=color_votes.get)
        striped = sum(1 for c, t in names if t == "striped" and c == color) / max(1, color_votes[color])
        texture = "striped" if striped >= STRIPE_FRACTION else "solid"
        y, x = sl
        win_y = slice(max(0, y.start - FIT_MARGIN), min(diff.shape[0], y.stop + FIT_MARGIN))
        win_x = slice(max(0, x.start - FIT_MARGIN), min(diff.shape[1], x.stop + FIT_MARGIN))
        soft = np.clip(diff[win_y, win_x] / max(float(np.median(diff[sl][inner])), 1e-6), 0.0, 1.0)
        others = (labels[win_y, win_x] != i) & (labels[win_y, win_x] != 0)
        soft[ndimage.binary_dilation(others)] = 0.0  # neighbours' pixels and their soft edges
        box = (int(x.start), int(y.start), int(x.stop), int(y.stop))
        score = float(min(1.0, area / FULL_SCORE_AREA))
        dets.append(Detection(_shape_of(soft), color, texture, box, score))
    dets.sort(key=lambda d: (-d.score, d.box[1], d.box[0]))
    return dets
