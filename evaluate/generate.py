"""`generate` stage: render the evaluation prompt set from a teacher or a distilled student.

    python -m evaluate.generate [--params params.yaml] --family toy --teacher models/toy/teacher
                                [--student runs/distill/<run>/student] [--student-sampler euler]
                                --out results/samples/<name>

The prompt set (params `eval`): `fid_prompts` prompts with one image each (group "fid": FID-T,
FD-T, CLIP score) and `diversity_prompts` prompts with `diversity_samples` images each (group
"diversity": the paper's App. B.5 protocol, 16 samples per prompt). On ToyWorld the prompts come
from the grammar (every GenEval task and CompBench category, held-out prompts included); for real
runs `eval.prompt_file` (one prompt per line) gives them. Image (prompt_index, k) has seed
`eval.seed * 1_000_003 + prompt_index * 1000 + k`, identical for teacher and students. The teacher
samples with `teacher_steps` Euler steps at `teacher_guidance`; students with `student_steps`,
`student_sampler` (stochastic = the paper's "Ours"; `--student-sampler euler` for the paper's
"Ours (Euler)" rows, the `generate_euler` stage), `student_guidance`.

Writes `<out>/<prompt_index>/<k>.png` and `<out>/samples.jsonl`; a partly written folder with the
same settings is completed, one written under other settings is cleared first.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from configs.cli import ArgumentParser, run_command
from configs.params import ParamsError, load_params, subsection
from configs.paths import text_lines, writable_folder
from configs.schema import SCHEMA
from protocols.paper_protocol import resolve
from evaluate.sampling import (add_generator_arguments, generator_from_settings, render_missing,
                               reset_folder, sampler_choice)
from toyworld.grammar import COMPBENCH_CATEGORIES, GENEVAL_TASKS, prompt_set

DEFAULTS = SCHEMA["eval"].plain_defaults()  # keys, defaults and rules: configs/schema.py


def eval_settings(params: dict) -> dict:
    """params.yaml `eval` under `eval.protocol` and its declared `subset` (protocols/paper_protocol.py)."""
    return resolve("eval", subsection(params, "eval"), params)


def toy_prompts(n: int, seed: int) -> list[str]:
    """n grammar prompts, a fixed random draw over every GenEval task and CompBench category."""
    pool = [s.prompt for task in GENEVAL_TASKS + COMPBENCH_CATEGORIES for s in prompt_set(task)]
    pool = list(dict.fromkeys(pool))
    order = np.random.default_rng([seed, 7]).permutation(len(pool))
    return [pool[i] for i in order[:n]]


def prompt_plan(cfg: dict) -> list[dict]:
    """Rows (prompt_index, k, prompt, seed, group) of the evaluation set."""
    n_fid, n_div = int(cfg["fid_prompts"]), int(cfg["diversity_prompts"])
    if cfg["prompt_file"]:
        prompts = text_lines(cfg["prompt_file"], "the prompt file", "eval.prompt_file")
        if cfg.get("diversity_reuse") and n_fid <= len(prompts) < n_fid + n_div and n_div <= n_fid:
            prompts = prompts[:n_fid] + prompts[:n_div]  # the paper protocol: COCO-5K's first prompts again
        if len(prompts) < n_fid + n_div:
            raise ParamsError(f"the prompt file is too short (eval.prompt_file: {cfg['prompt_file']}): it has "
                              f"{len(prompts)} prompts, eval.fid_prompts + eval.diversity_prompts need {n_fid + n_div}; "
                              f"add prompts or lower those counts")
    else:
        prompts = toy_prompts(n_fid + n_div, int(cfg["seed"]))
    rows = []
    for i, prompt in enumerate(prompts[:n_fid + n_div]):
        group, count = ("fid", 1) if i < n_fid else ("diversity", int(cfg["diversity_samples"]))
        for k in range(count):
            rows.append({"prompt_index": i, "k": k, "prompt": prompt, "group": group,
                         "seed": int(cfg["seed"]) * 1_000_003 + i * 1000 + k})
    return rows


def write_samples(gen, rows: list[dict], out: Path, batch_size: int) -> None:
    described = gen.describe()
    reset_folder(out, {"generator": described, "rows": len(rows), "first": rows[0] if rows else None}, "generate")
    (out / "samples.jsonl").unlink(missing_ok=True)  # written last: its presence means complete
    render_missing(gen, [(out / str(r["prompt_index"]) / f"{r['k']}.png", r["prompt"], r["seed"]) for r in rows],
                   batch_size, f"generate {out.name}")
    meta = {k: described[k] for k in ("steps", "sampler", "guidance_scale")}
    with open(out / "samples.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({**r, **meta}) + "\n")


def main(argv=None) -> Path:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_generator_arguments(ap)
    args = ap.parse_args(argv)
    cfg = sampler_choice(ap, args, eval_settings(load_params(args.params)))
    rows = prompt_plan(cfg)
    out = writable_folder(args.out, "the sample folder", "--out")
    gen = generator_from_settings(args.family, args.teacher, args.student, cfg)
    write_samples(gen, rows, out, int(cfg["batch_size"]))
    print(f"generate: {len(rows)} images -> {out}")
    return out


if __name__ == "__main__":
    run_command(main)
