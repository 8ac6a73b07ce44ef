"""`geneval` stage: GenEval for a teacher or a distilled student.

    python -m benchmarks.geneval [--params params.yaml] --family toy --teacher models/toy/teacher
                                 [--student runs/distill/<run>/student] --out results/geneval/<run>
    python -m benchmarks.geneval ... --teacher-steps student --out results/geneval/teacher_few  # the teacher at the
                                                                  # student's step count (Euler)
    python -m benchmarks.geneval --score-only <images dir> --out DIR   # score an existing official layout

Settings: params.yaml `benchmarks.geneval` (keys, defaults and rules: configs/schema.py); official
edition model paths: params.yaml `models.geneval_detector`, `models.geneval_clip`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.geneval.detectors import Mask2FormerDetector, OracleDetector
from benchmarks.geneval.metadata import read_metadata
from benchmarks.geneval.run import run_geneval, score_layout
from benchmarks.geneval.summary import summarize
from configs.cli import ArgumentParser, run_command
from configs.params import ParamsError, load_params, subsection
from configs.paths import writable_folder
from protocols.paper_protocol import resolve
from evaluate.sampling import add_generator_arguments, generator_from_settings, sampler_choice


def geneval_settings(params: dict) -> dict:
    """params.yaml `benchmarks.geneval` under `eval.protocol` and its declared `subset` (protocols/paper_protocol.py)."""
    return resolve("benchmarks.geneval", subsection(params, "benchmarks.geneval"), params)


def main(argv=None) -> dict:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_generator_arguments(ap)
    ap.add_argument("--score-only", default=None, help="score this existing image folder (official layout)")
    ap.add_argument("--teacher-steps", default=None,
                    help="sample the teacher with this many Euler steps instead of benchmarks.geneval.teacher_steps; "
                         "'student': the student's step count as the protocol resolves it (the geneval_teacher_few "
                         "stage), on the same prompts and seeds")
    args = ap.parse_args(argv)
    if args.teacher_steps is not None and (args.student or not (
            args.teacher_steps == "student" or (args.teacher_steps.isdigit() and int(args.teacher_steps) >= 1))):
        ap.error("--teacher-steps sets the teacher's Euler steps: a positive count or 'student', and not with --student")
    params = load_params(args.params)
    cfg = sampler_choice(ap, args, geneval_settings(params))
    if args.teacher_steps is not None:
        steps = cfg["student_steps"] if args.teacher_steps == "student" else int(args.teacher_steps)
        cfg = {**cfg, "teacher_steps": steps}
    if cfg["edition"] == "toy" and args.family != "toy":
        raise ParamsError(f"the toy GenEval edition grades ToyWorld images only (benchmarks.geneval.edition, "
                          f"--family {args.family}): set benchmarks.geneval.edition: official for a real family")
    out = writable_folder(args.out, "the GenEval output folder", "--out")
    if args.score_only:
        detector = OracleDetector() if cfg["edition"] == "toy" else Mask2FormerDetector(params.get("models") or {})
        results = score_layout(detector, Path(args.score_only))
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "results.jsonl", "w") as fp:
            results.to_json(fp, orient="records", lines=True)
        summary, text = summarize(results)
        summary.update({"edition": cfg["edition"], "detector": detector.name, "scored": str(args.score_only)})
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (out / "summary.txt").write_text(text)
    else:
        if cfg["edition"] == "official" and cfg["metadata"]:
            read_metadata(cfg["metadata"])  # a bad metadata file stops here, before any model loads
        gen = generator_from_settings(args.family, args.teacher, args.student, cfg)
        summary = run_geneval(gen, cfg, out, params.get("models") or {}, gen.describe())
        text = (out / "summary.txt").read_text()
    print(text, end="")
    return summary


if __name__ == "__main__":
    run_command(main)
