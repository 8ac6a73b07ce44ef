"""Generate GenEval images in the official layout and score them with the official rules.

Layout under --out:
  images/<index:05d>/metadata.jsonl         the prompt's metadata (one JSON object, as the official script)
  images/<index:05d>/samples/<k:05d>.png    `images_per_prompt` samples (official naming)
  images/generation.json                    generation settings (resume check)
  results.jsonl                             per image, the official evaluate_images.py record
  summary.json, summary.txt                 numbers, and the official summary printout
  provenance.json                           protocols/provenance.py's record (its id in summary.json)
Per-image seed: `seed + 1000 * index + k`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps
from tqdm import tqdm

from benchmarks.geneval.detectors import Mask2FormerDetector, OracleDetector
from benchmarks.geneval.metadata import MetadataError, read_metadata, toy_metadata, validate
from protocols.geneval_rules import evaluate, filter_detections
from benchmarks.geneval.summary import summarize
from configs.params import ParamsError
from configs.schema import SCHEMA
from protocols.paper_protocol import GENEVAL_PROMPTS
from protocols.provenance import model_hashes, prompt_set_hash, provenance
from evaluate.sampling import render_missing, reset_folder

DEFAULTS = SCHEMA["benchmarks"].defaults["geneval"].plain_defaults()  # configs/schema.py


def layout_jobs(metadatas: list[dict], cfg: dict, images: Path) -> list[tuple[Path, str, int]]:
    """The official layout's folders and metadata under `images`, and its (png path, prompt, seed) jobs in
    order: `images_per_prompt` per prompt, seed `seed + 1000 * index + k`."""
    jobs = []
    for index, meta in enumerate(metadatas):
        folder = images / f"{index:0>5}"
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        (folder / "metadata.jsonl").write_text(json.dumps(meta))
        jobs += [(folder / "samples" / f"{k:05}.png", meta["prompt"], int(cfg["seed"]) + 1000 * index + k)
                 for k in range(int(cfg["images_per_prompt"]))]
    return jobs


def write_layout(gen, metadatas: list[dict], cfg: dict, images: Path, settings: dict) -> None:
    reset_folder(images, settings, "geneval")
    render_missing(gen, layout_jobs(metadatas, cfg, images), int(cfg["batch_size"]), "geneval images")


def scan_layout(images: Path) -> list[tuple[Path, dict]]:
    """(image path, metadata) for every `<digits>/samples/<digits>.png`, as evaluate_images.py walks it."""
    if not images.is_dir():
        raise MetadataError(f"GenEval image folder {str(images)!r} does not exist")
    out = []
    for sub in sorted(p for p in images.iterdir() if p.is_dir() and p.name.isdigit()):
        meta_file = sub / "metadata.jsonl"
        if not meta_file.is_file():
            raise MetadataError(f"{str(sub)!r} has no metadata.jsonl (not the official GenEval layout)")
        try:
            meta = validate(json.loads(meta_file.read_text()), str(meta_file))
        except json.JSONDecodeError as e:
            raise MetadataError(f"{str(meta_file)!r}: invalid JSON ({e})") from None
        for img in sorted((sub / "samples").glob("*.png")):
            if re.match(r"\d+\.png", img.name):
                out.append((img, meta))
    if not out:
        raise MetadataError(f"no images in the GenEval layout under {str(images)!r}")
    return out


def score_layout(detector, images: Path) -> pd.DataFrame:
    rows = []
    for path, meta in tqdm(scan_layout(images), desc="geneval scoring", unit="image"):
        image = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
        kept = filter_detections(detector.candidates(image), meta["tag"])
        correct, reason = evaluate(kept, meta, detector.color_fn(image), detector.texture_fn(image))
        rows.append({"filename": str(path), "tag": meta["tag"], "prompt": meta["prompt"], "correct": bool(correct),
                     "reason": reason, "metadata": json.dumps(meta),
                     "details": json.dumps({k: [list(map(float, o.box[:4])) + [float(o.score)] for o in v]
                                            for k, v in kept.items()})})
    return pd.DataFrame(rows)


def official_metadata(cfg: dict) -> list[dict]:
    """The official edition's prompts: the metadata file (default: GenEval's 553), or its declared subset
    (`subset.prompts`: the first k prompts of every task, in file order); a file with fewer than 553
    prompts is refused unless a subset is declared."""
    metadatas = read_metadata(cfg["metadata"]) if cfg["metadata"] else read_metadata()
    per_task = (cfg.get("subset") or {}).get("prompts")
    if per_task:
        seen: dict[str, int] = {}
        kept = []
        for meta in metadatas:
            seen[meta["tag"]] = seen.get(meta["tag"], 0) + 1
            if seen[meta["tag"]] <= int(per_task):
                kept.append(meta)
        return kept
    if len(metadatas) < GENEVAL_PROMPTS:
        raise ParamsError(f"benchmarks.geneval.metadata has {len(metadatas)} prompts, the official set {GENEVAL_PROMPTS}: "
                          f"use the official file (metadata: null), or declare benchmarks.geneval.subset: {{prompts: k}} "
                          f"(k per task) to run a subset that is labelled as one")
    return metadatas


def run_geneval(gen, cfg: dict, out: Path, models: dict, generator_info: dict) -> dict:
    cfg = {**DEFAULTS, **cfg}
    if cfg["edition"] == "toy":
        detector, metadatas = OracleDetector(), toy_metadata(int(cfg["prompts_per_task"]), int(cfg["seed"]))
    else:
        detector = Mask2FormerDetector(models)  # missing weights: error before any generation
        metadatas = official_metadata(cfg)
    out = Path(out)
    settings = {"generator": generator_info, "edition": cfg["edition"], "seed": cfg["seed"],
                "images_per_prompt": cfg["images_per_prompt"], "prompts": [m["prompt"] for m in metadatas]}
    write_layout(gen, metadatas, cfg, out / "images", settings)
    results = score_layout(detector, out / "images")
    with open(out / "results.jsonl", "w") as fp:
        results.to_json(fp, orient="records", lines=True)
    summary, text = summarize(results)
    summary.update({"edition": cfg["edition"], "detector": detector.name, "generator": generator_info,
                    "images_per_prompt": cfg["images_per_prompt"], "protocol": cfg.get("protocol", "custom"),
                    "subset": cfg.get("subset") or {}})
    record = provenance(
        n_images=summary.get("n_images"), prompt_set={"n": len(metadatas), "sha256": prompt_set_hash(
            [m["prompt"] for m in metadatas])}, generator=generator_info, detector=detector.name,
        edition=cfg["edition"], protocol=summary["protocol"], subset=summary["subset"],
        models=model_hashes({k: models.get(k) for k in ("geneval_detector", "geneval_clip")}
                            if cfg["edition"] == "official" else {}))
    summary["provenance_id"] = record["id"]  # the record itself: provenance.json (not a DVC metric)
    (out / "provenance.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.txt").write_text(text)
    return summary


__all__ = ["DEFAULTS", "layout_jobs", "run_geneval", "scan_layout", "score_layout", "write_layout"]
