"""`reference` stage: the features of the reference image sets, computed once and reused by every
variant's metrics stage (FID-T, Patch FID-T, KID-T and the FD-T variants compare against the teacher's
samples; `fid` against real images).

    python -m evaluate.reference_features [--params params.yaml] [--family toy]
                                          [--reference results/samples/teacher] [--out results/reference]

Per reference set and feature extractor one file `<out>/<set>-<extractor>-<key>.npz` (`features`
(N, D), the rows' `prompts`), where `key` is the first 16 hex of the sha256 of what produced them:
the set's own record (the teacher samples' generation.json and samples.jsonl; the real set's
listing) and the extractor's weights (sha256) and mode. The metrics stage looks a set up by that key
and computes the features itself when no file matches (a stale file is never used). Sets:
  teacher   the teacher's samples (the "fid" group)
  real      real images for `fid` (`eval.real_images`: a COCO-5K coco5k.jsonl from `python -m
            evaluate.coco5k`, whose images folder its provenance.json names, or a folder of images),
            the first N rows, N = the student's "fid" group (COCO-5K rows are aligned with its prompts)
Extractors: inception (clean-fid's clean mode), inception_patch (299 px centre crops), toy_clip,
dinov2; those whose weights are absent are skipped with the reason.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from configs.cli import ArgumentParser, UserError, run_command
from configs.params import load_params
from configs.paths import writable_folder
from protocols.provenance import model_hashes

# metric -> (reference set, extractor) it compares against
METRIC_REFERENCE = {"fid_t": ("teacher", "inception"), "kid_t": ("teacher", "inception"),
                    "patch_fid_t": ("teacher", "inception_patch"), "fd_t_toyworld": ("teacher", "toy_clip"),
                    "fd_t_dinov2": ("teacher", "dinov2"), "fid": ("real", "inception")}
WEIGHT_KEY = {"inception": "inception", "inception_patch": "inception", "toy_clip": "toy_clip", "dinov2": "dinov2"}


class RealImagesError(UserError, ValueError):
    """The real reference images (`eval.real_images`) cannot be read."""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def weights_id(models: dict, extractor: str) -> str | None:
    """sha256 over the extractor's weight files (None when the weights are not set or absent); the file
    hashes come from protocols/provenance.py's disk cache, so multi-GB weights are read once, not per stage."""
    path = models.get(WEIGHT_KEY[extractor])
    if not path or not Path(path).exists():
        return None
    files = model_hashes({"weights": path})["weights"]["files"]  # {path relative to the folder: sha256}
    return _sha("".join(f"{name}:{digest}" for name, digest in files.items()))


def extractor_key(models: dict, extractor: str) -> str | None:
    wid = weights_id(models, extractor)
    return None if wid is None else _sha(f"{extractor}:{wid}")


def teacher_set_key(folder: str | Path) -> str:
    """What defines the teacher's samples: their generation record and rows (prompts, seeds)."""
    folder = Path(folder)
    parts = [(folder / name).read_text() if (folder / name).is_file() else "" for name in
             ("generation.json", "samples.jsonl")]
    return _sha("\n".join(parts))


