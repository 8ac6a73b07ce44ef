"""The metrics along training, after the fact: score a run's saved checkpoints with the loop's probe.

    python -m evaluate.checkpoints RUN [--steps 1000,2000,...] [--ema] [--device cuda]
                                       [-S train.eval_inception=/path/inception-2015-12-05.pt ...]
                                       [--out RUN/checkpoint_eval.jsonl]

For real runs, where evaluating inside the loop would hold the GPUs, or to add a metric a run did
not log: every complete checkpoint under RUN/checkpoints/ (or the `--steps` chosen) is sampled on
the probe set of the run's own settings (the same prompts, noise and sampler as train.eval_every in
the loop, train/probe.py) and scored against the teacher's reference images (the run's
cached along_training/reference.npz when it matches, else sampled here). Only the train.eval_*
keys may be changed with -S: everything else is the run's. One JSON line per checkpoint
{"step", "eval/...": value} goes to --out (default RUN/checkpoint_eval.jsonl; a step already there is
skipped, so an interrupted evaluation continues) and a table is printed. The run keeps its
checkpoints only as far as train.keep_checkpoints allows (default 2): raise it for runs you want
to evaluate along training this way. A sharded (FSDP) checkpoint is exported to a temporary folder
first (train.export_checkpoint; needs CPU memory for one fp32 student).
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from configs.cli import ArgumentParser, UserError, run_command
from configs.params import ParamsError
from configs.paths import readable_folder, writable_file
from backbones import backbone_class, load_backbone
from train.probe import (TrainingProbe, cached_reference, append_point, check_probe_inputs, probe_key, probe_set,
                                     read_curve, reference_record, sample_probe, teacher_guidance)
from train.checkpoint import list_checkpoints
from protocols.dataset_json import load_dataset_json
from train.export_checkpoint import export_checkpoint
from train.settings import DEFAULTS, parse_overrides

EVAL_KEYS = {k for k in DEFAULTS if k.startswith("eval_")}


class CheckpointEvalError(UserError, ValueError):
    """A run folder or a choice of steps that cannot be evaluated."""


def run_settings(run: Path, step_dir: Path, overrides: list[str]) -> dict:
    """The run's settings as its checkpoint recorded them (keys added since: their defaults), with the
    train.eval_* overrides applied."""
    saved = json.loads((step_dir / "state.json").read_text()).get("settings")
    if not isinstance(saved, dict):
        raise CheckpointEvalError(f"checkpoint without its settings ({step_dir / 'state.json'}): written by another "
                                  f"tool? Evaluate an exported student with python -m evaluate.generate instead")
    changes = parse_overrides(overrides)
    other = sorted(set(changes) - EVAL_KEYS)
    if other:
        raise ParamsError(f"invalid params (-S: {', '.join(other)}): only the evaluation keys "
                          f"({', '.join(sorted(EVAL_KEYS))}) can be changed; the rest is the run's ({run})")
    return {**DEFAULTS, **saved, **changes}


def choose(found: list[tuple[int, Path]], steps: str | None, run: Path) -> list[tuple[int, Path]]:
    if not found:
        raise CheckpointEvalError(f"no checkpoint in {run / 'checkpoints'} (RUN): pass the folder of a distill run "
                                  f"(runs/distill/<variant>-<seed>)")
    if steps is None:
        return found
    try:
        wanted = {int(x) for x in steps.split(",") if x.strip()}
    except ValueError:
        raise CheckpointEvalError(f"--steps must be comma-separated iterations, got {steps!r}") from None
    have = {step for step, _ in found}
    missing = sorted(wanted - have)
    if missing:
        raise CheckpointEvalError(f"no checkpoint at step(s) {missing} (--steps); {run} has {sorted(have)}")
    return [(step, path) for step, path in found if step in wanted]


def student_folder(step_dir: Path, ema: bool, scratch: Path) -> Path:
    """The checkpoint's student as a diffusers folder (a sharded checkpoint exported into `scratch`)."""
    state = json.loads((step_dir / "state.json").read_text())
    if state.get("sharded", False):
        return export_checkpoint(step_dir, scratch / step_dir.name, ema=ema)
    configs = [p.parent for p in (step_dir / "ema" if ema else step_dir).glob("*/config.json")]
    if len(configs) != 1:
        raise CheckpointEvalError(f"{step_dir}: no {'EMA ' if ema else ''}student folder (expected one "
                                  f"<subfolder>/config.json)")
    return configs[0]


def loader_options(s: dict) -> dict:
    """`resolution` for the families whose loader takes it (as the loop loads the teacher)."""
    takes = "resolution" in inspect.signature(backbone_class(s["family"]).load).parameters
    return {"resolution": s["resolution"]} if takes else {}


