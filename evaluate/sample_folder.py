"""A folder of generated samples: `<folder>/<prompt_index>/<k>.png` plus `samples.jsonl` (one row
per image: prompt_index, k, prompt, seed, steps, sampler, guidance_scale, group). Reading validates
it, with one clear error before any metric work."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from configs.cli import UserError


class SampleFolderError(UserError, ValueError):
    """A samples folder that cannot be scored."""


@dataclass
class Samples:
    folder: Path
    rows: list[dict]                 # samples.jsonl rows, in file order

    def paths(self) -> list[Path]:
        return [self.folder / str(r["prompt_index"]) / f"{r['k']}.png" for r in self.rows]

    def key(self) -> list[tuple]:
        """What must match between teacher and student sets (prompt, seed per image)."""
        return [(r["prompt_index"], r["k"], r["prompt"], r["seed"]) for r in self.rows]

    def group(self, name: str) -> list[int]:
        return [i for i, r in enumerate(self.rows) if r.get("group") == name]

    def verify(self) -> tuple[int, int]:
        """Every listed image opens as a complete image of one size (PIL's header + integrity check,
        no full decode), so a broken file stops the command before any metric runs; returns (W, H)."""
        size = None
        for path in self.paths():
            try:
                with Image.open(path) as im:
                    im.verify()
                    here = im.size
            except (OSError, UnidentifiedImageError, SyntaxError) as e:
                raise SampleFolderError(f"unreadable image ({path}): {e}; regenerate the folder "
                                        f"{str(self.folder)!r}") from None
            if size is not None and here != size:
                raise SampleFolderError(f"image of another size ({path}): {here[0]}x{here[1]}, earlier images "
                                        f"{size[0]}x{size[1]}; regenerate the folder {str(self.folder)!r}")
            size = here
        return size

    def load(self, indices: list[int] | None = None) -> np.ndarray:
        """(N, H, W, 3) uint8; every image readable and of one size."""
        paths = self.paths()
        chosen = range(len(paths)) if indices is None else indices
        arrays, size = [], None
        for i in chosen:
            try:
                with Image.open(paths[i]) as im:
                    arr = np.asarray(im.convert("RGB"))
            except (OSError, UnidentifiedImageError) as e:
                raise SampleFolderError(f"unreadable image {str(paths[i])!r}: {e}") from None
            if size is None:
                size = arr.shape
            elif arr.shape != size:
                raise SampleFolderError(f"mixed image sizes in {str(self.folder)!r}: {paths[i].name} is "
                                        f"{arr.shape[1]}x{arr.shape[0]}, earlier images {size[1]}x{size[0]}")
            arrays.append(arr)
        return np.stack(arrays) if arrays else np.zeros((0, 0, 0, 3), np.uint8)


def read_samples(folder: str | Path) -> Samples:
    folder = Path(folder)
    jsonl = folder / "samples.jsonl"
    if not folder.is_dir():
        raise SampleFolderError(f"the samples folder does not exist ({folder}): run the generate stage or point at "
                                f"a folder evaluate.generate wrote")
    if not jsonl.is_file():
        raise SampleFolderError(f"the samples folder has no samples.jsonl ({folder}): the generation did not finish; "
                                f"rerun evaluate.generate into it (it continues)")
    rows = []
    for n, line in enumerate(jsonl.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row["prompt_index"], row["k"] = int(row["prompt_index"]), int(row["k"])
            row["prompt"], row["seed"] = str(row["prompt"]), int(row["seed"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise SampleFolderError(f"samples.jsonl has an invalid row ({jsonl}, line {n}: {e}): regenerate the "
                                    f"folder") from None
        rows.append(row)
    if not rows:
        raise SampleFolderError(f"the samples folder lists no image ({jsonl}): regenerate the folder")
    samples = Samples(folder, rows)
    missing = [p for p in samples.paths() if not p.is_file()]
    if missing:
        raise SampleFolderError(f"{len(missing)} listed image(s) are missing ({missing[0]} and others listed in "
                                f"{jsonl}): regenerate the folder")
    return samples


def check_aligned(student: Samples, teacher: Samples) -> None:
    """Teacher and student sets must hold the same prompts and seeds (aligned FID-T pairs)."""
    if student.key() != teacher.key():
        a, b = student.key(), teacher.key()
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        raise SampleFolderError(f"the samples and the reference do not hold the same prompts and seeds "
                                f"({student.folder} vs {teacher.folder}: {len(a)} vs {len(b)} images, first "
                                f"difference at row {first}): regenerate both with the same eval params")


__all__ = ["SampleFolderError", "Samples", "read_samples", "check_aligned"]
