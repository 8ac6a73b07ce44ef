"""`teacher` stage (ToyWorld only): pretrain the SD3-class pixel-space flow-matching teacher on the
ToyWorld dataset, with caption dropout for CFG, fine-tuning its text encoder (by default the toy
CLIP's text tower, at `text_lr_scale` x the learning rate) alongside.

    python -m train.teacher [--params params.yaml] [--data data/toyworld/train/dataset.json]
                            [--out models/toy/teacher_base] [--work data/teacher_run]
                            [--results results/teacher_base] [--steps N]

The pretraining: the `teacher_refine` stage (train/teacher_refine.py) continues it, with some prompt
families drawn more often, into models/toy/teacher, the teacher every later stage uses.

Rectified flow x_t = (1-s) x0 + s eps, target eps - x0, logit-normal timesteps with SD3's
shift (3, in training and sampling: the prompt only matters at high noise in a small world).
Resumable: a checkpoint in --work is written every `checkpoint_every` steps and picked up
automatically when it was written with the same teacher params (only RESUMABLE_ACROSS may differ: not
`steps`, whose cosine schedule the learning rate follows), the same training data (prompts and pixels)
and the same text-encoder start weights (`text_encoder_init`'s files); a checkpoint of anything else is
moved aside to --work/superseded/<UTC time>/ (never deleted) and training starts over. The finished teacher (EMA
weights) is written atomically to --out.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from tqdm import tqdm

from backbones.toy import ToyBackbone
from configs.cli import ArgumentParser, count, run_command
from configs.paths import writable_folder
from configs.params import ParamsError, section
from configs.schema import SCHEMA
from train.checkpoint import capture_rng, load_optimizer, restore_rng, save_optimizer
from protocols.dataset_json import DatasetError, load_dataset_json
from protocols.provenance import weights_fingerprint
from train.dataset import ImageTextDataset
from toyworld.dataset import read_tags
from toyworld.world import RESOLUTION

DEFAULTS = SCHEMA["teacher"].plain_defaults()  # keys, defaults and rules: configs/schema.py
# teacher params that do not change the weights a checkpoint continues to (not `steps`: the lr schedule)
RESUMABLE_ACROSS = {"threads", "checkpoint_every", "eval"}


def _settings(p: dict) -> dict:
    return {k: v for k, v in json.loads(json.dumps(p, default=str)).items() if k not in RESUMABLE_ACROSS}


def run_identity(p: dict, prompts: list[str], images: torch.Tensor, init: Path | None = None) -> dict:
    """What a checkpoint must share with this start to be continued: the params (RESUMABLE_ACROSS
    excluded), a fingerprint of the training data (prompts in order and the decoded pixels) and of the
    start weights (text_encoder_init's files, a retrained toy CLIP being another start; and `init`'s, the
    whole teacher a refinement continues)."""
    h = hashlib.sha256("\n".join(prompts).encode())
    h.update(images.contiguous().numpy())
    identity = {"settings": _settings(p), "data": f"{len(prompts)} pairs, sha256 {h.hexdigest()[:16]}"}
    text_init = weights_fingerprint(p.get("text_encoder_init"))
    if text_init is not None:
        identity["text_encoder_init_weights"] = text_init
    if init is not None:
        identity["init_weights"] = weights_fingerprint(init)
    return identity


def _identity_diff(saved: dict, current: dict) -> list[str]:
    """The differences that make a checkpoint another run (empty: resumable). A checkpoint written before
    the identity was recorded cannot be shown to be this run and is never continued (resuming one
    trained the last steps of a teacher on data it had not started on); a key added to the params
    since counts with its default."""
    if "settings" not in saved or "data" not in saved:
        return ["a checkpoint that does not record its params and data (written by an older version)"]
    old, new = {**_settings(DEFAULTS), **saved["settings"]}, current["settings"]
    diff = [f"teacher.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]
    if saved.get("data") != current["data"]:
        diff.append(f"training data: {saved.get('data')} -> {current['data']}")
    if saved.get("text_encoder_init_weights") != current.get("text_encoder_init_weights"):
        diff.append(f"text encoder start weights: {saved.get('text_encoder_init_weights')} -> "
                    f"{current.get('text_encoder_init_weights')}")
    if saved.get("init_weights") != current.get("init_weights"):
        diff.append(f"start weights: {saved.get('init_weights')} -> {current.get('init_weights')}")
    return diff


def _move_aside(work: Path, why: list[str]) -> Path:
    """Move the checkpoint and loss log of another run to work/superseded/<UTC time>/ (nothing is deleted)."""
    dest = work / "superseded" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest.mkdir(parents=True, exist_ok=False)
    for name in ("checkpoint", "loss.jsonl"):
        if (work / name).exists():
            (work / name).rename(dest / name)
    (dest / "why.txt").write_text("moved aside: the checkpoint was written with\n" + "\n".join(why) + "\n")
    print(f"teacher: {work / 'checkpoint'} was written with other params or data ({'; '.join(why)}); "
          f"moved to {dest} and starting over")
    return dest


def lr_at(step: int, p: dict) -> float:
    """Linear warm-up then cosine decay to 5 % of the peak."""
    if step < p["warmup"]:
        return p["lr"] * (step + 1) / p["warmup"]
    frac = (step - p["warmup"]) / max(1, p["steps"] - p["warmup"])
    return p["lr"] * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _modules(bb: ToyBackbone) -> dict[str, torch.nn.Module]:
    return {"transformer": bb.denoiser, "text_encoder": bb.text_encoder}


def _save_checkpoint(work: Path, step: int, bb: ToyBackbone, ema: ToyBackbone, opt, gen: torch.Generator,
                     identity: dict) -> None:
    tmp = work / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for prefix, b in (("", bb), ("ema_", ema)):
        for name, m in _modules(b).items():
            save_model(m, str(tmp / f"{prefix}{name}.safetensors"))  # handles T5's tied embeddings
    save_optimizer(tmp / "optimizer.safetensors", opt.state_dict())
    (tmp / "state.json").write_text(json.dumps({"step": step, "rng": capture_rng({"data": gen}), **identity}))
    final = work / "checkpoint"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def _load_checkpoint(work: Path, bb: ToyBackbone, ema: ToyBackbone, opt, gen: torch.Generator) -> int:
    ck = work / "checkpoint"
    for prefix, b in (("", bb), ("ema_", ema)):
        for name, m in _modules(b).items():
            load_model(m, str(ck / f"{prefix}{name}.safetensors"))
    saved = load_optimizer(ck / "optimizer.safetensors")
    saved["state"] = {int(k): v for k, v in saved["state"].items()}
    opt.load_state_dict(saved)
    state = json.loads((ck / "state.json").read_text())
    restore_rng(state["rng"], {"data": gen})
    return int(state["step"])


def family_sampling_weights(keys: list[str], tags: dict[str, str], family_weights: dict[str, float]) -> torch.Tensor:
    """One sampling weight per training pair: its prompt family's entry in `family_weights` (1 where
    the family is not listed). The pairs of a family are drawn `w` times as often as uniform sampling
    would draw them, before renormalisation."""
    missing = [k for k in keys if k not in tags]
    if missing:
        raise DatasetError(f"{len(missing)} training pairs have no prompt family in the dataset's specs.jsonl "
                           f"(first key: {missing[0]}): rebuild the data with `dvc repro toyworld`")
    w = torch.tensor([float(family_weights.get(tags[k], 1.0)) for k in keys], dtype=torch.float64)
    if not float(w.sum()) > 0:
        raise ParamsError(f"invalid params (teacher_refine.family_weights): {family_weights} give every training "
                          "pair weight 0; give at least one family in the data a weight above 0")
    return w


def train_teacher(p: dict, data_json: Path, out: Path, work: Path, init: Path | None = None,
                  family_weights: dict[str, float] | None = None) -> ToyBackbone:
    """Train (or, from `init`'s teacher, continue training) and write the EMA weights to `out`.
    `family_weights` re-weights how often each prompt family's pairs are drawn (read from the
    dataset's specs.jsonl); None draws pairs uniformly."""
    torch.set_num_threads(int(p["threads"]))
    records = load_dataset_json(data_json, key="--data")  # validated before any model is built
    weights = None
    if family_weights:
        weights = family_sampling_weights(records.keys, read_tags(data_json.parent), family_weights)
    data = ImageTextDataset(records, RESOLUTION, in_memory=True)
    images, prompts = data.images, records.prompts

    if init is None:
        bb = ToyBackbone.new(p["layers"], p["heads"], p["head_dim"], p["text_width"], p["text_layers"], p["shift"],
                             p["seed"], text_encoder=p["text_encoder"], text_init=p["text_encoder_init"])
    else:
        bb = ToyBackbone.load(init)  # raw and EMA weights both start from the teacher's (EMA) weights
        bb.denoiser.train()
        bb.text_encoder.train()
    ema = copy.deepcopy(bb)
    for m in _modules(ema).values():
        m.requires_grad_(False)
    groups = [{"params": list(bb.denoiser.parameters()), "lr_scale": 1.0}]
    if p["text_lr_scale"] > 0:
        groups.append({"params": list(bb.text_encoder.parameters()), "lr_scale": p["text_lr_scale"]})
    else:
        bb.text_encoder.requires_grad_(False)  # frozen, as SD3's text encoders are
    params = [q for g in groups for q in g["params"]]
    opt = torch.optim.AdamW(groups, lr=p["lr"], weight_decay=p["weight_decay"], betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(p["seed"])
    work.mkdir(parents=True, exist_ok=True)
    identity = run_identity(p, prompts, images, init)
    state_json = work / "checkpoint" / "state.json"
    if (work / "checkpoint").exists():
        try:
            why = _identity_diff(json.loads(state_json.read_text()), identity)
        except (OSError, ValueError):
            why = ["no readable state.json (an unfinished or older checkpoint)"]
        if why:
            _move_aside(work, why)
    start = 0
    if state_json.exists():
        start = _load_checkpoint(work, bb, ema, opt, gen)
        print(f"resuming teacher training at step {start}")
    log = open(work / "loss.jsonl", "a")
    bar = tqdm(range(start, p["steps"]), initial=start, total=p["steps"], desc="teacher", unit="step", mininterval=5.0)
    t0 = time.time()
    for step in bar:
        if weights is None:
            idx = torch.randint(len(prompts), (p["batch_size"],), generator=gen)
        else:
            idx = torch.multinomial(weights, p["batch_size"], replacement=True, generator=gen)
        x0 = images[idx]
        drop = torch.rand(p["batch_size"], generator=gen) < p["cfg_dropout"]
        batch_prompts = ["" if d else prompts[i] for i, d in zip(idx.tolist(), drop.tolist())]
        t = bb.sample_training_timesteps(p["batch_size"], gen)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = bb.add_noise(x0, noise, t)
        cond = bb.encode_prompts(batch_prompts)
        pred = bb.model_output(bb.denoiser, x_t, t, cond)
        loss = F.mse_loss(pred, bb.training_target(x0, noise))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite teacher loss at step {step}; last checkpoint kept in {work}")
        for g in opt.param_groups:
            g["lr"] = lr_at(step, p) * g["lr_scale"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, p["grad_clip"])
        opt.step()
        with torch.no_grad():
            for name, m in _modules(bb).items():
                for pe, pm in zip(_modules(ema)[name].parameters(), m.parameters()):
                    pe.lerp_(pm, 1 - p["ema"])
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr_at(step, p):.2e}")
            log.write(json.dumps({"step": step, "loss": loss.item(), "lr": lr_at(step, p),
                                  "elapsed_s": time.time() - t0}) + "\n")
            log.flush()
        if (step + 1) % p["checkpoint_every"] == 0 and step + 1 < p["steps"]:
            _save_checkpoint(work, step + 1, bb, ema, opt, gen, identity)
    log.close()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ema.save(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return ToyBackbone.load(out)


def main(argv=None) -> None:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/toyworld/train/dataset.json")
    ap.add_argument("--out", default="models/toy/teacher_base")
    ap.add_argument("--work", default="data/teacher_run")
    ap.add_argument("--results", default="results/teacher_base")
    ap.add_argument("--steps", type=count(1), default=None, help="override teacher.steps (smoke tests)")
    ap.add_argument("--eval-only", action="store_true", help="only evaluate the teacher already in --out")
    args = ap.parse_args(argv)
    writable_folder(args.out, "the teacher folder", "--out")  # checked before any work
    writable_folder(args.work, "the teacher work folder", "--work")  # checked before any work
    writable_folder(args.results, "the teacher results folder", "--results")  # checked before any work
    p = section("teacher", args.params)
    if args.steps is not None:
        p["steps"] = args.steps
    from train.teacher_eval import evaluate_teacher

    extra = {"steps": p["steps"]}
    if args.eval_only:
        bb = ToyBackbone.load(args.out)
    else:
        t0 = time.time()
        bb = train_teacher(p, Path(args.data), Path(args.out), Path(args.work))
        extra["train_minutes_this_run"] = round((time.time() - t0) / 60, 2)
    evaluate_teacher(bb, p["eval"], Path(args.results), extra=extra)


if __name__ == "__main__":
    run_command(main)
