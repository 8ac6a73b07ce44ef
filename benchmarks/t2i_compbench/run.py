"""Generate T2I-CompBench images for a teacher or student and score them per category.

Layout under --out (DVC declares images/ as an out and summary.json as a metric):
  images/<category>/samples/<prompt>_<NNNNNN>.png   the official naming (running counter per category)
  images/generation.json                            the generation settings (resume check)
  scores/<category>/vqa_result.json                 official per-image answers [{"question_id", "answer"}]
  per_prompt.csv                                    category, prompt, images, mean score
  summary.json                                      {"compbench_<category>": score, ...} + edition, judge, counts
  provenance.json                                   protocols/provenance.py's record (id in summary.json)
Per-image seeds as the official generation (GORS_finetune/inference_eval.py): every prompt's images use
seeds `seed`, `seed` + 1, ... (42..51 for its 10 images); the file counter runs over the category.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from benchmarks.t2i_compbench.judges import OfficialJudge, OracleJudge
from benchmarks.t2i_compbench.prompts import CATEGORIES, CompPrompt, complex_subsets, official_prompts, toy_prompts
from configs.schema import SCHEMA
from protocols.provenance import model_hashes, prompt_set_hash, provenance
from evaluate.sampling import render_missing, reset_folder
from benchmarks.t2i_compbench.scoring import (attribute_image_score, blip_answer, category_score, complex_kind,
                                              spatial_image_score, spatial_relation, three_in_one)

DEFAULTS = SCHEMA["benchmarks"].defaults["compbench"].plain_defaults()  # configs/schema.py
BLIP_CATEGORIES = ("color", "shape", "texture")


# counts when params leave them null; toy: 16 prompts x 8 images (non_spatial has 6 prompts: 48 images)
TOY_PROMPTS, TOY_IMAGES, OFFICIAL_IMAGES = 16, 8, 10


def images_per_prompt(cfg: dict) -> int:
    return int(cfg["images_per_prompt"] or (TOY_IMAGES if cfg["edition"] == "toy" else OFFICIAL_IMAGES))


def prompts_for(cfg: dict) -> list[CompPrompt]:
    out = []
    for cat in cfg["categories"]:
        if cfg["edition"] == "toy":
            out += toy_prompts(cat, int(cfg["prompts_per_category"] or TOY_PROMPTS), int(cfg["seed"]))
        else:
            out += official_prompts(cat, limit=cfg.get("prompts_per_category"))
    return out


def image_plan(prompts: list[CompPrompt], per_prompt: int) -> list[tuple[CompPrompt, int, str]]:
    """(prompt, counter, file name) per image; the counter runs over the whole category."""
    plan, counters = [], {}
    for p in prompts:
        for _ in range(per_prompt):
            n = counters.get(p.category, 0)
            counters[p.category] = n + 1
            plan.append((p, n, f"{p.prompt}_{n:06d}.png"))
    return plan


def generate_images(gen, cfg: dict, plan, images: Path, settings: dict) -> None:
    """Write missing images (resumable); a folder written under other settings is cleared first."""
    reset_folder(images, settings, "compbench")
    jobs, k, previous = [], 0, None
    for p, _, name in plan:  # the official seeds: seed + k for the k-th image of every prompt (42..51)
        k = k + 1 if p is previous else 0
        previous = p
        jobs.append((images / p.category / "samples" / name, p.prompt, int(cfg["seed"]) + k))
    render_missing(gen, jobs, int(cfg["batch_size"]), "compbench images")


def score_images(judge, plan, images: Path, edition: str) -> tuple[dict[str, list], pd.DataFrame]:
    """Per category the official answers (question_id = running counter) and a per-image frame."""
    spatial_set, action_set = complex_subsets() if edition == "official" else (set(), set())
    answers: dict[str, list] = {}
    rows = []
    for p, n, name in tqdm(plan, desc="compbench scoring", unit="image"):
        img = np.asarray(Image.open(images / p.category / "samples" / name).convert("RGB"))
        if p.category in BLIP_CATEGORIES:
            score = attribute_image_score(judge.attribute_probabilities(img, p.prompt, p.spec))
            answer = blip_answer(score)
        elif p.category == "spatial":
            det1, det2 = judge.spatial_detections(img, p.prompt, p.spec, False)
            answer = score = spatial_image_score(spatial_relation(p.prompt), det1, det2)
        elif p.category == "non_spatial":
            answer = score = judge.action_score(img, p.prompt, p.spec, False)
        else:  # complex: the 3-in-1 combination of the three scorers (each run in its complex mode)
            kind = complex_kind(p.prompt, spatial_set, action_set) if edition == "official" else "spatial"
            attribute = float(blip_answer(attribute_image_score(judge.attribute_probabilities(img, p.prompt, p.spec))))
            spatial = action = None
            if kind in ("spatial", "both"):
                spatial = spatial_image_score(spatial_relation(p.prompt),
                                              *judge.spatial_detections(img, p.prompt, p.spec, True))
            if kind in ("action", "both"):
                action = judge.action_score(img, p.prompt, p.spec, True)
            answer = score = three_in_one(kind, attribute, spatial, action)
        answers.setdefault(p.category, []).append({"question_id": n, "answer": answer})
        rows.append({"category": p.category, "prompt": p.prompt, "question_id": n, "score": float(score)})
    return answers, pd.DataFrame(rows)


def run_compbench(gen, cfg: dict, out: Path, models: dict, generator_info: dict) -> dict:
    cfg = {**DEFAULTS, **cfg}
    unknown = [c for c in cfg["categories"] if c not in CATEGORIES]
    if unknown:
        raise ValueError(f"unknown T2I-CompBench categories {unknown}; known: {', '.join(CATEGORIES)}")
    judge = OracleJudge() if cfg["edition"] == "toy" else \
        OfficialJudge(models, threshold=cfg.get("detector_threshold"))  # missing models: error before work
    prompts = prompts_for(cfg)
    n_images = images_per_prompt(cfg)
    plan = image_plan(prompts, n_images)
    out = Path(out)
    settings = {"generator": generator_info, "edition": cfg["edition"], "seed": cfg["seed"], "seeding": "per prompt",
                "images_per_prompt": n_images, "prompts": [p.prompt for p in prompts]}
    generate_images(gen, cfg, plan, out / "images", settings)
    answers, frame = score_images(judge, plan, out / "images", cfg["edition"])
    summary = {f"compbench_{cat}": category_score([a["answer"] for a in answers[cat]]) for cat in cfg["categories"]}
    for cat, rows in answers.items():
        (out / "scores" / cat).mkdir(parents=True, exist_ok=True)
        (out / "scores" / cat / "vqa_result.json").write_text(json.dumps(rows))
    per_prompt = frame.groupby(["category", "prompt"], sort=False).agg(images=("score", "size"),
                                                                        score=("score", "mean")).reset_index()
    per_prompt.to_csv(out / "per_prompt.csv", index=False)
    summary.update({"n_images": len(plan), "n_prompts": len(prompts), "edition": cfg["edition"], "judge": judge.name,
                    "images_per_prompt": n_images, "seeds": f"{cfg['seed']}..{int(cfg['seed']) + n_images - 1} per prompt",
                    "protocol": cfg.get("protocol", "custom"), "subset": cfg.get("subset") or {},
                    "generator": generator_info})
    record = provenance(
        n_images=len(plan), prompt_set={"n": len(prompts), "sha256": prompt_set_hash([p.prompt for p in prompts])},
        generator=generator_info, judge=judge.name, edition=cfg["edition"], seeds=summary["seeds"],
        protocol=summary["protocol"], subset=summary["subset"],
        models=model_hashes({k: models.get(k) for k in ("compbench_blip_vqa", "compbench_detector", "compbench_spacy",
                                                        "clip_vit_b32")} if cfg["edition"] == "official" else {}))
    summary["provenance_id"] = record["id"]  # the record itself: provenance.json (not a DVC metric)
    (out / "provenance.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


__all__ = ["DEFAULTS", "run_compbench", "image_plan", "prompts_for", "score_images"]
