"""The official SenseFlow dataset JSON: {"keys": [...], "image_paths": [...], "prompts": [...]}
(three equal-length lists, absolute image paths). One loader serves ToyWorld and real data.

Validation happens up front (`load_dataset_json`), so a bad file fails with one clear message
before any model is loaded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from configs.cli import UserError


REQUIRED_KEYS = ("keys", "image_paths", "prompts")


class DatasetError(UserError, ValueError):
    """A malformed dataset JSON or a missing image (user-fixable)."""


@dataclass(frozen=True)
class DatasetRecords:
    keys: list[str]
    image_paths: list[Path]
    prompts: list[str]

    def __len__(self) -> int:
        return len(self.keys)


def load_dataset_json(path: str | Path, check_images: bool = True, key: str = "train.dataset") -> DatasetRecords:
    """The official SenseFlow dataset JSON ({"keys", "image_paths", "prompts"}: equal-length lists,
    absolute image paths), checked before any model loads; `key` is the setting that named the file."""
    path = Path(path)

    def bad(what: str, fix: str) -> DatasetError:
        return DatasetError(f"dataset JSON {what} ({key}: {path}): {fix}")

    if not path.is_file():
        raise bad("does not exist", "run `dvc repro toyworld` for the toy data, or point it at your own file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise bad(f"is not valid JSON ({e})", "fix the file or regenerate it") from None
    if not isinstance(data, dict):
        raise bad("is not an object", f"write an object with the keys {list(REQUIRED_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise bad(f"lacks {missing}", 'write {"keys": [...], "image_paths": [...], "prompts": [...]}')
    for k in REQUIRED_KEYS:
        if not isinstance(data[k], list):
            raise bad(f"has {k!r} that is not a list", f"make {k!r} a list with one entry per image")
    lengths = {k: len(data[k]) for k in REQUIRED_KEYS}
    if len(set(lengths.values())) != 1:
        raise bad(f"has lists of unequal lengths {lengths}", "give one key, image path and prompt per image")
    if lengths["keys"] == 0:
        raise bad("is empty", "list at least one image")
    bad_prompt = next((i for i, p in enumerate(data["prompts"]) if not isinstance(p, str)), None)
    if bad_prompt is not None:
        raise bad(f"has prompt #{bad_prompt} that is not text", "write every prompt as a string")
    paths = [Path(p) for p in data["image_paths"]]
    rel = next((p for p in paths if not p.is_absolute()), None)
    if rel is not None:
        raise bad(f"has a relative image path {str(rel)!r}", "write absolute image paths")
    if check_images:
        absent = [p for p in paths if not p.is_file()]
        if absent:
            raise bad(f"lists {len(absent)} missing image(s), first {str(absent[0])!r}",
                      "regenerate the data or fix the paths")
    return DatasetRecords([str(k) for k in data["keys"]], paths, list(data["prompts"]))


def write_dataset_json(path: str | Path, keys: list[str], image_paths: list[Path], prompts: list[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"keys": list(keys), "image_paths": [str(Path(p).resolve()) for p in image_paths],
                               "prompts": list(prompts)}))
    tmp.replace(path)
    return path


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
