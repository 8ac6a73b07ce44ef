"""Sampling speed of a distilled student against its teacher, interleaved in one process.

    python -m evaluate.bench_sampling [--params params.yaml] [--student runs/distill/full-0]
                                      [--rounds 5] [--images 64] [--out results/bench/sampling.json]

Both generate the same prompts and seeds through `evaluate.sampling` (the path every stage uses):
the teacher at its default sampler (params `teacher.eval`: Euler steps and CFG, i.e. 2 network
calls per step), the student at `--student-steps` with guidance 1 (1 call per step). Rounds
alternate teacher/student (order rotated); images/s of each is the median over rounds.
`speedup` = student images/s / teacher images/s (DESIGN.md fixed name).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from configs.cli import ArgumentParser, count, run_command
from configs.paths import writable_file
from configs.params import load_params
from evaluate.sampling import generate, load_generator
from toyworld.grammar import GENEVAL_TASKS, prompt_set


def bench_prompts(n: int) -> list[str]:
    """n ToyWorld prompts cycling over the GenEval tasks (deterministic)."""
    pools = [prompt_set(task) for task in GENEVAL_TASKS]
    return [pools[i % len(pools)][(i // len(pools)) % len(pools[i % len(pools)])].prompt for i in range(n)]


def images_per_second(gen, prompts: list[str], seeds: list[int], batch_size: int) -> float:
    t0 = time.perf_counter()
    generate(gen, prompts, seeds, batch_size=batch_size)
    return len(prompts) / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--student", default="runs/distill/full-0", help="distill run dir (or its student/ folder)")
    ap.add_argument("--student-steps", type=count(1), default=4)
    ap.add_argument("--student-sampler", default="stochastic", choices=["stochastic", "euler"])
    ap.add_argument("--rounds", type=count(1), default=5)
    ap.add_argument("--images", type=count(1), default=64)
    ap.add_argument("--batch-size", type=count(1), default=64)
    ap.add_argument("--threads", type=count(1), default=2)
    ap.add_argument("--out", default="results/bench/sampling.json")
    args = ap.parse_args(argv)
    writable_file(args.out, "the benchmark result", "--out")  # checked before any work
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    train, teacher_eval = params.get("train", {}), params.get("teacher", {}).get("eval", {})
    family, teacher_path = train.get("family") or "toy", train.get("teacher") or "models/toy/teacher"
    t_steps, t_cfg = int(teacher_eval.get("sample_steps", 20)), float(teacher_eval.get("guidance_scale", 2.0))
    teacher = load_generator(family, teacher_path, steps=t_steps, sampler="euler", guidance_scale=t_cfg)
    student = load_generator(family, teacher_path, args.student, steps=args.student_steps,
                             sampler=args.student_sampler, guidance_scale=1.0)
    prompts = bench_prompts(args.images)
    seeds = list(range(args.images))
    runs = {"teacher": teacher, "student": student}
    for gen in runs.values():  # warm-up
        generate(gen, prompts[:4], seeds[:4], batch_size=4)
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.rounds):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            rates[name].append(images_per_second(runs[name], prompts, seeds, args.batch_size))
            print(f"round {r + 1}/{args.rounds} {name}: {rates[name][-1]:.1f} images/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "speedup": med["student"] / med["teacher"],
        "images_per_s": med, "images_per_s_rounds": rates,
        "teacher": {**teacher.describe(), "network_calls_per_image": t_steps * (2 if t_cfg != 1.0 else 1)},
        "student": {**student.describe(), "network_calls_per_image": args.student_steps},
        "images": args.images, "batch_size": args.batch_size, "rounds": args.rounds, "threads": args.threads,
        "device": "cpu",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"speedup {result['speedup']:.2f}x (student {med['student']:.1f} vs teacher {med['teacher']:.1f} images/s)")
    return result


if __name__ == "__main__":
    run_command(main)
