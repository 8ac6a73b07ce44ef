"""The official SenseFlow dataset JSON: {"keys": [...], "image_paths": [...], "prompts": [...]}
(three equal-length lists, absolute image paths). One reader serves ToyWorld and real data, one
writer serves the ToyWorld build and the tests.

Validation happens up front (`load_dataset_json`), so a bad file fails with one clear message
before any model is loaded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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
