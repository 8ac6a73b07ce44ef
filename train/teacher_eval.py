"""Grade the toy teacher with the oracle on a GenEval-style ToyWorld prompt set.

Per GenEval task: up to `prompts_per_task` prompts, half from the held-out split (never trained
on) where the task has one, `images_per_prompt` seeds each; the same noise for every sampler
setting. Accuracy per task is image-level (as GenEval's summary), overall = mean of the six
task accuracies ("task-balanced"). Written to <results>/metrics.json, per-image rows to
<results>/images.jsonl, and a sample grid per setting. `binding_gap` (train/binding_probe.py) says,
without sampling, whether the teacher reads word order at all.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from backbones.base import Backbone
from configs.schema import SCHEMA
from train.binding_probe import binding_gap
from protocols.images import save_grid, to_uint8
from toyworld.grading import grade
from toyworld.eval_prompts import eval_prompts
from toyworld.grammar import GENEVAL_TASKS
from toyworld.world import RESOLUTION

EVAL_DEFAULTS = SCHEMA["teacher"].defaults["eval"].plain_defaults()  # configs/schema.py
TARGETS = {"overall": 0.85, "position": 0.6}


@torch.no_grad()
def sample_images(bb: Backbone, prompts: list[str], noise: torch.Tensor, steps: int, guidance_scale: float,
                  batch_size: int, sampler: str = "euler") -> np.ndarray:
    out = []
    for i in range(0, len(prompts), batch_size):
        cond = bb.encode_prompts(prompts[i:i + batch_size])
        x0 = bb.sample(bb.denoiser, cond, noise[i:i + batch_size], steps, sampler=sampler, guidance_scale=guidance_scale)
        out.append(to_uint8(bb.decode(x0)))
    return np.concatenate(out)


def evaluate_teacher(bb: Backbone, cfg: dict, results: Path, extra: dict | None = None) -> dict:
    cfg = {**EVAL_DEFAULTS, **(cfg or {})}
    results.mkdir(parents=True, exist_ok=True)
    pairs = eval_prompts(cfg["prompts_per_task"], cfg["seed"])
    specs = [s for s, _ in pairs for _ in range(cfg["images_per_prompt"])]
    held = [h for _, h in pairs for _ in range(cfg["images_per_prompt"])]
    gen = torch.Generator().manual_seed(cfg["seed"])
    noise = torch.randn((len(specs),) + bb.latent_shape(RESOLUTION, RESOLUTION), generator=gen)
    settings = [("default", cfg["sample_steps"])] + [(f"euler_{n}", n) for n in cfg["few_steps"]]
    report: dict = {"prompt_set": {"tasks": list(GENEVAL_TASKS), "images": len(specs),
                                   "images_per_prompt": cfg["images_per_prompt"]},
                    "guidance_scale": cfg["guidance_scale"], "targets": TARGETS, **(extra or {})}
    rows = []
    for name, steps in tqdm(settings, desc="teacher eval", unit="setting"):
        imgs = sample_images(bb, [s.prompt for s in specs], noise, steps, cfg["guidance_scale"], cfg["batch_size"])
        per: dict[str, dict[str, list[bool]]] = {t: {"seen": [], "held_out": []} for t in GENEVAL_TASKS}
        for img, spec, h in zip(imgs, specs, held):
            ok, reason, _ = grade(img, spec)
            per[spec.tag]["held_out" if h else "seen"].append(ok)
            rows.append({"setting": name, "steps": steps, "tag": spec.tag, "prompt": spec.prompt, "held_out": h,
                         "correct": ok, "reason": reason})
        tasks = {}
        for t, d in per.items():
            allv = d["seen"] + d["held_out"]
            tasks[t] = {"accuracy": float(np.mean(allv)), "seen": float(np.mean(d["seen"])) if d["seen"] else None,
                        "held_out": float(np.mean(d["held_out"])) if d["held_out"] else None, "n": len(allv)}
        overall = float(np.mean([v["accuracy"] for v in tasks.values()]))
        report[name] = {"steps": steps, "sampler": "euler", "overall": overall, "tasks": tasks}
        first = [i for i in range(0, len(specs), cfg["images_per_prompt"] * 4)][:48]
        save_grid(imgs[first], results / "samples" / f"{name}.png", cols=8, scale=3)
    report["binding_gap"] = binding_gap(bb)  # 0 = the prompt is read as a bag of words (train/binding_probe.py)
    d = report["default"]
    report["targets_met"] = {"overall": d["overall"] >= TARGETS["overall"],
                             "position": d["tasks"]["position"]["accuracy"] >= TARGETS["position"]}
    (results / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    with open(results / "images.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    for name, _ in settings:
        r = report[name]
        print(f"{name:>8}: overall {r['overall']:.3f} | " +
              " ".join(f"{t} {v['accuracy']:.2f}" for t, v in r["tasks"].items()))
    print("binding loss gap: " + " ".join(f"{t} {g}" for t, g in report["binding_gap"].items() if isinstance(g, dict)))
    return report
