"""Export the student of any checkpoint as a diffusers model folder, offline (one process, no GPU):

    python -m train.export_checkpoint runs/distill/full-0/checkpoints/step_3000 [--out DIR] [--ema]

A single-process / DDP checkpoint already holds the student folder (it is copied). An FSDP
checkpoint holds torch.distributed.checkpoint shards (`sharded/`) and the student's config.json;
the generator's (or EMA's) fp32 weights are read from the shards into one state dict and written as
`<out>/<subfolder>/` (config.json + diffusion_pytorch_model*.safetensors), which drops into the
teacher's pipeline folder. Needs CPU memory for one fp32 copy of the student (FLUX: ~48 GB).
Default --out: <checkpoint>/export.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from backbones.base import write_diffusers_weights
from configs.cli import ArgumentParser, run_command
from configs.paths import writable_folder
from train.checkpoint import SHARDED_DIR, CheckpointError


def export_checkpoint(step_dir: str | Path, out: str | Path | None = None, ema: bool = False) -> Path:
    """Write the checkpoint's student to `<out>/<subfolder>/`; returns that folder."""
    step_dir = Path(step_dir)
    out = Path(out) if out is not None else step_dir / "export"
    try:
        state = json.loads((step_dir / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{step_dir} is not a readable checkpoint (state.json: {e})") from None
    configs = [p.parent for p in step_dir.glob("*/config.json")]
    if len(configs) != 1:
        raise CheckpointError(f"{step_dir}: expected one <subfolder>/config.json of the student, found {configs}")
    sub = configs[0].name
    target = out / sub
    if target.exists():
        raise FileExistsError(f"{target} exists; choose another --out (nothing was overwritten)")
    writable_folder(out, "the export folder", "--out")
    if not state.get("sharded", False):
        source = step_dir / "ema" / sub if ema else step_dir / sub
        if not source.is_dir():
            raise CheckpointError(f"{step_dir} has no {'EMA ' if ema else ''}student folder {source}")
        shutil.copytree(source, target)
        return target
    import diffusers
    import torch.distributed.checkpoint as dcp

    config = json.loads((step_dir / sub / "config.json").read_text())
    with torch.device("meta"):
        skeleton = getattr(diffusers, config["_class_name"]).from_config(config)
    weights = {name: torch.empty(t.shape, dtype=torch.float32) for name, t in skeleton.state_dict().items()}
    key = "ema" if ema else "generator"
    try:
        dcp.load({key: weights}, checkpoint_id=str(step_dir / SHARDED_DIR), no_dist=True)
    except Exception as e:  # CheckpointException is a BaseException subclass in torch: catch what DCP raises
        raise CheckpointError(f"{step_dir}: cannot read the {key} shards ({type(e).__name__}: {str(e)[:300]})") from None
    target.mkdir(parents=True)
    shutil.copy(step_dir / sub / "config.json", target / "config.json")
    write_diffusers_weights(weights, target)
    return target


def main(argv=None) -> Path:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a checkpoints/step_<N> folder")
    ap.add_argument("--out", default=None)
    ap.add_argument("--ema", action="store_true", help="export the EMA generator (train.ema > 0)")
    args = ap.parse_args(argv)
    target = export_checkpoint(args.checkpoint, args.out, args.ema)
    print(f"exported {target}")
    return target


if __name__ == "__main__":
    run_command(main)
