"""`teacher_refine` stage (ToyWorld only): continue training the pretrained toy teacher (the `teacher`
stage's output) with some prompt families drawn more often, then grade it as the `teacher` stage does.

    python -m train.teacher_refine [--params params.yaml] [--base models/toy/teacher_base]
                                   [--data data/toyworld/train/dataset.json] [--out models/toy/teacher]
                                   [--work data/teacher_refine_run] [--results results/teacher]

Why a second phase rather than another data mix from scratch: the pretrained teacher has crossed the
threshold where it reads word order (position, colour binding), and a from-scratch run with
the same families oversampled never crossed it (results/teacher/experiments/README.md, "Data mix with
more two-shape prompts"). Starting from its weights keeps what it learned while the families it
under-learned (`teacher_refine.family_weights`) are drawn more often.

Everything not set in `teacher_refine` (batch size, EMA, text encoder learning-rate scale, caption
dropout, gradient clipping, threads, checkpoint interval) is the `teacher` section's; the learning
rate warms up then follows a cosine to 5 % of `teacher_refine.lr`. Resumable as the `teacher` stage is:
a checkpoint in --work is continued only when it was written with the same settings, data and start
weights (--base's files); otherwise it is moved aside to --work/superseded/.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from configs.cli import ArgumentParser, CommandLineError, count, run_command
from configs.paths import writable_folder
from configs.params import section
from train.teacher import train_teacher


def refine_settings(teacher: dict, refine: dict) -> tuple[dict, dict[str, float]]:
    """The training settings of the refinement (the teacher's, with the refinement's steps, learning
    rate, warm-up and seed) and its prompt-family sampling weights."""
    p = {**teacher, **{k: v for k, v in refine.items() if k != "family_weights"}}
    return p, dict(refine["family_weights"])


def main(argv=None) -> None:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--base", default="models/toy/teacher_base", help="the pretrained teacher to continue")
    ap.add_argument("--data", default="data/toyworld/train/dataset.json")
    ap.add_argument("--out", default="models/toy/teacher")
    ap.add_argument("--work", default="data/teacher_refine_run")
    ap.add_argument("--results", default="results/teacher")
    ap.add_argument("--steps", type=count(1), default=None, help="override teacher_refine.steps (smoke tests)")
    args = ap.parse_args(argv)
    if not (Path(args.base) / "transformer").is_dir():
        raise FileNotFoundError(f"--base {args.base} is not a toy teacher folder (no transformer/): "
                                "run `dvc repro teacher` or point --base at one")
    for folder, what, flag in ((args.out, "the teacher folder", "--out"), (args.work, "the refinement work folder", "--work"),
                               (args.results, "the teacher results folder", "--results")):
        writable_folder(folder, what, flag)  # checked before any work
    if Path(args.out).resolve() == Path(args.base).resolve():
        raise CommandLineError(f"--out {args.out} is --base: the refined teacher would overwrite the one it starts "
                               "from; choose another --out")
    teacher = section("teacher", args.params)
    p, family_weights = refine_settings(teacher, section("teacher_refine", args.params))
    if args.steps is not None:
        p["steps"] = args.steps
    from train.teacher_eval import evaluate_teacher

    t0 = time.time()
    bb = train_teacher(p, Path(args.data), Path(args.out), Path(args.work), init=Path(args.base),
                       family_weights=family_weights)
    extra = {"pretraining_steps": teacher["steps"], "refine_steps": p["steps"], "refine_family_weights": family_weights,
             "train_minutes_this_run": round((time.time() - t0) / 60, 2)}
    evaluate_teacher(bb, teacher["eval"], Path(args.results), extra=extra)


if __name__ == "__main__":
    run_command(main)
