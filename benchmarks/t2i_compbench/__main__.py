"""`compbench` stage: T2I-CompBench for a teacher or a distilled student.

    python -m benchmarks.t2i_compbench [--params params.yaml] --family toy --teacher models/toy/teacher
                                       [--student runs/distill/<run>/student] --out results/compbench/<run>

Settings: params.yaml `benchmarks.compbench` (keys, defaults and rules: configs/schema.py);
model paths of the official edition: params.yaml `models` (compbench_blip_vqa, compbench_detector,
clip_vit_b32, compbench_spacy). Without --student the teacher samples at its own steps and CFG.
"""
from __future__ import annotations

import argparse

from benchmarks.t2i_compbench.run import run_compbench
from configs.cli import ArgumentParser, run_command
from configs.params import ParamsError, load_params, subsection
from configs.paths import writable_folder
from protocols.paper_protocol import resolve
from evaluate.sampling import add_generator_arguments, generator_from_settings, sampler_choice


def compbench_settings(params: dict) -> dict:
    """params.yaml `benchmarks.compbench` under `eval.protocol` and its declared `subset` (protocols/paper_protocol.py)."""
    return resolve("benchmarks.compbench", subsection(params, "benchmarks.compbench"), params)


def main(argv=None) -> dict:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_generator_arguments(ap)
    args = ap.parse_args(argv)
    params = load_params(args.params)
    cfg = sampler_choice(ap, args, compbench_settings(params))
    if cfg["edition"] == "toy" and args.family != "toy":
        raise ParamsError(f"the toy T2I-CompBench edition grades ToyWorld images only (benchmarks.compbench.edition, "
                          f"--family {args.family}): set benchmarks.compbench.edition: official for a real family")
    writable_folder(args.out, "the T2I-CompBench output folder", "--out")
    gen = generator_from_settings(args.family, args.teacher, args.student, cfg)
    summary = run_compbench(gen, cfg, args.out, params.get("models") or {}, gen.describe())
    print(" ".join(f"{k} {v:.3f}" for k, v in summary.items() if k.startswith("compbench_")))
    return summary


if __name__ == "__main__":
    run_command(main)
