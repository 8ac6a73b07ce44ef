"""Checkpoints of the SenseFlow loop (DESIGN.md contract).

Single process and DDP (rank 0 writes full fp32 tensors):

    <out>/checkpoints/step_<N>/          N = completed iterations
        <denoiser_subfolder>/            the generator as a diffusers model folder
                                         (backbone.export_student: drops into the teacher pipeline)
        ema/<denoiser_subfolder>/        EMA generator, when train.ema > 0
        fake_score.safetensors           fake-score weights
        discriminator_heads.safetensors  VFM discriminator heads (incl. spectral-norm u/v buffers), when train.vfm
        optimizer_<name>.safetensors     AdamW state per module, tensors keyed state/<param name>/<key>,
                                         param_groups as JSON in the safetensors metadata
        state.json                       step, world size, RNG states of every rank (python, numpy,
                                         torch, CUDA, the loop's generators), rolling log history, settings

FSDP2 (`train.fsdp`): nothing is gathered; every rank writes its own fp32 shards of the generator,
fake score, EMA, heads and optimizer states with torch.distributed.checkpoint, as large-scale
trainers do (for FLUX a gathered checkpoint would be ~290 GB on rank 0):

    <out>/checkpoints/step_<N>/sharded/  torch.distributed.checkpoint folder (.metadata + __<rank>_*.distcp)
    <out>/checkpoints/step_<N>/<denoiser_subfolder>/config.json   the student's config (no weights)
    <out>/checkpoints/step_<N>/state.json

The student is gathered into its diffusers folder only at export (`<out>/student/`, end of the run)
or offline with `python -m train.export_checkpoint <step dir>` (one process, no GPU).

Writes are atomic: `checkpoints/.step_<N>.tmp/` is renamed when complete, so a `step_<N>` directory
is always whole. Loading needs the same world size (the per-rank RNG streams are restored exactly),
which makes a resumed run continue bit-for-bit on the same hardware. Trained weights are always the
fp32 master weights, whatever train.precision is.
"""
from __future__ import annotations

import base64
import json
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch.distributed.checkpoint.api import CheckpointException
from safetensors.torch import load_file, save_file

from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

from configs.cli import UserError
from train.sharding import (full_model_state, full_optimizer_state, load_full_model_state,
                            load_full_optimizer_state, unwrap)

STEP_DIR = re.compile(r"^step_(\d+)$")
SHARDED_DIR = "sharded"  # torch.distributed.checkpoint folder of an FSDP run's checkpoint


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used to resume (corrupt, or written by a different setup)."""


class CheckpointDamagedError(CheckpointError):
    """A checkpoint whose files are unreadable or truncated (the run falls back to an earlier one)."""


# ---- locating ------------------------------------------------------------------------------
def checkpoint_root(out: Path) -> Path:
    return Path(out) / "checkpoints"


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with a state.json), sorted by step."""
    root = checkpoint_root(out)
    found = []
    if root.is_dir():
        for d in root.iterdir():
            m = STEP_DIR.match(d.name)
            if m and (d / "state.json").is_file():
                found.append((int(m.group(1)), d))
    return sorted(found)


def latest_checkpoint(out: Path, max_step: int | None = None) -> Path | None:
    """The checkpoint with the highest step (at most `max_step` when given: a shortened run never
    continues from beyond its end)."""
    found = [(step, path) for step, path in list_checkpoints(out) if max_step is None or step <= max_step]
    return found[-1][1] if found else None


