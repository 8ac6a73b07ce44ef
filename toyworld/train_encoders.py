"""Second command of the `teacher` stage: train the toy CLIP and the toy DINOv2 on ToyWorld.

    python -m toyworld.train_encoders [--params params.yaml] [--out models/toy] [--results results/teacher]
                                      [--steps-scale S]

The pieces, one module each: scenes and captions (toyworld.captions), rendered pools
(toyworld.scene_pool), the CLIP training (toyworld.clip_training), the DINOv2 training
(toyworld.dinov2_training), the held-out evaluation (toyworld.encoder_eval); this module renders,
trains, evaluates and saves.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from configs.cli import ArgumentParser, run_command
from configs.paths import writable_folder
from configs.params import section
from configs.schema import SCHEMA
from toyworld.encoders import build_tokenizer
from toyworld.clip_training import train_clip
from toyworld.dinov2_training import train_dinov2
from toyworld.encoder_eval import EVAL_BATCH, evaluate_clip, evaluate_dinov2
from toyworld.encoders import clip_image_processor, dinov2_image_processor
from toyworld.scene_pool import ScenePool, render_pool

DEFAULTS = SCHEMA["encoders"].plain_defaults()  # keys, defaults and rules: configs/schema.py


def _save_folder(folder: Path, *objects) -> None:
    """save_pretrained every object into a temp folder, then swap it in (atomic for readers)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for obj in objects:
        obj.save_pretrained(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def scale_work(p: dict, scale: float) -> dict:
    """Steps, warm-ups, pool and evaluation sizes times `scale` (smoke tests), at least one batch."""
    q = dict(p)
    for k in ("clip_steps", "dinov2_steps", "clip_warmup", "dinov2_warmup"):
        q[k] = max(1, round(p[k] * scale))
    q["images"] = max(p["clip_batch_size"], p["dinov2_batch_size"], round(p["images"] * scale))
    q["eval_batches"] = max(1, round(p["eval_batches"] * scale))
    q["eval_swaps"] = max(2, round(p["eval_swaps"] * scale))
    return q


def train_encoders(p: dict, out: Path, results: Path) -> dict:
    """Render, train both encoders, evaluate, save `<out>/clip`, `<out>/dinov2` and
    `<results>/encoders.json`; returns the report."""
    if p["images"] < max(p["clip_batch_size"], p["dinov2_batch_size"]):
        raise ValueError(f"encoders.images ({p['images']}) must be at least the batch sizes")
    torch.set_num_threads(int(p["threads"]))
    t0 = time.time()
    n_eval = p["eval_batches"] * EVAL_BATCH
    pool = render_pool(p["images"], p["seed"], 0, p["grammar_fraction"], workers=p["threads"], desc="render train")
    eval_pool = render_pool(n_eval, p["seed"], 1, p["grammar_fraction"], held_out=True, workers=p["threads"],
                            desc="render eval")
    prompt_pool = render_pool(n_eval, p["seed"], 2, 1.0, held_out=True, workers=p["threads"], desc="render prompts")
    timing = {"render_s": time.time() - t0}

    t = time.time()
    tokenizer = build_tokenizer()
    clip = train_clip(p, pool, tokenizer)
    timing["clip_s"] = time.time() - t
    t = time.time()
    dinov2, head = train_dinov2(p, pool)
    timing["dinov2_s"] = time.time() - t
    timing["train_total_s"] = time.time() - t0

    t = time.time()
    both = ScenePool(torch.cat([eval_pool.images, prompt_pool.images]), eval_pool.scenes + prompt_pool.scenes,
                     eval_pool.specs + prompt_pool.specs, np.concatenate([eval_pool.labels, prompt_pool.labels]))
    report = {"clip": evaluate_clip(clip, tokenizer, p, eval_pool, prompt_pool),
              "dinov2": evaluate_dinov2(dinov2, head, both)}
    timing["eval_s"] = time.time() - t
    report["timing"] = {k: round(v, 1) for k, v in timing.items()}
    report["train"] = {"seed": p["seed"], "threads": p["threads"], "images": p["images"], "clip_steps": p["clip_steps"],
                       "clip_batch_size": p["clip_batch_size"], "dinov2_steps": p["dinov2_steps"],
                       "dinov2_batch_size": p["dinov2_batch_size"]}

    out.mkdir(parents=True, exist_ok=True)
    _save_folder(out / "clip", clip, tokenizer, clip_image_processor())
    _save_folder(out / "dinov2", dinov2, dinov2_image_processor())
    results.mkdir(parents=True, exist_ok=True)
    tmp = results / "encoders.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(results / "encoders.json")
    return report


def main(argv=None) -> dict:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="models/toy", help="writes <out>/clip and <out>/dinov2")
    ap.add_argument("--results", default="results/teacher", help="writes <results>/encoders.json")
    ap.add_argument("--steps-scale", type=float, default=1.0,
                    help="multiply steps, pool and evaluation sizes (e.g. 0.01 for a smoke test)")
    args = ap.parse_args(argv)
    writable_folder(args.out, "the encoder folder", "--out")  # checked before any work
    writable_folder(args.results, "the encoder results folder", "--results")  # checked before any work
    p = section("encoders", args.params)
    if args.steps_scale <= 0:
        ap.error("--steps-scale must be positive")
    if args.steps_scale != 1.0:
        p = scale_work(p, args.steps_scale)
    report = train_encoders(p, Path(args.out), Path(args.results))
    print(json.dumps({k: report[k] for k in ("clip", "dinov2", "timing")}, indent=2))
    return report


if __name__ == "__main__":
    run_command(main)
