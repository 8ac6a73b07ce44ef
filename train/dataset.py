"""Training images and prompts from the official dataset JSON (its format and validation:
protocols/dataset_json.py): image files -> tensors in [-1, 1], optionally held in memory."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from protocols.dataset_json import DatasetError, DatasetRecords


def load_image(path: Path, resolution: int | None = None) -> torch.Tensor:
    """RGB image -> float tensor (3, H, W) in [-1, 1]. Images are used as-is (the released
    code does not resize); a size mismatch with `resolution` is an error, not a silent resize."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    if resolution is not None and arr.shape[:2] != (resolution, resolution):
        raise DatasetError(f"image {str(path)!r} is {arr.shape[1]}x{arr.shape[0]}, expected {resolution}x{resolution}")
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


class ImageTextDataset(Dataset):
    """(image in [-1,1], prompt) pairs; `in_memory=True` decodes every image once up front."""

    def __init__(self, records: DatasetRecords, resolution: int | None = None, in_memory: bool = False):
        self.records = records
        self.resolution = resolution
        self._cache = torch.stack([load_image(p, resolution) for p in records.image_paths]) if in_memory else None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        img = self._cache[i] if self._cache is not None else load_image(self.records.image_paths[i], self.resolution)
        return img, self.records.prompts[i]

    @property
    def images(self) -> torch.Tensor:
        if self._cache is None:
            raise RuntimeError("images are only held in memory with in_memory=True")
        return self._cache