# ---- RNG -----------------------------------------------------------------------------------
def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def capture_rng(generators: dict[str, torch.Generator]) -> dict:
    """JSON-able RNG state of this process: python, numpy, torch (CPU and CUDA), named generators."""
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
        "cuda": [_b64(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "generators": {k: _b64(g.get_state()) for k, g in generators.items()},
    }


def restore_rng(state: dict, generators: dict[str, torch.Generator]) -> None:
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(state["torch"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])
    missing = sorted(set(generators) - set(state["generators"]))
    if missing:
        raise CheckpointError(f"checkpoint lacks the RNG state of generator(s) {missing}")
    for k, g in generators.items():
        g.set_state(_unb64(state["generators"][k]))


# ---- optimizer state as safetensors ----------------------------------------------------------
def save_optimizer(path: Path, full_state: dict) -> None:
    """A name-keyed full optimizer state ({'state': {name: {k: v}}, 'param_groups': [...]})."""
    tensors, scalars = {}, {}
    for name, entry in full_state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state/{name}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{name}/{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in full_state["param_groups"]]
    save_file(tensors, str(path), metadata={"param_groups": json.dumps(groups), "scalars": json.dumps(scalars)})


def load_optimizer(path: Path) -> dict:
    state: dict[str, dict] = {}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        for key in f.keys():
            _, rest = key.split("/", 1)
            name, sub = rest.rsplit("/", 1)
            state.setdefault(name, {})[sub] = f.get_tensor(key)
    for key, value in json.loads(meta.get("scalars", "{}")).items():
        name, sub = key.rsplit("/", 1)
        state.setdefault(name, {})[sub] = value
    groups = json.loads(meta["param_groups"])
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


# ---- the run's checkpoint ----------------------------------------------------------------------
def _gather_rng(run) -> list[dict]:
    mine = capture_rng(run.rngs)
    if run.accelerator.num_processes == 1:
        return [mine]
    gathered = [None] * run.accelerator.num_processes
    torch.distributed.all_gather_object(gathered, mine)
    return gathered


def _sharded_state(run) -> dict:
    """Every trained tensor as FSDP2 shards (DTensors) / replicated tensors, for
    torch.distributed.checkpoint: each rank writes and reads only its own shards."""
    state = {"generator": get_model_state_dict(unwrap(run.generator)),
             "fake_score": get_model_state_dict(unwrap(run.fake_score))}
    if run.ema is not None:
        state["ema"] = get_model_state_dict(run.ema)
    if run.discriminator is not None:
        state["discriminator_heads"] = unwrap(run.discriminator).heads.state_dict()
    for name, (module, opt) in run.optimizers.items():
        state[f"optimizer_{name}"] = get_optimizer_state_dict(module, opt)
    return state


def _write_full_state(run, folder: Path) -> None:
    """Single process / DDP layout (rank 0 only; no collectives): the generator (and EMA) as diffusers
    folders, everything else as safetensors."""
    bb = run.backbone
    bb.export_student(run.generator, folder)
    if run.ema is not None:
        bb.export_student(run.ema, folder / "ema")
    fake = {k: v.detach().cpu().contiguous() for k, v in unwrap(run.fake_score).state_dict().items()}
    save_file(fake, str(folder / "fake_score.safetensors"))
    if run.discriminator is not None:
        heads = {k: v.detach().cpu().contiguous() for k, v in unwrap(run.discriminator).heads.state_dict().items()}
        save_file(heads, str(folder / "discriminator_heads.safetensors"))
    for name, (module, opt) in run.optimizers.items():
        save_optimizer(folder / f"optimizer_{name}.safetensors", full_optimizer_state(module, opt))


def save_run_checkpoint(run, step: int) -> Path:
    """Write `<out>/checkpoints/step_<step>/` atomically and prune old ones (every rank calls it).
    Under FSDP every rank writes its own shards (torch.distributed.checkpoint, `sharded/`); nothing
    is gathered. Otherwise rank 0 writes full tensors (`_write_full_state`)."""
    acc = run.accelerator
    root = checkpoint_root(run.out)
    final = root / f"step_{step}"
    tmp = root / f".step_{step}.tmp"
    rng = _gather_rng(run)
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    if run.settings["fsdp"]:
        import torch.distributed.checkpoint as dcp

        dcp.save(_sharded_state(run), checkpoint_id=str(tmp / SHARDED_DIR))
        if acc.is_main_process:  # the student's config only: train.export_checkpoint rebuilds the folder from it
            run.backbone.student_skeleton().save_config(tmp / run.backbone.denoiser_subfolder)
    elif acc.is_main_process:
        _write_full_state(run, tmp)
    if acc.is_main_process:
        (tmp / "state.json").write_text(json.dumps({
            "step": step, "world_size": acc.num_processes, "family": run.settings["family"],
            "sharded": bool(run.settings["fsdp"]), "rng": rng, "history": run.history_state(),
            "teacher_weights": run.teacher_weights, "settings": run.settings}, default=str))
        if final.exists():  # e.g. a damaged checkpoint the run fell back from: kept, renamed (never deleted)
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            final.rename(root / f".step_{step}.replaced-{stamp}")
        tmp.rename(final)
        prune_checkpoints(run.out, step, run.settings["keep_checkpoints"])
    acc.wait_for_everyone()
    return final


def prune_checkpoints(out: Path, step: int, keep: int) -> list[Path]:
    """Delete the oldest checkpoints at or before `step` so that `keep` of them remain. Checkpoints
    after `step` (written by an earlier, longer run) are never touched. Returns what was deleted."""
    older = [path for s, path in list_checkpoints(out) if s <= step]
    doomed = older[:-keep] if keep > 0 else []
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def _load_folder_state(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"checkpoint folder {str(folder)!r} has no .safetensors weights")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def export_run_student(run, folder: Path) -> Path:
    """The run's student (its EMA when kept) as `<folder>/<denoiser_subfolder>/`, from the live nets:
    under FSDP the full state is gathered onto rank 0's CPU only here (collective: every rank calls
    it); rank 0 writes. Returns the written subfolder."""
    net = run.ema if run.ema is not None else run.generator
    state = full_model_state(net) if run.settings["fsdp"] else None
    target = Path(folder) / run.backbone.denoiser_subfolder
    if run.accelerator.is_main_process:
        if state is None:
            run.backbone.export_student(net, folder)
        else:
            run.backbone.export_student_state(state, folder)
    run.accelerator.wait_for_everyone()
    return target


def _load_full(run, path: Path) -> None:
    sub = run.backbone.denoiser_subfolder
    load_full_model_state(run.generator, _load_folder_state(path / sub))
    if run.ema is not None:
        load_full_model_state(run.ema, _load_folder_state(path / "ema" / sub))
    load_full_model_state(run.fake_score, load_file(str(path / "fake_score.safetensors")))
    if run.discriminator is not None:
        unwrap(run.discriminator).heads.load_state_dict(load_file(str(path / "discriminator_heads.safetensors")))
    for name, (module, opt) in run.optimizers.items():
        load_full_optimizer_state(module, opt, load_optimizer(path / f"optimizer_{name}.safetensors"))


def _load_sharded(run, path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    state = _sharded_state(run)  # templates: the load fills them in place, shard by shard
    dcp.load(state, checkpoint_id=str(path / SHARDED_DIR))
    set_model_state_dict(unwrap(run.generator), state["generator"])
    set_model_state_dict(unwrap(run.fake_score), state["fake_score"])
    if run.ema is not None:
        set_model_state_dict(run.ema, state["ema"])
    if run.discriminator is not None:
        unwrap(run.discriminator).heads.load_state_dict(state["discriminator_heads"])
    for name, (module, opt) in run.optimizers.items():
        set_optimizer_state_dict(module, opt, state[f"optimizer_{name}"])


def load_run_checkpoint(run, path: Path) -> int:
    """Restore every module, optimizer and RNG stream from `path`; returns the step to continue from."""
    path = Path(path)
    try:
        meta = json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointDamagedError(f"checkpoint {str(path)!r} has an unreadable state.json ({e})") from None
    world = run.accelerator.num_processes
    if meta["world_size"] != world:
        raise CheckpointError(f"checkpoint {str(path)!r} was written by {meta['world_size']} process(es), this run "
                              f"has {world}; resume with the same number of processes")
    if meta.get("sharded", False) and not run.settings["fsdp"]:
        raise CheckpointError(f"checkpoint {str(path)!r} holds FSDP shards but train.fsdp is false; resume with "
                              f"train.fsdp: true, or export it with python -m train.export_checkpoint {path}")
    try:
        if meta.get("sharded", False):
            _load_sharded(run, path)
        else:
            _load_full(run, path)
    except (torch.OutOfMemoryError, torch.distributed.DistBackendError):
        raise  # not the checkpoint's fault: never fall back (and later replace it) because of these
    except (OSError, RuntimeError, KeyError, ValueError, SafetensorError, CheckpointException) as e:
        raise CheckpointDamagedError(f"checkpoint {str(path)!r} does not match this run or is damaged ({type(e).__name__}: "
                              f"{str(e)[:300]})") from None
    restore_rng(meta["rng"][run.accelerator.process_index], run.rngs)
    run.load_history_state(meta.get("history", {}))
    return int(meta["step"])


__all__ = ["CheckpointError", "CheckpointDamagedError", "checkpoint_root", "list_checkpoints", "latest_checkpoint", "capture_rng",
           "restore_rng", "prune_checkpoints", "export_run_student", "save_optimizer", "load_optimizer", "save_run_checkpoint", "load_run_checkpoint"]
