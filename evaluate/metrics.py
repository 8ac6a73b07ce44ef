"""`metrics` stage: the paper's metric suite on one variant's samples against the teacher's.

    python -m evaluate.metrics [--params params.yaml] [--family toy] --samples results/samples/<v>
                               --reference results/samples/teacher --out results/metrics/<v>

Writes `<out>/metrics.json` ({metric: value or null}) and `<out>/metrics.meta.json` (skipped metrics
with their reason, image counts, model paths, feature extractors, seeds). Metrics (params
`eval.metrics`; names fixed by DESIGN.md):

  fid_t, patch_fid_t   Inception (clean-fid), vs the teacher's "fid" group     measures/frechet.py
  kid_t                clean-fid's KID on the same Inception features          measures/frechet.py
  fd_t_toyworld        FD in the toy CLIP's image-feature space (toy family)    measures/frechet.py
  fd_t_dinov2          FD in DINOv2 CLS space (models.dinov2)                   measures/frechet.py
  clip_score           cosine (eval.clip_score_scale; torchmetrics: x 100); ViT-B/32 or the toy CLIP
                                                                                measures/clip_score.py
  hpsv2, pickscore, imagereward, aesv2   reward models (evaluate/<name>.py `load_scorer`)
  lpips_diversity, clip_diversity        App. B.5 on the "diversity" group      evaluate/diversity.py

Every model is loaded before any metric is computed. On the toy family a metric whose real weights
are absent is skipped with the reason (null in metrics.json); on a real family it stops the stage
with the MissingWeights message. Nothing is ever computed on random weights.

metrics.json also has `flags`: {metric: why it is not comparable with published values}, e.g. FID-T,
Patch FID-T and KID over fewer than 2,048 images (measures/frechet.py COMPARABLE_N); the report and
the dashboard show them. The Inception features of the student and of the teacher are extracted once
and shared by fid_t and kid_t.
"""
from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from configs.cli import ArgumentParser, run_command
from configs.params import ParamsError, load_params
from configs.paths import writable_folder
from evaluate.diversity import LpipsDiversity, clip_diversity
from measures.frechet import Dinov2Features, InceptionFeatures, comparability
from measures.clip_score import ClipScorer
from evaluate.generate import eval_settings
from evaluate.intervals import LEVEL, MetricSample, save_samples
from evaluate.reference_features import METRIC_REFERENCE, ReferenceLookup
from evaluate.sample_folder import check_aligned, read_samples
from measures.weights import MissingWeights, model_path
from configs.schema import MODEL_KEYS
from protocols.provenance import model_hashes, prompt_set_hash, provenance

KNOWN = ["fid_t", "patch_fid_t", "kid_t", "fid", "fd_t_toyworld", "fd_t_dinov2", "clip_score", "hpsv2", "pickscore",
         "imagereward", "aesv2", "lpips_diversity", "clip_diversity"]
REWARDS = {"hpsv2": "evaluate.hpsv2", "pickscore": "evaluate.pickscore", "imagereward": "evaluate.imagereward",
           "aesv2": "evaluate.aesthetic"}
CLIP_B32_SOURCE = "https://huggingface.co/openai/clip-vit-base-patch32 (saved with save_pretrained)"


class Skip(Exception):
    """A metric that cannot run here, with the reason recorded in the meta file."""


def clip_model_path(models: dict, family: str) -> tuple[Path, str]:
    if family == "toy":
        return model_path(models, "toy_clip", "the toy CLIP", "the shipped models/toy/clip", "dir"), "toy CLIP"
    return model_path(models, "clip_vit_b32", "CLIP ViT-B/32", CLIP_B32_SOURCE, "dir"), "CLIP ViT-B/32"


