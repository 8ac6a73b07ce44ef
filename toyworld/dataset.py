"""Write ToyWorld (image, prompt) pairs as PNGs plus the official SenseFlow dataset JSON."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from toyworld.grammar import sample_scene, sample_spec
from toyworld.render import render
from protocols.dataset_json import write_dataset_json


def write_toy_dataset(out_dir: str | Path, size: int, seed: int, task_weights: dict[str, float],
                      held_out: bool = False) -> Path:
    """Renders `size` pairs into `<out_dir>/images/<key>.png`, the official `dataset.json`, and
    `specs.jsonl` (one GenEval-style metadata + scene line per key, for grading and debugging).
    Deterministic in (size, seed, task_weights, held_out). Training data never contains a
    held-out prompt."""
    out_dir = Path(out_dir).resolve()
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    keys, paths, prompts = [], [], []
    with open(out_dir / "specs.jsonl", "w") as specs:
        for i in tqdm(range(size), desc=f"rendering {out_dir.name}", unit="img", mininterval=2.0):
            spec = sample_spec(rng, task_weights, held_out=held_out)
            scene = sample_scene(spec, rng)
            key = f"{i:08d}"
            path = img_dir / f"{key}.png"
            Image.fromarray(render(scene)).save(path)
            keys.append(key)
            paths.append(path)
            prompts.append(spec.prompt)
            specs.write(json.dumps({"key": key, "metadata": spec.to_metadata(), "scene": scene.to_dict()}) + "\n")
    return write_dataset_json(out_dir / "dataset.json", keys, paths, prompts)


def read_tags(out_dir: str | Path) -> dict[str, str]:
    """key -> prompt family (`metadata.tag`: a GenEval task or CompBench category) of a dataset
    written by `write_toy_dataset`, from its specs.jsonl."""
    path = Path(out_dir) / "specs.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the prompt families of a ToyWorld dataset are read from "
                                f"the specs.jsonl `write_toy_dataset` writes beside its dataset.json (`dvc repro toyworld`)")
    with open(path) as f:
        return {(r := json.loads(line))["key"]: r["metadata"]["tag"] for line in f if line.strip()}
