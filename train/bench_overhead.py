"""Per-iteration cost of ISG and IDA (paper Tab. 3), measured interleaved in one process.

    python -m train.bench_overhead [--params params.yaml] [--families toy,sd3,flux,sdxl]
                                   [--min-rounds 5] [--max-rounds 60] [--width 0.02] [--cycles 2]
                                   [--out results/bench/overhead.json]

For each family three runs of the real loop (`train.senseflow.train_step`, every other component as
the family's preset has it, VFM on) are built side by side: base (ISG off, IDA off), +ISG, +IDA.
After one warm-up TTUR cycle each, the variants take turns (order rotated every round) running
`cycles` TTUR cycles; every iteration is timed on its own. Before each iteration the run's
`decisions` generator is reseeded from (seed, step), so the three variants make the same
backward-simulation choices at the same step (otherwise ISG's own draws shift every later choice and
the variants' work diverges, which widened the intervals more than extra rounds narrowed them).

ISG and IDA act only on generator turns (one iteration in `ttur`), so a round gives two paired
overheads per component: on the generator turns, where it runs (mean turn time with / without - 1),
and per iteration (mean iteration time with / without - 1, DESIGN.md's `isg_overhead` /
`ida_overhead`). Each is the mean over rounds with a Student-t 95 % interval across rounds; rounds
continue (from `min_rounds` up to `max_rounds`) until every interval is narrower than `width`
(2 points by default). `converged` says whether they got there.

Families: toy uses the params' teacher/encoders when they exist (otherwise random stand-ins of the
same architecture: timing depends only on shapes); sd3/flux/sdxl use the tiny random configs of
backbones/tiny.py and are skipped, with the reason printed, when those cannot be built.
Top-level `isg_overhead` / `ida_overhead` are the toy family's (the embedded default experiment).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from configs.cli import ArgumentParser, count, run_command
from configs.paths import writable_file
from configs.params import load_params
from train.batches import batch_indices
from train.settings import resolve
from train.senseflow import build_run, train_step

VARIANTS = {"base": {"isg": False, "ida": False}, "isg": {"isg": True, "ida": False}, "ida": {"isg": False, "ida": True}}
TINY_PRESETS = {"sd3": "sd35_medium", "flux": "flux", "sdxl": "sdxl"}


def _toy_stand_ins(train: dict, teacher_params: dict, root: Path) -> dict:
    """Paths for the toy family: the real assets where present, random same-shape stand-ins otherwise."""
    from transformers import CLIPModel, Dinov2Model

    from backbones.toy import ToyBackbone
    from toyworld.encoders import build_tokenizer, clip_config, dinov2_config

    paths, notes = {}, []
    teacher = Path(train.get("teacher") or "")
    if (teacher / "transformer").is_dir():
        paths["teacher"] = str(teacher)
    else:
        p = teacher_params
        ToyBackbone.new(p.get("layers", 4), p.get("heads", 4), p.get("head_dim", 32), p.get("text_width", 128),
                        p.get("text_layers", 2)).save(root / "teacher")
        paths["teacher"], notes = str(root / "teacher"), notes + ["random teacher of the configured size"]
    if (Path(train.get("clip") or "") / "config.json").is_file():
        paths["clip"] = train["clip"]
    else:
        tok = build_tokenizer()
        CLIPModel(clip_config(len(tok))).save_pretrained(root / "clip")
        tok.save_pretrained(root / "clip")
        paths["clip"], notes = str(root / "clip"), notes + ["random CLIP stand-in"]
    if (Path(train.get("vfm_backbone") or "") / "config.json").is_file():
        paths["vfm_backbone"] = train["vfm_backbone"]
    else:
        Dinov2Model(dinov2_config()).save_pretrained(root / "dinov2")
        paths["vfm_backbone"], notes = str(root / "dinov2"), notes + ["random DINOv2 stand-in"]
    if not Path(train.get("dataset") or "").is_file():
        paths["dataset"], notes = str(random_dataset(root / "data", 32)), notes + ["random images"]
    return {"paths": paths, "notes": notes}


def random_dataset(root: Path, size: int, n: int = 64) -> Path:
    """n random size x size images with four prompts, as an official SenseFlow dataset JSON."""
    import numpy as np
    from PIL import Image

    from protocols.dataset_json import write_dataset_json

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = root / "images" / f"{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    prompts = ["a red circle", "two blue squares", "a green triangle left of a white circle", "three purple circles"]
    return write_dataset_json(root / "dataset.json", [str(i) for i in range(n)], paths, [prompts[i % 4] for i in range(n)])


def family_settings(family: str, params: dict, root: Path) -> tuple[dict, list[str]]:
    """Resolved train settings for the benchmark of `family` (raises to skip it)."""
    train = dict(params.get("train") or {})
    common = {"checkpoint_every": 10**9, "sample_every": 0, "vfm": True,
              "optimizer": "adamw", "fsdp": False, "shard_teacher": False}  # one CPU process; relative overheads
    if family == "toy":
        assets = _toy_stand_ins(train, params.get("teacher") or {}, root)
        return resolve({**train, **assets["paths"], **common}), assets["notes"]
    from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionXLPipeline
    from transformers import CLIPModel, Dinov2Model

    from backbones.tiny import flux_components, sd3_components, sdxl_components
    from toyworld.encoders import build_tokenizer, clip_config, dinov2_config

    pipe, components = {"sd3": (StableDiffusion3Pipeline, sd3_components), "flux": (FluxPipeline, flux_components),
                        "sdxl": (StableDiffusionXLPipeline, sdxl_components)}[family]
    pipe(**components(seed=0)).save_pretrained(root / "teacher")
    tok = build_tokenizer()
    CLIPModel(clip_config(len(tok), width=16, layers=1, heads=2, projection_dim=8)).save_pretrained(root / "clip")
    tok.save_pretrained(root / "clip")
    Dinov2Model(dinov2_config(width=16, layers=2, heads=2)).save_pretrained(root / "dinov2")
    explicit = {"family": family, "preset": TINY_PRESETS[family], "teacher": str(root / "teacher"),
                "clip": str(root / "clip"), "vfm_backbone": str(root / "dinov2"),
                "dataset": str(random_dataset(root / "data", 32, 16)), "resolution": 32, "batch_size": 2,
                "precision": "fp32", "vfm_downsample": 1, "threads": train.get("threads") or 0, **common}
    return resolve(explicit), ["tiny random config (backbones/tiny.py)"]


def parse_families(ap, text: str) -> list[str]:
    families = [f.strip() for f in text.split(",") if f.strip()]
    unknown = sorted(set(families) - {"toy", *TINY_PRESETS})
    if unknown:
        ap.error(f"unknown families {unknown}; choose from toy, {', '.join(TINY_PRESETS)}")
    return families


def each_family(families: list[str], params: dict, result: dict, label: str):
    """(family, root, settings, notes) for every family that can be built, each in its own temporary
    folder; a family that cannot be built is recorded in result["skipped"] and printed, not fatal."""
    with tempfile.TemporaryDirectory(prefix=f"{label}_") as tmp:
        for family in families:
            root = Path(tmp) / family
            root.mkdir()
            try:
                settings, notes = family_settings(family, params, root)
            except Exception as e:
                result["skipped"][family] = f"{type(e).__name__}: {e}"
                print(f"{label}: skipping {family}: {result['skipped'][family]}")
                continue
            yield family, root, settings, notes


def _batch(run, step):
    s = run.settings
    idx = batch_indices(step, len(run.data), s["batch_size"], s["seed"])
    return torch.stack([run.data[i][0] for i in idx]), [run.data[i][1] for i in idx]


def t_interval(values: list[float], level: float = 0.95) -> dict:
    """Mean and Student-t interval of the mean across rounds."""
    from scipy import stats

    n = len(values)
    mean = statistics.fmean(values)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)) if n > 1 else math.inf
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "width": 2 * half, "rounds": n}


def measure_family(settings: dict, cycles: int, root: Path, min_rounds: int = 5, max_rounds: int = 60,
                   width: float = 0.02) -> dict:
    runs = {name: build_run({**settings, **change}, root / f"run_{name}") for name, change in VARIANTS.items()}
    ttur = settings["ttur"]
    steps = {name: 0 for name in runs}

    def block(name, n):
        """Per-iteration seconds of n iterations, and which of them were generator turns."""
        run, start = runs[name], steps[name]
        batches = [_batch(run, start + i) for i in range(n)]
        times, turns = [], []
        for i, b in enumerate(batches):
            # same control-flow draws (backward simulation or not) in every variant at a given step,
            # so that ISG's extra draws do not change how much work the variants' later steps do
            run.rngs["decisions"].manual_seed(settings["seed"] * 1_000_003 + start + i)
            t0 = time.perf_counter()
            train_step(run, start + i, *b)
            times.append(time.perf_counter() - t0)
            turns.append((start + i) % ttur == 0)
        steps[name] += n
        return times, turns

    for name in runs:
        block(name, ttur)  # warm-up: one TTUR cycle (allocator, lazy inits)
    rounds: dict[str, list[dict]] = {name: [] for name in runs}
    order = list(runs)
    over: dict[str, list[float]] = {f"{c}_{kind}": [] for c in ("isg", "ida") for kind in ("iteration", "generator_turn")}
    summary: dict = {}
    r = 0
    while r < max_rounds:
        for name in order[r % len(order):] + order[:r % len(order)]:
            times, turns = block(name, cycles * ttur)
            rounds[name].append({"iteration": statistics.fmean(times),
                                 "generator_turn": statistics.fmean(t for t, g in zip(times, turns) if g)})
        for c in ("isg", "ida"):
            for kind in ("iteration", "generator_turn"):
                over[f"{c}_{kind}"].append(rounds[c][r][kind] / rounds["base"][r][kind] - 1)
        r += 1
        summary = {k: t_interval(v) for k, v in over.items()}
        if r >= min_rounds and all(s["width"] < width for s in summary.values()):
            break
    s_per_iter = {name: statistics.median(x["iteration"] for x in v) for name, v in rounds.items()}
    return {"s_per_iter": s_per_iter,
            "s_per_generator_turn": {name: statistics.median(x["generator_turn"] for x in v) for name, v in rounds.items()},
            "isg_overhead": summary["isg_iteration"]["mean"], "ida_overhead": summary["ida_iteration"]["mean"],
            "isg_overhead_interval": summary["isg_iteration"], "ida_overhead_interval": summary["ida_iteration"],
            "isg_overhead_generator_turn": summary["isg_generator_turn"],
            "ida_overhead_generator_turn": summary["ida_generator_turn"],
            "converged": all(s["width"] < width for s in summary.values()), "target_width": width,
            "rounds_s_per_iter": {name: [x["iteration"] for x in v] for name, v in rounds.items()},
            "ttur": ttur, "iterations_per_round": cycles * ttur, "rounds": r,
            "batch_size": settings["batch_size"], "preset": settings["preset"]}


def _fmt(iv: dict) -> str:
    return f"{iv['mean']:+.2%} [{iv['lo']:+.2%}, {iv['hi']:+.2%}]"


def main(argv=None) -> dict:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--families", default="toy,sd3,flux,sdxl")
    ap.add_argument("--min-rounds", type=count(2), default=5)
    ap.add_argument("--max-rounds", type=count(2), default=60)
    ap.add_argument("--width", type=float, default=0.02, help="stop when every 95%% interval is narrower than this")
    ap.add_argument("--cycles", type=count(1), default=2, help="TTUR cycles per variant per round")
    ap.add_argument("--out", default="results/bench/overhead.json")
    args = ap.parse_args(argv)
    writable_file(args.out, "the benchmark result", "--out")  # checked before any work
    params = load_params(args.params)
    families = parse_families(ap, args.families)
    result = {"families": {}, "skipped": {}, "torch_threads": torch.get_num_threads(),
              "method": "interleaved rounds, every iteration timed; overhead = mean time with / without - 1 per "
                        "round (per iteration, and on generator turns, where ISG and IDA run), mean and Student-t "
                        "95 % interval across rounds"}
    for family, root, settings, notes in each_family(families, params, result, "bench_overhead"):
        print(f"bench_overhead: {family} ({', '.join(notes) or 'configured assets'})")
        res = measure_family(settings, args.cycles, root, args.min_rounds, max(args.min_rounds, args.max_rounds),
                             args.width)
        res["assets"] = notes
        result["families"][family] = res
        print(f"  s/iter {json.dumps({k: round(v, 4) for k, v in res['s_per_iter'].items()})}  "
              f"ISG {_fmt(res['isg_overhead_interval'])} per iteration, {_fmt(res['isg_overhead_generator_turn'])} "
              f"per generator turn; IDA {_fmt(res['ida_overhead_interval'])}, {_fmt(res['ida_overhead_generator_turn'])}"
              f" ({res['rounds']} rounds{'' if res['converged'] else ', intervals not yet narrower than the target'})")
    reference = "toy" if "toy" in result["families"] else next(iter(result["families"]), None)
    if reference is not None:
        result["reference_family"] = reference
        result["isg_overhead"] = result["families"][reference]["isg_overhead"]
        result["ida_overhead"] = result["families"][reference]["ida_overhead"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"bench_overhead: wrote {out}")
    return result


if __name__ == "__main__":
    run_command(main)