def real_images(spec: str | Path, n: int) -> tuple[list[Path], str]:
    """(the first n real image paths, the set's key) of `eval.real_images`."""
    spec = Path(spec)
    if spec.is_file():  # coco5k.jsonl: file names relative to the images folder its provenance names
        provenance = spec.with_name("provenance.json")
        try:
            folder = Path(json.loads(provenance.read_text())["images"])
            rows = [json.loads(line) for line in spec.read_text().splitlines() if line.strip()]
            paths = [folder / r["file_name"] for r in rows]
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise RealImagesError(f"eval.real_images {str(spec)!r}: need coco5k.jsonl with its provenance.json beside "
                                  f"it (python -m evaluate.coco5k): {e}") from None
    elif spec.is_dir():
        paths = sorted(p for p in spec.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    else:
        raise RealImagesError(f"eval.real_images {str(spec)!r} does not exist: build COCO-5K with python -m "
                              f"evaluate.coco5k, or point it at a folder of images")
    if len(paths) < n:
        raise RealImagesError(f"eval.real_images has {len(paths)} images, the evaluation {n}: FID against real images "
                              f"needs at least as many real images as generated ones")
    missing = [p for p in paths[:n] if not p.is_file()]
    if missing:
        raise RealImagesError(f"{len(missing)} real images are missing (e.g. {missing[0]})")
    return paths[:n], _sha("\n".join(str(p) for p in paths[:n]) + spec.read_text() if spec.is_file() else
                           "\n".join(f"{p.name}:{p.stat().st_size}" for p in paths[:n]))


def load_real(paths: list[Path]) -> list[np.ndarray]:
    """RGB uint8 arrays at their own sizes (clean-fid resizes each to 299 itself)."""
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def cache_file(folder: str | Path, set_name: str, extractor: str, set_key: str, ext_key: str) -> Path:
    return Path(folder) / f"{set_name}-{extractor}-{_sha(set_key + ext_key)[:16]}.npz"


def load_cached(folder: str | Path | None, set_name: str, extractor: str, set_key: str,
                ext_key: str | None) -> np.ndarray | None:
    if folder is None or ext_key is None:
        return None
    path = cache_file(folder, set_name, extractor, set_key, ext_key)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return data["features"]


def save_cached(folder: str | Path, set_name: str, extractor: str, set_key: str, ext_key: str,
                features: np.ndarray) -> Path:
    path = cache_file(folder, set_name, extractor, set_key, ext_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, features=np.asarray(features))
    tmp.replace(path)
    return path


class ReferenceLookup:
    """The metrics stage's access to reference features: the `reference` stage's file when its key
    matches (what produced the images and the extractor's weights), else computed here. `used`
    records which came from a file, for the meta file."""

    def __init__(self, folder: str | Path | None, models: dict, teacher_folder: str | Path, real_spec=None):
        self.folder = Path(folder) if folder else None
        self.models, self.teacher_folder, self.real_spec = models, Path(teacher_folder), real_spec
        self._ext: dict[str, str | None] = {}
        self.used: dict[str, str] = {}

    def _ext_key(self, extractor: str) -> str | None:
        if extractor not in self._ext:
            self._ext[extractor] = extractor_key(self.models, extractor)
        return self._ext[extractor]

    def teacher(self, extractor: str, n: int, compute) -> np.ndarray:
        key = teacher_set_key(self.teacher_folder)
        cached = load_cached(self.folder, "teacher", extractor, key, self._ext_key(extractor))
        if cached is not None and len(cached) == n:
            self.used[f"teacher-{extractor}"] = "reference stage file"
            return cached
        self.used[f"teacher-{extractor}"] = "computed by this stage"
        return compute()

    def real(self, extractor: str, n: int, model, batch: int) -> np.ndarray:
        if not self.real_spec:
            raise ValueError("no real reference images: eval.real_images is not set (a COCO-5K coco5k.jsonl from "
                             "python -m evaluate.coco5k, or a folder of images)")
        paths, key = real_images(self.real_spec, n)
        cached = load_cached(self.folder, "real", extractor, key, self._ext_key(extractor))
        if cached is not None and len(cached) == n:
            self.used[f"real-{extractor}"] = "reference stage file"
            return cached
        self.used[f"real-{extractor}"] = "computed by this stage"
        return model(load_real(paths), batch)


def compute_references(params_path: str, reference: str, out: str, family: str = "toy", device: str = "cpu") -> dict:
    """Every (set, extractor) the configured metrics need, written to `out`; returns an index."""
    from evaluate.generate import eval_settings
    from evaluate.metrics import Skip, load_models
    from evaluate.sample_folder import read_samples
    from measures.weights import MissingWeights

    params = load_params(params_path)
    cfg = eval_settings(params)
    models = params.get("models") or {}
    out = writable_folder(out, "the reference features folder", "--out")
    teacher = read_samples(reference)
    teacher.verify()
    rows = teacher.group("fid")
    wanted = [m for m in cfg["metrics"] if m in METRIC_REFERENCE]
    if cfg.get("real_images") is None:
        wanted = [m for m in wanted if m != "fid"]
    loaded, skipped, _ = load_models(wanted, models, family, device, cfg["clip_score_scale"])
    index = {"files": {}, "skipped": dict(skipped)}
    out.mkdir(parents=True, exist_ok=True)
    done = set()
    for metric in wanted:
        if metric not in loaded:
            continue
        set_name, extractor = METRIC_REFERENCE[metric]
        if (set_name, extractor) in done:
            continue
        done.add((set_name, extractor))
        ext_key = extractor_key(models, extractor)
        if ext_key is None:
            continue
        model = loaded[metric]
        try:
            if set_name == "teacher":
                images, set_key = teacher.load(rows), teacher_set_key(reference)
            else:
                paths, set_key = real_images(cfg["real_images"], len(rows))
                images = load_real(paths)
            features = model.patches(images, int(cfg["batch_size_metrics"])) if extractor == "inception_patch" \
                else model(images, int(cfg["batch_size_metrics"]))
        except (Skip, MissingWeights, ValueError) as e:
            index["skipped"][f"{set_name}-{extractor}"] = str(e)
            continue
        path = save_cached(out, set_name, extractor, set_key, ext_key, features)
        index["files"][f"{set_name}-{extractor}"] = {"file": path.name, "n": int(len(features)),
                                                      "metrics": [m for m in wanted if METRIC_REFERENCE[m] ==
                                                                  (set_name, extractor)]}
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


def main(argv=None) -> dict:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--family", default="toy")
    ap.add_argument("--reference", default="results/samples/teacher")
    ap.add_argument("--out", default="results/reference")
    ap.add_argument("--device", default=None, help="default: cuda when available")
    args = ap.parse_args(argv)
    if args.device is None:
        import torch
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    index = compute_references(args.params, args.reference, args.out, args.family, args.device)
    print(f"reference features: {', '.join(index['files']) or 'none'} -> {args.out}"
          + (f"; skipped: {', '.join(index['skipped'])}" if index["skipped"] else ""))
    return index


if __name__ == "__main__":
    run_command(main)


__all__ = ["METRIC_REFERENCE", "RealImagesError", "ReferenceLookup", "compute_references", "teacher_set_key",
           "real_images", "load_cached", "save_cached", "extractor_key"]
