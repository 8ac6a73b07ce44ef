"""GPU check, ready to run on a machine with CUDA GPUs (CI never runs it):

    python -m train.gpu_check                  # -> results/bench/gpu.json

1. Each tiny family (toy, sd3, flux, sdxl; backbones/tiny.py) trains a few iterations under
   FSDP2 + bf16 (teacher and T5 sharded) on all visible GPUs (torchrun), every component on;
   records s/iter, peak memory per GPU, and whether every optimizer step had every parameter's
   gradient (the loop's `params_without_grad_*`); FLUX once more with train.cpu_offload (CUDA only).
2. A random-initialised SD3Transformer2DModel with SD 3.5 Medium's real dimensions
   (configs/models/sd35_medium_transformer.json) at 1024^2, batch 1, trains a few iterations on one
   GPU (FSDP2 of one, bf16, gradient checkpointing, 8-bit AdamW when torchao is installed,
   discriminator off: its DINOv2-L / CLIP-L weights are not available), with tiny text encoders of
   the real widths and a random VAE of the real config; records s/iter and peak memory next to the
   memory planner's prediction for the same options (its text-encoder part left out: ours are tiny).

Nothing is downloaded; all weights are random. Takes a few minutes on one H100/H200-class GPU.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from configs.cli import ArgumentParser, UserError, run_command
from configs.paths import writable_file


ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("toy", "sd3", "flux", "sdxl")


class NoGPUError(UserError, RuntimeError):
    """The GPU check was started on a machine without CUDA GPUs."""


def _require_gpu() -> int:
    if not torch.cuda.is_available():
        raise NoGPUError("train.gpu_check needs CUDA GPUs (none visible here); run it on a GPU machine")
    return torch.cuda.device_count()


def _worker(work: Path) -> None:
    """One torchrun process of part 1: every tiny family under FSDP2 + bf16."""
    import train.senseflow as senseflow
    from train.tiny_assets import tiny_family_settings

    assets = json.loads((work / "assets.json").read_text())
    results = {}
    for family, extra in [(f, {}) for f in FAMILIES] + [("flux", {"cpu_offload": True})]:
        name = family + ("+cpu_offload" if extra else "")
        missing = []
        real_step = senseflow.train_step

        def audited(run, step, *a):
            logs = real_step(run, step, *a)
            missing.extend(v for k, v in logs.items() if k.startswith("params_without_grad_"))
            return logs

        senseflow.train_step = audited
        torch.cuda.reset_peak_memory_stats()
        settings = tiny_family_settings(assets, family, precision="bf16", fsdp=True, shard_teacher=True, steps=6, ttur=2,
                                        **extra)
        senseflow.train(settings, work / name, resume="fresh")
        senseflow.train_step = real_step
        summary = json.loads((work / name / "summary.json").read_text()) if int(os.environ.get("RANK", 0)) == 0 else {}
        results[name] = {"s_per_iter": summary.get("s_per_iter"), "world_size": summary.get("world_size"),
                           "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9,
                           "every_parameter_had_a_gradient": not any(missing)}
    if int(os.environ.get("RANK", 0)) == 0:
        (work / "tiny_families.json").write_text(json.dumps(results, indent=2))
    torch.distributed.destroy_process_group()


def tiny_families(gpus: int) -> dict:
    from train.tiny_assets import all_family_assets

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "assets.json").write_text(json.dumps(all_family_assets(work / "assets")))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus),
                        "-m", "train.gpu_check", "--worker", str(work)], cwd=ROOT, env=env, check=True)
        return json.loads((work / "tiny_families.json").read_text())


def _sd35_medium_teacher(path: Path) -> None:
    """A StableDiffusion3Pipeline folder: the real SD 3.5 Medium transformer and VAE configs with
    random weights, tiny text encoders of the real output widths (CLIP projections 768 + 1280 =
    pooled 2048, T5 width 4096)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    from backbones.tiny import clip_text_config, clip_tokenizer, t5_encoder, t5_tokenizer
    from train.plan import _config

    torch.manual_seed(0)
    tok, tok2, tok3 = clip_tokenizer(), clip_tokenizer(), t5_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(**_config("sd35_medium_transformer.json")).to(torch.bfloat16),
        vae=AutoencoderKL(**_config("sd35_vae.json")),
        text_encoder=CLIPTextModelWithProjection(clip_text_config(tok, hidden=64, projection=768)), tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(clip_text_config(tok2, hidden=64, projection=1280)), tokenizer_2=tok2,
        text_encoder_3=t5_encoder(tok3, d_model=4096), tokenizer_3=tok3, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    pipe.save_pretrained(path)


def sd35_medium_one_gpu() -> dict:
    import train.senseflow as senseflow
    from train.bench_overhead import random_dataset
    from train.plan import plan
    from train.settings import resolve

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _sd35_medium_teacher(work / "teacher")
        # 8-bit AdamW as the released SD 3.5 Large / FLUX trainers (torchao), when installed
        optimizer = "adamw8bit" if importlib.util.find_spec("torchao") else "adamw"
        options = dict(batch_size=1, precision="bf16", fsdp=True, shard_teacher=True, gradient_checkpointing=True,
                       optimizer=optimizer, vfm=False, resolution=1024)
        settings = resolve({"family": "sd3", "preset": "sd35_medium", "teacher": str(work / "teacher"),
                            "dataset": str(random_dataset(work / "data", 1024, 8)), "clip": "-", "vfm_backbone": "-",
                            "steps": 6, "ttur": 2, "checkpoint_every": 1000, "sample_every": 0, "sample_prompts": 1,
                            **options})
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        senseflow.train(settings, work / "run", resume="fresh")
        wall = time.perf_counter() - start
        summary = json.loads((work / "run" / "summary.json").read_text())
        predicted = plan("sd35_medium", 1, torch.cuda.get_device_properties(0).total_memory / 1e9, **options)
        without_text = predicted["per_rank_gb"]["total"] - predicted["per_rank_gb"]["text_encoders"]
        peak = torch.cuda.max_memory_allocated() / 1e9
        return {"options": options, "s_per_iter": summary["s_per_iter"], "wall_s": wall, "peak_memory_gb": peak,
                "planner_total_gb_without_text_encoders": without_text, "planner_parts_gb": predicted["per_rank_gb"],
                "measured_over_planned": peak / without_text}


def main(argv=None) -> dict:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/bench/gpu.json")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    writable_file(args.out, "the GPU check result", "--out")  # checked before any work
    if args.worker:
        _worker(Path(args.worker))
        return {}
    gpus = _require_gpu()  # NoGPUError: one line, exit 2 (configs.cli)
    report = {"device": torch.cuda.get_device_name(0), "gpus": gpus, "torch": torch.__version__,
              "tiny_families_fsdp2_bf16": tiny_families(gpus), "sd35_medium_real_dims_one_gpu": sd35_medium_one_gpu()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    run_command(main)