def load_models(metrics: list[str], models: dict, family: str, device: str,
                clip_scale: str = "cosine") -> tuple[dict, dict, dict]:
    """(loaded, skipped reasons, descriptions). Real families: MissingWeights propagates."""
    loaded, skipped, described = {}, {}, {}
    clip_models: dict[Path, ClipScorer] = {}  # one CLIP per folder (toy: FD-T, CLIP score, diversity)

    def clip_at(path: Path) -> ClipScorer:
        if path not in clip_models:
            clip_models[path] = ClipScorer(path, device, scale=clip_scale)
        return clip_models[path]

    def attempt(name: str, build):
        try:
            loaded[name] = build()
        except MissingWeights as e:
            if family != "toy":
                raise
            skipped[name] = e.reason
        except Skip as e:
            skipped[name] = str(e)

    for name in metrics:
        if name in ("fid_t", "patch_fid_t", "kid_t", "fid"):
            attempt(name, lambda: loaded.get("fid_t") or loaded.get("patch_fid_t") or loaded.get("kid_t")
                    or loaded.get("fid") or InceptionFeatures(models, device))
            described[name] = "Inception-v3 (clean-fid TorchScript, clean resize)" + (
                "; centre 299x299 crop at native resolution" if name == "patch_fid_t" else
                "; KID: clean-fid kernel_distance, 100 subsets of min(N, 1000), seed 0" if name == "kid_t" else
                "; against real images (eval.real_images)" if name == "fid" else "")
        elif name == "fd_t_toyworld":
            def toy():
                if family != "toy":
                    raise Skip("ToyWorld features apply to the toy family only")
                return clip_at(model_path(models, "toy_clip", "the toy CLIP", "models/toy/clip", "dir"))
            attempt(name, toy)
            described[name] = "toy CLIP projected image features (models.toy_clip)"
        elif name == "fd_t_dinov2":
            attempt(name, lambda: Dinov2Features(model_path(
                models, "dinov2", "DINOv2 (transformers Dinov2Model folder)",
                "https://huggingface.co/facebook/dinov2-base (saved with save_pretrained)", "dir"), device))
            described[name] = "DINOv2 CLS token (models.dinov2)"
        elif name in ("clip_score", "clip_diversity"):
            def clip():
                path, label = clip_model_path(models, family)
                described["clip"] = f"{label} ({path})"
                return clip_at(path)
            attempt(name, clip)
        elif name == "lpips_diversity":
            attempt(name, lambda: LpipsDiversity(models, device))
            described[name] = "LPIPS v0.1 AlexNet (lpips package; backbone from models.lpips_alexnet)"
        elif name in REWARDS:
            def reward(module=REWARDS[name]):
                try:
                    mod = importlib.import_module(module)
                except ModuleNotFoundError:
                    raise Skip(f"scorer not implemented ({module} is missing)") from None
                return mod.load_scorer(models, device=device)
            attempt(name, reward)
        else:
            raise ParamsError(f"unknown metric {name!r} in eval.metrics; known: {', '.join(KNOWN)}")
    if "clip" in described:
        for name in ("clip_score", "clip_diversity"):
            described.setdefault(name, described["clip"])
        described["clip_score"] += f"; {clip_scale} scale" + (" (100 x cosine)" if clip_scale == "torchmetrics" else "")
    return loaded, skipped, described


def compute(name: str, model, student, teacher, batch: int, cache: dict | None = None,
            refs: ReferenceLookup | None = None) -> tuple[MetricSample, int]:
    """(what the value is computed from, number of images used); the value is `sample.value()`. `cache`
    keeps feature sets between metrics of one extractor (fid_t and kid_t share Inception's); `refs`
    gives the reference sets' features from the `reference` stage when they match."""
    fid_s, fid_t = student.group("fid"), teacher.group("fid")
    prompts = np.array([student.rows[i]["prompt_index"] for i in fid_s])
    cache = {} if cache is None else cache

    def features(side, rows, images):
        key = (id(model), side)
        if key not in cache:
            if side == "teacher" and refs is not None:
                cache[key] = refs.teacher(METRIC_REFERENCE[name][1], len(rows), lambda: model(images.load(rows), batch))
            else:
                cache[key] = model(images.load(rows), batch)
        return cache[key]

    if name in ("fid_t", "fd_t_toyworld", "fd_t_dinov2", "kid_t"):
        kind = "kid" if name == "kid_t" else "fd"
        return MetricSample(kind, features("student", fid_s, student), prompts,
                            features("teacher", fid_t, teacher)), len(fid_s)
    if name == "fid":
        if refs is None or not refs.real_spec:
            raise Skip("no real reference images: eval.real_images is not set (COCO-5K: python -m evaluate.coco5k)")
        real = refs.real("inception", len(fid_s), model, batch)
        return MetricSample("fd", features("student", fid_s, student), prompts, real), len(fid_s)
    if name == "patch_fid_t":
        imgs_s = student.load(fid_s)
        if min(imgs_s.shape[1:3]) < 299:
            raise Skip(f"images are {imgs_s.shape[2]}x{imgs_s.shape[1]} px; patch FID needs a 299x299 native crop")
        reference = (refs.teacher("inception_patch", len(fid_t), lambda: model.patches(teacher.load(fid_t), batch))
                     if refs is not None else model.patches(teacher.load(fid_t), batch))
        return MetricSample("fd", model.patches(imgs_s, batch), prompts, reference), len(fid_s)
    if name == "clip_score":
        scores = model.per_image(student.load(fid_s), [student.rows[i]["prompt"] for i in fid_s])
        return MetricSample("mean", scores, prompts, floor=0.0), len(fid_s)
    if name in ("clip_diversity", "lpips_diversity"):
        groups: dict[int, list[int]] = {}
        for i in student.group("diversity"):
            groups.setdefault(student.rows[i]["prompt_index"], []).append(i)
        if not groups:
            raise Skip("no diversity group in the samples (eval.diversity_prompts = 0)")
        per_prompt = [student.load(idx) for idx in groups.values()]
        n = sum(len(p) for p in per_prompt)
        if name == "clip_diversity":
            values = [clip_diversity([model.image_features(p, batch)]) for p in per_prompt]
        else:
            values = [model.prompt_diversity(p) for p in per_prompt]
        return MetricSample("mean", np.array(values), np.array(list(groups))), n
    scores = model.score([Image.fromarray(im) for im in student.load(fid_s)],
                         [student.rows[i]["prompt"] for i in fid_s])
    return MetricSample("mean", np.asarray(scores, np.float64), prompts), len(fid_s)


