"""Image tensors <-> uint8 arrays and grids (one conversion used by every stage that writes PNGs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, rounding half away like PIL's save of floats."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().clamp(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write one (H, W, 3) uint8 image atomically (hidden temp file, then rename; parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    Image.fromarray(image).save(tmp)
    tmp.rename(path)
    return path


def save_grid(images: np.ndarray, path: str | Path, cols: int, scale: int = 1, pad: int = 1) -> Path:
    """Tile (N, H, W, 3) uint8 images row-major into one PNG (grey 1-px separators)."""
    n, h, w, _ = images.shape
    rows = (n + cols - 1) // cols
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 96, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = im
    pil = Image.fromarray(canvas)
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil.save(path)
    return path