def reference_images(run: Path, s: dict, probe, backbone) -> np.ndarray:
    """The run's cached teacher reference when it was made for these settings, else sampled now with
    the teacher in `backbone` (under the run's precision)."""
    cached = cached_reference(run / "along_training" / "reference.npz", reference_record(s, probe))
    if cached is not None:
        return cached
    return sample_probe(backbone, backbone.denoiser, probe, resolution=s["resolution"], steps=s["eval_teacher_steps"],
                        sampler="euler", guidance=teacher_guidance(s), batch_size=s["eval_batch_size"],
                        precision=precision_context(s, backbone.device))


def precision_context(s: dict, device: torch.device):
    """The loop's precision policy for sampling: bf16 autocast (weight-cast cache off) in bf16 runs."""
    if s["precision"] == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext


def evaluate_checkpoints(run: str | Path, steps: str | None = None, ema: bool | None = None, overrides=(),
                         out: str | Path | None = None, device: str | None = None) -> list[dict]:
    """Score the chosen checkpoints (module docstring). The teacher and text encoders are loaded once, in
    the run's storage dtype (bf16 runs: bf16, as the loop holds them); each student is loaded in fp32 (the
    loop's master weights), sampled under the run's precision and freed before the next one; an exported
    FSDP student is deleted as soon as it is scored. `ema`: the EMA generator (default: when the run kept
    one, as the loop samples it)."""
    run = readable_folder(run, "the run folder", "RUN")
    out = writable_file(out or run / "checkpoint_eval.jsonl", "the output file", "--out")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    chosen = choose(list_checkpoints(run), steps, run)
    s = run_settings(run, chosen[-1][1], list(overrides))
    ema = s["ema"] > 0 if ema is None else ema
    s["eval_every"] = s["eval_every"] or 1  # the probe's settings apply even if the run did not log them
    check_probe_inputs(s)
    records = load_dataset_json(s["dataset"], check_images=False) if s["family"] != "toy" else None
    probe = probe_set(s, records.prompts if records else [])
    key = probe_key(reference_record(s, probe), s)
    previous = read_curve(out)
    if any(p.get("probe", key) != key for p in previous):
        raise CheckpointEvalError(f"{out} holds points of another probe (other train.eval_* settings): pass another "
                                  f"--out (nothing was overwritten)")
    done = {p["step"] for p in previous}
    scorer = TrainingProbe(s, probe, device)
    dtype = torch.bfloat16 if s["precision"] == "bf16" else torch.float32
    backbone = load_backbone(s["family"], s["teacher"], device=device, dtype=dtype, **loader_options(s))
    scorer.set_reference(reference_images(run, s, probe, backbone))
    precision = precision_context(s, backbone.device)
    with tempfile.TemporaryDirectory(prefix="checkpoint_eval_", dir=out.parent) as scratch:
        for step, step_dir in chosen:
            if step in done:
                print(f"checkpoints: step {step} already in {out}; skipped")
                continue
            folder = student_folder(step_dir, ema, Path(scratch))
            net = backbone.load_denoiser(folder).to(device=device, dtype=torch.float32).eval()
            images = sample_probe(backbone, net, probe, resolution=s["resolution"], steps=s["num_steps"],
                                  sampler=s["eval_sampler"], guidance=1.0, batch_size=s["eval_batch_size"],
                                  precision=precision)
            del net
            if Path(scratch) in folder.parents:
                shutil.rmtree(folder.parent)  # the exported FSDP student (fp32): one at a time on disk
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            values = scorer.measure(images)
            append_point(out, step, values, key)
            print(f"checkpoints: step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()), flush=True)
    return sorted(read_curve(out), key=lambda p: p["step"])


def main(argv=None) -> list[dict]:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a distill run folder (runs/distill/<variant>-<seed>)")
    ap.add_argument("--steps", default=None, help="comma-separated checkpoint iterations (default: every checkpoint)")
    ap.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                    help="the EMA generator (default: when the run kept one, train.ema > 0, as the loop samples it)")
    ap.add_argument("--out", default=None, help="JSON lines file (default RUN/checkpoint_eval.jsonl)")
    ap.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="change an evaluation key, e.g. -S train.eval_prompts=256 (repeatable)")
    args = ap.parse_args(argv)
    points = evaluate_checkpoints(args.run, args.steps, args.ema, args.overrides, args.out, args.device)
    keys = sorted({k for p in points for k in p if k not in ("step", "probe")})
    print("step\t" + "\t".join(keys))
    for p in points:
        print(f"{p['step']}\t" + "\t".join(f"{p[k]:.4g}" if k in p else "—" for k in keys))
    return points


if __name__ == "__main__":
    run_command(main)