def generation_record(folder: str | Path) -> dict:
    """The `generator` block of a sample folder's generation.json (steps, sampler, guidance, source)."""
    try:
        return json.loads((Path(folder) / "generation.json").read_text()).get("generator") or {}
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}


def metrics_provenance(params: dict, cfg: dict, student, teacher, samples_dir, reference, counts: dict,
                       described: dict) -> dict:
    """protocols/provenance.py's record of this run of the stage."""
    models = params.get("models") or {}
    gen_s, gen_t = generation_record(samples_dir), generation_record(reference)
    fid_rows = student.group("fid")
    student_source = gen_s.get("source") if gen_s.get("source") not in (None, "teacher") else None
    paths = {k: models.get(k) for k in MODEL_KEYS if models.get(k)}
    paths.update({"teacher": (params.get("train") or {}).get("teacher"), "student": student_source})
    return provenance(n_images=counts, prompt_set={"n": len(fid_rows), "sha256": prompt_set_hash(
        [student.rows[i]["prompt"] for i in fid_rows])}, student=gen_s, teacher=gen_t, features=described,
        protocol=cfg["protocol"], subset=cfg["subset"], models=model_hashes(paths))


def run_metrics(params_path: str, samples: str, reference: str, out: str, family: str = "toy",
                device: str = "cpu", reference_features: str | None = None) -> dict:
    params = load_params(params_path)
    samples_dir = samples
    cfg = eval_settings(params)
    models = params.get("models") or {}
    student, teacher = read_samples(samples), read_samples(reference)
    check_aligned(student, teacher)
    student.verify(), teacher.verify()  # a broken image stops here, before any model loads
    writable_folder(out, "the metrics folder", "--out")
    loaded, skipped, described = load_models(list(cfg["metrics"]), models, family, device, cfg["clip_score_scale"])
    values: dict[str, float | None] = {m: None for m in cfg["metrics"]}
    counts: dict[str, int] = {}
    samples: dict[str, MetricSample] = {}
    intervals: dict[str, list[float]] = {}
    biases: dict[str, float] = {}  # Fréchet distances: bootstrap estimate of the small-N bias
    draws = int(cfg["bootstrap"])
    flags: dict[str, str] = {}  # metric -> why it is not comparable with published values
    cache: dict = {}
    refs = ReferenceLookup(reference_features, models, reference, cfg.get("real_images"))
    for name in tqdm(list(loaded), desc="metrics", unit="metric"):
        try:
            samples[name], counts[name] = compute(name, loaded[name], student, teacher, int(cfg["batch_size_metrics"]),
                                                  cache, refs)
        except Skip as e:
            skipped[name] = str(e)
            continue
        values[name] = samples[name].value()
        if comparability(name, counts[name]):
            flags[name] = comparability(name, counts[name])
        if draws and samples[name].kind != "kid":
            boot = samples[name].bootstrap(draws, int(cfg["seed"]))
            intervals[name] = list(boot["ci"])
            if boot["bias"] is not None:
                biases[name] = boot["bias"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({**values, "flags": flags}, indent=2) + "\n")
    # for paired comparisons between variants (report); KID has no bootstrap (intervals.py)
    save_samples(out / "per_prompt.npz", {m: s for m, s in samples.items() if s.kind != "kid"})
    meta = {"skipped": skipped, "n_images": counts, "features": described, "flags": flags,
            "clip_score_scale": cfg["clip_score_scale"], "protocol": cfg["protocol"], "subset": cfg["subset"],
            "reference_features": refs.used,
            "provenance": metrics_provenance(params, cfg, student, teacher, samples_dir, reference, counts, described),
            "intervals": intervals, "fd_bias": biases,
            "bootstrap": {"draws": draws, "level": LEVEL, "unit": "prompt",
                          "fd_interval": "replicate percentiles re-centred on the estimate, clipped at 0"},
            "models": {k: v for k, v in models.items()}, "family": family,
            "samples": str(samples_dir), "reference": str(reference),
            "seeds": {"eval.seed": cfg["seed"], "first": student.rows[0]["seed"], "images": len(student.rows)}}
    (out / "metrics.meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return {"values": values, "meta": meta}


def main(argv=None) -> dict:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--family", default="toy")
    ap.add_argument("--samples", required=True)
    ap.add_argument("--reference", required=True, help="the teacher's samples (same prompts and seeds)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reference-features", default=None,
                    help="the reference stage's folder (results/reference): teacher / real-image features reused "
                         "when their key matches")
    args = ap.parse_args(argv)
    result = run_metrics(args.params, args.samples, args.reference, args.out, args.family, args.device,
                         args.reference_features)
    for k, v in result["values"].items():
        print(f"{k:>16}: {'skipped (' + result['meta']['skipped'].get(k, '') + ')' if v is None else f'{v:.4f}'}")
    return result


if __name__ == "__main__":
    run_command(main)
