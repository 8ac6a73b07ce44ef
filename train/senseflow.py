"""`distill` stage: SenseFlow distillation (paper Algorithm 1) of a teacher into a few-step student.

    python -m train.senseflow [--params params.yaml] [--variant NAME] [--out DIR]
                              [--resume | --fresh] [-S key=value ...]
    accelerate launch --config_file configs/accelerate/<x>.yaml -m train.senseflow ...

Networks: generator G (student) and fake score f both start as copies of the teacher's denoiser
(`backbone.init_student`); the real score is the frozen teacher. Every iteration (`train_step`):

  1. sample a coarse anchor t_i and build x_{t_i}: backward simulation from noise with G, or forward
     diffusion of the paired real image (coin with P = backsim_prob)      [train/generator_input.py]
  2. G forward at (x_{t_i}, t_i), with grad only on generator turns (iteration % ttur == 0)
  3. on generator turns: L_G = DMD [+ adv_weight * w(t_i) * hinge_G if vfm] [+ isg_weight * ISG if isg];
     backward, clip, AdamW step; then [ida] f <- lambda f + (1 - lambda) G      [dmd, isg, ida]
  4. every iteration: fake-score denoising step on the detached G sample      [dmd.fake_score_loss]
  5. every iteration, if vfm: discriminator hinge step, real = paired image, both passes judged
     against the paired image's VFM features and the prompt's CLIP features  [vfm_discriminator]

A disabled component is not computed at all (vfm off: no discriminator or CLIP is even loaded).

Precision policy (train.precision; the same under one process, DDP and FSDP2):
- fp32: everything in float32.
- bf16: master weights, gradients and optimizer states of the generator, fake score, EMA and
  discriminator heads stay float32 (FSDP2 reduces gradients in fp32; checkpoints hold fp32). The
  frozen teacher and text encoders are *stored* in bf16 (loaded so: half the memory). Every
  network forward runs under bf16 autocast (`precision_context`, around the whole iteration) with
  autocast's weight-cast cache off (with it, FSDP2 + bf16 silently dropped gradients). Loss math
  (DMD gradient, denoising and ISG losses) is float32. The VAE always runs in float32 with
  autocast switched off (backbones/vae.py), as released; so does the schedule arithmetic.

Sharding (train.fsdp): FSDP2 `fully_shard` per transformer/UNet block, then the root, applied to the
meta-device skeletons of the generator, fake score and EMA before any weight is allocated; the
weights are then filled shard by shard from the teacher's files (train.init_student: from an
earlier student). train.shard_teacher shards the frozen teacher and T5 text encoders too; train.cpu_offload keeps shards,
gradients and optimizer states in CPU memory. The discriminator (frozen DINOv2 + heads) is
replicated with DDP, as released. Launch: torchrun, or `accelerate launch` with
configs/accelerate/fsdp_gpu.yaml or fsdp2.yaml (see README).
Params: train/settings.py (defaults < configs/families/<preset>.yaml < params.yaml < variant < -S).
Outputs in --out: checkpoints/step_<N>/ (train/checkpoint.py), student/ (final generator, or its
EMA when train.ema > 0, as a diffusers folder), dvclive/ and samples/ (train/tracking.py),
along_training.jsonl and along_training/ (metrics along training, train.eval_every:
train/probe.py), alarms.jsonl, summary.json (copied to --results when given). An existing checkpoint is resumed automatically (bit-for-bit with the same world size) when it was
written with the same settings (train/run_folder.py lists the keys that may differ); a run of other
settings is never deleted: the start refuses, or (--fresh, --on-change supersede) moves it aside.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from diffusers.utils import logging as diffusers_logging
from torch import nn
from tqdm import tqdm
from transformers.utils import logging as transformers_logging

from backbones import backbone_class, load_backbone
from backbones.base import Backbone
from configs.cli import ArgumentParser, UserError, run_command
from train.alarms import check_alarms, describe, fake_loss_cv, logit_gap, sample_signals
from train.batches import StepBatchSampler
from train.checkpoint import (CheckpointDamagedError, CheckpointError, export_run_student, load_run_checkpoint,
                              save_run_checkpoint)
from configs.paths import readable_folder, supersede, supersede_entries, writable_folder
from train.run_folder import StartPlan, plan_start, teacher_weights
from train.clip_text import ClipTextEncoder
from protocols.dataset_json import DatasetRecords, load_dataset_json
from train.dataset import ImageTextDataset
from train.dmd import dmd_loss, dmd_targets, fake_score_loss
from train.generator_input import generator_input
from train.ida import ida_update
from train.isg import isg_loss
from configs.params import ParamsError
from train.settings import PROVENANCE, guidance_range, load_settings
from train.sharding import full_tensor, resharded, shard_like, unwrap
from train.tracking import RollingStd, WindowMeans, log_metrics, save_sample_grid, start_tracking, tracker_project
from train.vfm_discriminator import VFMDiscriminator, adversarial_time_weight, d_hinge_loss, g_hinge_loss


class NonFiniteLossError(UserError, FloatingPointError):
    """A loss term became NaN/Inf; the run stops before applying it."""


@dataclass
class Run:
    """Everything one training run holds. `generator`, `fake_score` and `discriminator` are the
    (possibly DDP-wrapped or FSDP-sharded) modules that are called; `optimizers` maps a name to
    (the plain module whose parameters it updates, its AdamW)."""

    settings: dict
    out: Path
    accelerator: Accelerator
    backbone: Backbone
    teacher: nn.Module
    generator: nn.Module
    fake_score: nn.Module
    discriminator: nn.Module | None
    clip_text: ClipTextEncoder | None
    ema: nn.Module | None
    optimizers: dict[str, tuple[nn.Module, torch.optim.Optimizer]]
    anchors: torch.Tensor
    data: ImageTextDataset
    rngs: dict[str, torch.Generator]  # "decisions": same on all ranks; "noise": per rank
    fake_losses: RollingStd
    last_checkpoint: Path | None = None
    probe: object | None = None      # metrics along training: train.probe.ProbeSet (every rank)
    probe_scorer: object | None = None  # its TrainingProbe (main process only)
    probe_key: str = ""                 # train.probe.probe_key: the curve's points must share it
    base_lrs: dict[str, float] = field(default_factory=dict)
    warned_missing: dict[str, set] = field(default_factory=dict)  # gradient-audit warnings already printed
    teacher_weights: str | None = None  # train.run_folder.teacher_weights, recorded in every checkpoint
    audited: dict[str, list] = field(default_factory=dict)  # per optimizer: parameters that must get a gradient

    def __post_init__(self):
        for name, (module, _) in self.optimizers.items():
            unused = self.backbone.unused_parameters(module)
            self.audited[name] = [p for n, p in module.named_parameters() if n not in unused]

    def history_state(self) -> dict:
        return {"fake_losses": self.fake_losses.state()}

    def load_history_state(self, state: dict) -> None:
        self.fake_losses.load(state.get("fake_losses", []))


# ---- building --------------------------------------------------------------------------------
def _seed_everything(seed: int, rank: int) -> dict[str, torch.Generator]:
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)
    return {"decisions": torch.Generator().manual_seed(seed),
            "noise": torch.Generator().manual_seed(seed + 104_729 * (rank + 1))}


def _load_teacher(s: dict, device) -> Backbone:
    """The family's backbone, its networks in the precision policy's storage dtype (bf16 runs hold
    the frozen teacher and text encoders in bf16; the VAE stays fp32); `resolution` is passed when
    the family's loader takes it."""
    options = {}
    if "resolution" in inspect.signature(backbone_class(s["family"]).load).parameters:
        options["resolution"] = s["resolution"]
    dtype = torch.bfloat16 if s["precision"] == "bf16" else torch.float32
    return load_backbone(s["family"], s["teacher"], device=device, dtype=dtype, **options)


def check_inputs(s: dict, device: torch.device | None = None) -> DatasetRecords:
    """What the run reads, checked before any model loads or anything is written, each problem naming
    its params key: the dataset JSON (returned), the model folders, options the device cannot run."""
    records = load_dataset_json(s["dataset"])
    readable_folder(s["teacher"], "the teacher folder", "train.teacher")
    if s["vfm"]:
        readable_folder(s["vfm_backbone"], "the DINOv2 folder of the VFM discriminator", "train.vfm_backbone")
        readable_folder(s["clip"], "the CLIP folder of the discriminator's text condition", "train.clip")
    if s["init_student"]:
        readable_folder(s["init_student"], "the student to start from", "train.init_student")
    device_type = device.type if device is not None else "cuda" if torch.cuda.is_available() else "cpu"
    if s["cpu_offload"] and device_type != "cuda":
        raise ParamsError("FSDP2 CPU offload needs CUDA GPUs (train.cpu_offload): it moves shards, gradients and "
                          "optimizer states from GPU to CPU memory; set train.cpu_offload: false here")
    return records


def make_optimizer(params, lr: float, s: dict) -> torch.optim.Optimizer:
    """train.optimizer: `adamw` (torch) or `adamw8bit`: 8-bit AdamW states (the released SD 3.5 Large
    and FLUX trainers use bitsandbytes' AdamW8bit; here torchao's AdamW8bit, which handles FSDP2's
    DTensor parameters and checkpoints through torch.distributed.checkpoint; needs `pip install
    torchao`). Parameters under 4096 elements keep fp32 states, as in both libraries."""
    kwargs = dict(lr=lr, betas=tuple(s["betas"]), eps=s["eps"], weight_decay=s["weight_decay"])
    if s["optimizer"] == "adamw8bit":
        try:
            from torchao.optim import AdamW8bit
        except ImportError:
            raise ParamsError("train.optimizer: adamw8bit needs the torchao package (pip install torchao); "
                              "or set train.optimizer: adamw") from None
        return AdamW8bit(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs, foreach=True)  # one multi-tensor update: the same numbers as the per-tensor loop


def _replicated(module: nn.Module, accelerator: Accelerator) -> nn.Module:
    """The discriminator as released: replicated with DDP over all processes (never sharded, also
    under an accelerate FSDP launch, whose plugin would otherwise wrap it)."""
    module = module.to(accelerator.device)
    if accelerator.num_processes == 1:
        return module
    device_ids = [accelerator.device.index] if accelerator.device.type == "cuda" else None
    # gradients as views of DDP's buckets: no second copy of the heads' gradients
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, gradient_as_bucket_view=True)


def make_accelerator(s: dict, out: Path) -> Accelerator:
    """The launch's Accelerator (process group, device, the train.trackers), checked against the launcher."""
    # precision is the loop's own policy (precision_context), not accelerate's mixed_precision
    handlers = []
    if s["cpu_offload"] and torch.cuda.is_available():  # offloaded gradients are reduced on CPU too
        from accelerate.utils import InitProcessGroupKwargs

        handlers.append(InitProcessGroupKwargs(backend="cpu:gloo,cuda:nccl"))
    accelerator = Accelerator(mixed_precision="no", log_with=list(s["trackers"]), kwargs_handlers=handlers,
                              project_config=tracker_project(out))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise RuntimeError(f"launched as {launched} processes but accelerate runs {accelerator.num_processes}: every "
                           f"process would train alone. On CPU set ACCELERATE_USE_CPU=true (torchrun) or use "
                           f"configs/accelerate/multi_cpu.yaml")
    if accelerator.distributed_type == DistributedType.FSDP and not s["fsdp"]:
        raise ParamsError("launched with an accelerate FSDP config but train.fsdp is false: add -S train.fsdp=true "
                          "(the loop applies FSDP2 itself, identically to the generator and the fake score)")
    return accelerator


def build_run(settings: dict, out: str | Path, accelerator: Accelerator | None = None) -> Run:
    """Load data and models, shard or replicate them for the launch (single / DDP / FSDP2), create
    optimizers, under the precision policy of the module docstring. User-fixable problems (paths,
    params) raise before any model is loaded where possible."""
    s, out = dict(settings), Path(out)
    accelerator = accelerator or make_accelerator(s, out)
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    diffusers_logging.disable_progress_bar()  # per-file load/save bars would drown the loop's own
    transformers_logging.disable_progress_bar()
    records = check_inputs(s, accelerator.device)
    rngs = _seed_everything(s["seed"], accelerator.process_index)
    device = accelerator.device

    backbone = _load_teacher(s, device)
    teacher = backbone.denoiser.eval().requires_grad_(False)
    shard = mesh = None
    if s["fsdp"]:
        from torch.distributed.device_mesh import init_device_mesh

        if not torch.distributed.is_initialized():  # one process (e.g. one GPU): FSDP2 needs a group of one
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                                 store=torch.distributed.HashStore(), rank=0, world_size=1)
        mesh = init_device_mesh(device.type, (accelerator.num_processes,))

        shard = functools.partial(shard_like, mesh=mesh, cpu_offload=s["cpu_offload"])

    if s["fsdp"] and s["shard_teacher"]:  # first: the start-up peak is one bf16 teacher, not teacher + students
        from torch.distributed.fsdp import fully_shard

        shard_like(teacher, mesh, reshard_after_forward=True)  # frozen FSDP2, gathered per block on every rank
        for encoder in backbone.shardable_text_encoders():  # T5: gathered whole for the no-grad prompt encoding
            fully_shard(encoder, mesh=mesh, reshard_after_forward=True)  # at the iteration start (no activations held)
    # trainable nets: fp32 master weights, built shard by shard from the weight files (never a full
    # extra copy on the device); the generator optionally from an earlier student (train.init_student)
    generator = backbone.init_student(device, torch.float32, weights=s["init_student"], shard=shard)
    fake_score = backbone.init_student(device, torch.float32, shard=shard)
    ema = None
    if s["ema"] > 0:
        ema = backbone.init_student(device, torch.float32, weights=s["init_student"], shard=shard)
        ema.requires_grad_(False)
    for net in (generator, fake_score):
        net.train()
        if s["gradient_checkpointing"]:
            net.enable_gradient_checkpointing()
    vae = getattr(backbone, "vae", None)
    if s["gradient_checkpointing"] and s["vfm"] and vae is not None:
        vae.enable_gradient_checkpointing()  # the adversarial gradient runs through the decoder (released: on)

    discriminator = clip_text = None
    if s["vfm"]:
        clip_text = ClipTextEncoder.from_pretrained(s["clip"], device)
        discriminator = VFMDiscriminator.from_pretrained(
            s["vfm_backbone"], clip_text.dim, feature_layers=s["vfm_layers"], downsample=s["vfm_downsample"],
            diffaug=bool(s["diffaug"]), policy=s["diffaug"] or "", resolution=s["vfm_resolution"]).train()
        if s["gradient_checkpointing"]:
            discriminator.enable_gradient_checkpointing()
        discriminator = _replicated(discriminator, accelerator)
    if not s["fsdp"]:
        generator, fake_score = accelerator.prepare_model(generator), accelerator.prepare_model(fake_score)

    base_lrs = {"generator": s["lr_generator"], "fake_score": s["lr_fake"]}
    optimizers = {"generator": (unwrap(generator), make_optimizer(generator.parameters(), s["lr_generator"], s)),
                  "fake_score": (unwrap(fake_score), make_optimizer(fake_score.parameters(), s["lr_fake"], s))}
    if discriminator is not None:
        heads = unwrap(discriminator).heads
        optimizers["discriminator"] = (heads, make_optimizer(heads.parameters(), s["lr_discriminator"], s))
        base_lrs["discriminator"] = s["lr_discriminator"]

    return Run(settings=s, out=out, accelerator=accelerator, backbone=backbone, teacher=teacher,
               generator=generator, fake_score=fake_score, discriminator=discriminator, clip_text=clip_text,
               ema=ema, optimizers=optimizers, anchors=backbone.anchor_timesteps(s["num_steps"]).cpu(),
               data=ImageTextDataset(records, s["resolution"]), rngs=rngs,
               fake_losses=RollingStd(s["loss_window"]), base_lrs=base_lrs)


# ---- one iteration -----------------------------------------------------------------------------
def draw_guidance(value, key: str, rng: torch.Generator) -> float:
    """A fixed scale, or U(lo, hi) drawn per call from the rank-shared generator."""
    lo, hi = guidance_range(value, key)
    return lo if lo == hi else lo + (hi - lo) * float(torch.rand((), generator=rng))


def set_learning_rates(run: Run, step: int) -> dict[str, float]:
    s = run.settings
    warm = s["warmup_steps"]
    factor = 1.0 if step >= warm else s["warmup_start"] + (1 - s["warmup_start"]) * step / warm
    lrs = {}
    for name, (_, opt) in run.optimizers.items():
        for group in opt.param_groups:
            if torch.is_tensor(group["lr"]):  # torchao's 8-bit AdamW keeps lr as a tensor
                group["lr"].fill_(run.base_lrs[name] * factor)
            else:
                group["lr"] = run.base_lrs[name] * factor
        lrs[f"lr_{name}"] = run.base_lrs[name] * factor
    return lrs


def _stop_message(run: Run, step: int, what: str) -> str:
    where = str(run.last_checkpoint) if run.last_checkpoint else "none written yet"
    return (f"{what} at iteration {step}; stopping without applying it. Last good checkpoint: {where}. "
            f"Rerun with lower learning rates (-S train.lr_generator=... -S train.lr_fake=... "
            f"-S train.lr_discriminator=...), a lower train.grad_clip or train.precision: fp32: the run resumes "
            f"from that checkpoint with the new values (train/checkpoint.py ADJUSTABLE_ON_RESUME).")


def ensure_finite(run: Run, step: int, terms: dict[str, torch.Tensor]) -> None:
    """Stop (on every rank) before a NaN/Inf loss is applied; the last checkpoint stays intact."""
    bad = torch.stack([(~torch.isfinite(v.detach().float())).any() for v in terms.values()]).float()
    if run.accelerator.num_processes > 1:
        bad = run.accelerator.reduce(bad.to(run.accelerator.device), reduction="sum")
    if bad.sum() > 0:
        names = [k for k, b in zip(terms, bad.tolist()) if b > 0]
        raise NonFiniteLossError(_stop_message(run, step, f"non-finite loss {names}"))


def params_without_gradient(run: Run, params: list[torch.Tensor]) -> int:
    """How many of `params` have no gradient, or an all-zero or non-finite one, summed over every
    rank's shard (one all-reduce under FSDP). A silent precision/sharding bug (e.g. autocast's
    weight-cast cache under FSDP2) shows up here long before it shows in the losses."""
    device = run.accelerator.device
    grads = [p.grad for p in params]
    present = [i for i, g in enumerate(grads) if g is not None and g.numel()]
    local = [grads[i].to_local() if hasattr(grads[i], "to_local") else grads[i] for i in present]
    mass = torch.zeros(len(params), device=device)
    if local:  # one fused L1 norm per parameter (a hot path: every optimizer step)
        mass[present] = torch.stack(torch._foreach_norm([g.detach() for g in local], 1)).float().to(device)
    if run.settings["fsdp"] and run.accelerator.num_processes > 1:
        torch.distributed.all_reduce(mass)
    return int(((mass == 0) | ~torch.isfinite(mass)).sum())


def clip_and_step(run: Run, name: str, step: int, zero_weight: bool = False) -> dict[str, float]:
    """Clip the accumulated gradients of optimizer `name`, step, clear them. Logs the gradient norm
    before clipping and the number of parameters that got no usable gradient (warned about, unless
    `zero_weight` says the loss was weighted 0 for the whole batch, e.g. the discriminator at the
    first anchor under the alpha^2 time weight); a non-finite norm stops the run before the step is
    applied (NonFiniteLossError)."""
    _, opt = run.optimizers[name]
    params = [p for g in opt.param_groups for p in g["params"]]
    missing = params_without_gradient(run, run.audited[name])
    if missing and not zero_weight and missing not in run.warned_missing.setdefault(name, set()):
        run.warned_missing[name].add(missing)
        run.accelerator.print(f"senseflow: warning: {missing} of {len(run.audited[name])} {name} parameters got no "
                              f"usable gradient at iteration {step}")
    clip = run.settings["grad_clip"] if run.settings["grad_clip"] > 0 else math.inf
    norm = float(full_tensor(torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)))
    if not math.isfinite(norm):
        opt.zero_grad(set_to_none=True)
        raise NonFiniteLossError(_stop_message(run, step, f"non-finite gradient norm of the {name} ({norm})"))
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {f"grad_norm_{name}": norm, f"params_without_grad_{name}": float(missing)}


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Temporarily stop gradients into `module`'s parameters (the discriminator heads while the
    generator's adversarial term back-propagates through the discriminator)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def precision_context(run: Run):
    """The precision policy (module docstring), applied around a whole iteration: bf16 autocast with
    its weight-cast cache off, or nothing (fp32)."""
    if run.settings["precision"] == "bf16":
        # cache off: with the cache, a sharded net's no-grad forward followed by its grad forward in
        # one region reuses casts of FSDP2's freed unsharded weights, and those weights get no gradient
        return torch.autocast(run.accelerator.device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def train_step(run: Run, step: int, images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
    """One iteration (`senseflow_iteration`) under the run's precision policy."""
    with precision_context(run):
        return senseflow_iteration(run, step, images, prompts)


def senseflow_iteration(run: Run, step: int, images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
    """One iteration of Algorithm 1 on a batch of paired real images (B, 3, H, W) in [-1, 1] and
    prompts. Returns the logged values (loss terms, grad norms, lrs) as floats."""
    s, bb, acc = run.settings, run.backbone, run.accelerator
    decisions, noise = run.rngs["decisions"], run.rngs["noise"]
    logs = set_learning_rates(run, step)
    images = images.to(acc.device)
    with torch.no_grad():
        cond = bb.encode_prompts(prompts)
        x_real = bb.encode_images(images, generator=noise)

    # 1. coarse timestep t_i and the generator input x_{t_i}
    inp = generator_input(bb, unwrap(run.generator), x_real, cond, run.anchors, s["backsim_prob"], decisions, noise)
    logs["backsim_fraction"] = float(inp.backsim)

    # 2. generator forward, with grad only on its turn
    gen_turn = step % s["ttur"] == 0
    with torch.set_grad_enabled(gen_turn):
        gen_out = bb.model_output(run.generator, inp.x_t, inp.t, cond)
        x0_gen = bb.to_x0(gen_out, inp.x_t, inp.t)
    logs.update(sample_signals(x0_gen, x_real))  # collapse alarms (train/alarms.py)

    if s["vfm"]:
        disc = unwrap(run.discriminator)
        with torch.no_grad():
            text = run.clip_text(prompts)
            reference = disc.reference_features(images)
        time_weight = adversarial_time_weight(bb, inp.t, s["adv_time_weight"]).to(acc.device)
    generated_images = None

    # 3. generator update: L_G = DMD [+ adversarial] [+ ISG]; then IDA
    if gen_turn:
        targets = dmd_targets(
            bb, run.teacher, run.fake_score, x0_gen, cond, draw_guidance(s["real_guidance"], "real_guidance", decisions),
            t=bb.sample_training_timesteps(len(prompts), noise) if s["dmd_t_sampling"] == "training" else None,
            min_frac=s["dmd_t_min"], max_frac=s["dmd_t_max"], shift=s["dmd_t_shift"], generator=noise)
        loss_dmd, _ = dmd_loss(x0_gen, targets.x0_real, targets.x0_fake)
        terms = {"loss_dmd": loss_dmd}
        loss_g = loss_dmd
        if s["vfm"]:
            generated_images = bb.decode(x0_gen)
            with frozen(disc.heads):
                logits = disc(generated_images, text, ref_features=reference, generator=noise)
            terms["loss_adv"] = g_hinge_loss(logits, s["adv_weight"] * time_weight)
            loss_g = loss_g + terms["loss_adv"]
        if s["isg"]:
            terms["loss_isg"], _ = isg_loss(
                bb, run.teacher, unwrap(run.generator), inp.x_t, gen_out, run.anchors, inp.anchor_index, cond,
                draw_guidance(s["isg_guidance"], "isg_guidance", decisions), margin=s["isg_margin"],
                shift=s["isg_shift"], loss_type=s["isg_loss"], huber_c=s["isg_huber_c"], generator=decisions)
            loss_g = loss_g + s["isg_weight"] * terms["loss_isg"]
        terms["loss_generator"] = loss_g
        ensure_finite(run, step, terms)
        acc.backward(loss_g)
        logs.update(clip_and_step(run, "generator", step))
        logs.update({k: float(v.detach()) for k, v in terms.items()})
        if s["ida"]:
            ida_update(*resharded(unwrap(run.fake_score), unwrap(run.generator)), s["ida_lambda"])
        if run.ema is not None:  # the same lerp: ema <- d * ema + (1 - d) * G
            ida_update(*resharded(run.ema, unwrap(run.generator)), s["ema"])

    # 4. fake score: denoising loss on the detached generator sample, every iteration
    loss_fake, _ = fake_score_loss(bb, run.fake_score, x0_gen.detach(), cond, generator=noise)
    ensure_finite(run, step, {"loss_fake_score": loss_fake})
    acc.backward(loss_fake)
    logs.update(clip_and_step(run, "fake_score", step))
    logs["loss_fake_score"] = float(loss_fake.detach())
    run.fake_losses.add(logs["loss_fake_score"])

    # 5. discriminator: hinge, real = paired image, fake = generated; reference = paired image
    if s["vfm"]:
        with torch.no_grad():
            fake_images = bb.decode(x0_gen.detach()) if generated_images is None else generated_images.detach()
        with acc.no_sync(run.discriminator):  # real and fake back-propagate separately (released), one all-reduce
            real_logits = run.discriminator(images, text, ref_features=reference, generator=noise)
            loss_d_real = d_hinge_loss(real_logits, None, time_weight)
            ensure_finite(run, step, {"loss_d_real": loss_d_real})
            acc.backward(loss_d_real)
        fake_logits = run.discriminator(fake_images, text, ref_features=reference, generator=noise)
        loss_d_fake = d_hinge_loss(None, fake_logits, time_weight)
        ensure_finite(run, step, {"loss_d_fake": loss_d_fake})
        acc.backward(loss_d_fake)
        logs.update(clip_and_step(run, "discriminator", step, zero_weight=not bool(time_weight.any())))
        logs.update(loss_d_real=float(loss_d_real.detach()), loss_d_fake=float(loss_d_fake.detach()),
                    d_logit_gap=logit_gap(real_logits, fake_logits))
    return logs


# ---- alarms (train/alarms.py): <out>/alarms.jsonl, one line per alarm, read into summary.json -----
def record_alarms(acc: Accelerator, out: Path, fired: list[dict]) -> None:
    if not fired or not acc.is_main_process:
        return
    with open(out / "alarms.jsonl", "a") as f:
        for alarm in fired:
            acc.print(f"senseflow: warning: {describe(alarm)}")
            f.write(json.dumps(alarm) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def read_alarms(out: Path) -> list[dict]:
    return read_jsonl(out / "alarms.jsonl")


def keep_alarms_until(out: Path, step: int) -> None:
    kept = [a for a in read_alarms(out) if a["step"] <= step]
    if (out / "alarms.jsonl").is_file():
        (out / "alarms.jsonl").write_text("".join(json.dumps(a) + "\n" for a in kept))


# ---- samples, the loop, the CLI ----------------------------------------------------------------
@torch.no_grad()
def sample_images(run: Run, count: int) -> torch.Tensor:
    """Student samples for fixed prompts and noise (own generators: the training RNG is untouched).
    Every rank runs it (sharded nets need all ranks); returns (count, 3, H, W) in [-1, 1]."""
    s, bb, device = run.settings, run.backbone, run.accelerator.device
    rows = np.linspace(0, len(run.data) - 1, count).round().astype(int).tolist()
    prompts = [run.data.records.prompts[i] for i in rows]
    shape = bb.latent_shape(s["resolution"], s["resolution"])
    noise = torch.randn((count, *shape), generator=torch.Generator().manual_seed(s["seed"] + 7)).to(device)
    net = run.ema if run.ema is not None else unwrap(run.generator)
    with precision_context(run):
        x0 = bb.sample(net, bb.encode_prompts(prompts), noise, s["num_steps"],
                       generator=torch.Generator(device).manual_seed(s["seed"] + 8))
    return bb.decode(x0)


# ---- metrics along training (train/probe.py): fixed prompts and noise, every eval_every -----
def probe_images(run: Run, net: nn.Module, steps: int, sampler: str, guidance: float) -> np.ndarray:
    """The probe prompts sampled by `net` with the probe's fixed noise (train.probe.sample_probe),
    under the run's precision policy. Every rank runs it (sharded nets need all ranks) on the whole set."""
    from train.probe import sample_probe

    s = run.settings
    return sample_probe(run.backbone, net, run.probe, resolution=s["resolution"], steps=steps, sampler=sampler,
                        guidance=guidance, batch_size=s["eval_batch_size"],
                        precision=functools.partial(precision_context, run))


def start_probe(run: Run, start: int) -> None:
    """The probe set on every rank; on the main process its scorer with the teacher's reference images
    (`<out>/along_training/reference.npz`, reused while reference_record matches)."""
    s, acc = run.settings, run.accelerator
    if not s["eval_every"]:
        return
    # the evaluation layer's probe (CLIP / Inception features, the ToyWorld oracle)
    from train.probe import (TrainingProbe, cached_reference, keep_points_until, probe_key, probe_set, reference_record,
                                         teacher_guidance)

    run.probe = probe_set(s, run.data.records.prompts)
    record, cache = reference_record(s, run.probe), run.out / "along_training" / "reference.npz"
    run.probe_key = probe_key(record, s)

    images = cached_reference(cache, record) if acc.is_main_process else None
    reuse = _agreed(acc, lambda: images is not None)
    if not reuse:
        images = probe_images(run, run.teacher, s["eval_teacher_steps"], "euler", teacher_guidance(s))
    if acc.is_main_process:
        if not reuse:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, images=images, record=np.array(json.dumps(record)),
                                prompts=np.array(run.probe.prompts))
            tmp.replace(cache)
        run.probe_scorer = TrainingProbe(s, run.probe, str(acc.device))
        run.probe_scorer.set_reference(images)
        aside = keep_points_until(run.out / "along_training.jsonl", start, run.probe_key)
        if aside:
            acc.print(f"senseflow: the metrics along training so far used another probe (train.eval_* changed); "
                      f"they were moved to {aside} and the curve starts again")
    acc.wait_for_everyone()


def evaluate_probe(run: Run, step: int) -> dict[str, float]:
    """Sample the probe with the student (its EMA when kept) on every rank; score, log to the trackers and
    append to `<out>/along_training.jsonl` on the main process."""
    from train.probe import append_point

    s, acc = run.settings, run.accelerator
    net = run.ema if run.ema is not None else unwrap(run.generator)
    was_training = net.training
    net.eval()
    images = probe_images(run, net, s["num_steps"], s["eval_sampler"], 1.0)
    net.train(was_training)
    values = {}
    if acc.is_main_process:
        values = run.probe_scorer.measure(images)
        log_metrics(acc, values, step=step)
        append_point(run.out / "along_training.jsonl", step, values, run.probe_key)
        tqdm.write(f"senseflow: iteration {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
    acc.wait_for_everyone()
    return values


def export_final_student(run: Run) -> Path:
    """`<out>/student/<denoiser_subfolder>/` from the live generator (its EMA when kept), which is
    the state of the checkpoint at the run's last step; written to a temp folder, then renamed
    (under FSDP the full weights are gathered here, and only here)."""
    target, tmp = run.out / "student", run.out / ".student.tmp"
    if run.accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    export_run_student(run, tmp)
    if run.accelerator.is_main_process:
        if target.exists():
            if _exported_step(run.out) != run.settings["steps"]:  # another step's student (maybe evaluated): keep it
                aside = supersede_entries(run.out, ["student", "summary.json"])
                run.accelerator.print(f"senseflow: the student exported at another step was moved to {aside}")
            else:  # re-export of this very step from the same checkpoint: the same weights
                old = run.out / ".student.old"
                shutil.rmtree(old, ignore_errors=True)
                target.rename(old)
                shutil.rmtree(old)
        tmp.rename(target)
    run.accelerator.wait_for_everyone()
    return target


def _exported_step(out: Path) -> int | None:
    """The step the exported student/ was taken at (summary.json of the run that exported it)."""
    try:
        return int(json.loads((out / "summary.json").read_text())["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _agreed(acc: Accelerator, decide):
    """`decide()` on rank 0, its result (or its exception) on every rank: all ranks act on one
    decision about the run folder."""
    outcome = [None, None]
    if acc.is_main_process:
        try:
            outcome = [decide(), None]
        except Exception as e:  # re-raised on every rank below
            outcome = [None, e]
    if acc.num_processes > 1:
        torch.distributed.broadcast_object_list(outcome, src=0)
    if outcome[1] is not None:
        raise outcome[1]
    return outcome[0]


def _resume(run: Run, plan: StartPlan) -> tuple[int, Path | None]:
    """Load the newest checkpoint of the plan that loads on every rank; warn and fall back to the
    previous one for a damaged checkpoint. Returns (start iteration, checkpoint)."""
    acc = run.accelerator
    for ckpt in plan.checkpoints:
        error, status = None, 0  # 0 loaded, 1 damaged (fall back), 2 unusable (stop)
        try:
            start = load_run_checkpoint(run, ckpt)
        except CheckpointDamagedError as e:
            error, status = e, 1
        except CheckpointError as e:
            error, status = e, 2
        flag = torch.tensor(float(status), device=acc.device)
        if acc.num_processes > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag == 0:
            return start, ckpt
        if flag == 2:
            raise error or CheckpointError(f"another rank could not use checkpoint {ckpt}")
        acc.print(f"senseflow: warning: {error or 'another rank failed to load ' + str(ckpt)}; falling back to the "
                  f"previous checkpoint")
    raise CheckpointError(f"no checkpoint in {str(run.out / 'checkpoints')!r} loads ({len(plan.checkpoints)} tried). "
                          f"Nothing was deleted. Start over with --fresh (moves the run to "
                          f"{run.out.name}.superseded/) or use another --out")


def train(settings: dict, out: str | Path, resume: str = "auto") -> Run:
    """Run (or continue) a distillation in `out`. resume (train/run_folder.py): 'auto' continue from the
    newest intact checkpoint, refuse if it has other settings; 'require' the same, error without one;
    'fresh' move the folder's content aside and start over; 'supersede' like auto, but move a run of
    other settings aside instead of refusing (the DVC stage). Nothing is ever deleted."""
    out = writable_folder(out, "the run folder", "--out")  # before any work: nothing is loaded or written yet
    check_inputs(settings)
    if settings["eval_every"]:  # the metrics along training (start_probe): their inputs too, before any model loads
        from train.probe import check_probe_inputs

        check_probe_inputs(settings)
    acc = make_accelerator(settings, out)
    teacher = _agreed(acc, lambda: teacher_weights(settings))  # hashed once (cached on disk); same on every rank
    plan = _agreed(acc, lambda: plan_start(out, settings, resume, acc.num_processes, teacher))  # before any model loads
    for warning in plan.warnings:
        acc.print(f"senseflow: warning: {warning}")
    if plan.action == "supersede":
        if acc.is_main_process:
            moved = supersede(out)
            acc.print(f"senseflow: {plan.reason}: moved the previous run in {out} to {moved}")
        acc.wait_for_everyone()
    run = build_run(settings, out, acc)
    run.teacher_weights = teacher
    s = run.settings
    start, ckpt = 0, None
    if plan.action == "resume":
        start, ckpt = _resume(run, plan)
        run.last_checkpoint = ckpt
        if plan.adjusted:
            acc.print("senseflow: continuing from " + str(ckpt) + " with changed settings: " +
                      ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in plan.adjusted.items()))
    start_tracking(acc, out, s, resume=ckpt is not None)
    if acc.is_main_process:
        keep_alarms_until(out, start)  # a rerun from a checkpoint drops the alarms of the iterations it repeats
    start_probe(run, start)
    if acc.is_main_process:
        acc.print(f"senseflow: family {s['family']} preset {s['preset']}, {acc.num_processes} process(es)"
                  f"{' FSDP2' if s['fsdp'] else ''}, {s['precision']}, iterations {start}..{s['steps']}"
                  f"{f' (resumed from {ckpt})' if ckpt else ''}")
        for key, where in s.get(PROVENANCE, {}).items():
            acc.print(f"senseflow:   {key} = {where['value']!r} (preset {s['preset']}: {where['preset']!r}; "
                      f"set by {where['by']})")
    loader = torch.utils.data.DataLoader(
        run.data, batch_sampler=StepBatchSampler(len(run.data), s["batch_size"], s["seed"], start, s["steps"],
                                                 acc.process_index, acc.num_processes),
        num_workers=s["num_workers"], generator=torch.Generator())  # own seed source: global RNG untouched
    means, bar = WindowMeans(), tqdm(total=s["steps"], initial=start, desc="senseflow", unit="it",
                                      disable=not acc.is_main_process, mininterval=2.0)
    times = []
    try:
        if s["eval_every"] and (start == 0 or start % s["eval_every"] == 0) and _agreed(
                acc, lambda: start not in {p["step"] for p in read_jsonl(out / "along_training.jsonl")}):
            evaluate_probe(run, start)  # iteration 0: the student before training; or a point a kill lost
        for step, (images, prompts) in enumerate(loader, start=start):
            t0 = time.perf_counter()
            logs = train_step(run, step, images, list(prompts))
            times.append(time.perf_counter() - t0)
            means.add({**logs, "s_per_iter": times[-1]})
            done = step + 1
            if done % s["log_every"] == 0 or done == s["steps"]:
                values = {**means.pop(), "fake_score_loss_std": run.fake_losses.std,
                          "fake_loss_cv": fake_loss_cv(run.fake_losses.std, run.fake_losses.mean)}
                fired = check_alarms(values, s, done)
                log_metrics(acc, {**values, **{f"alarm/{a['signal']}": 1.0 for a in fired}}, step=done)
                record_alarms(acc, out, fired)
                bar.set_postfix(fake=f"{values['loss_fake_score']:.4f}", s_it=f"{values['s_per_iter']:.3f}")
            if done % s["checkpoint_every"] == 0 or done == s["steps"]:
                run.last_checkpoint = save_run_checkpoint(run, done)
            if (s["sample_every"] and done % s["sample_every"] == 0) or done == s["steps"]:
                grid = sample_images(run, s["sample_prompts"])
                save_sample_grid(acc, grid, out / "samples" / f"step_{done:07d}.png", done)
            if s["eval_every"] and (done % s["eval_every"] == 0 or done == s["steps"]):
                evaluate_probe(run, done)
            bar.update(1)
        exported = start < s["steps"] or not (out / "student").exists() or _exported_step(out) != s["steps"]
        if exported:
            export_final_student(run)
        if acc.is_main_process and (times or exported):
            s_per_iter = float(np.mean(times[min(len(times) - 1, 5):])) if times else float("nan")
            (out / "summary.json").write_text(json.dumps({
                "steps": s["steps"], "resumed_from": start, "world_size": acc.num_processes,
                "s_per_iter": s_per_iter, "fake_score_loss_std": run.fake_losses.std,
                "resumed_with_changes": {k: list(v) for k, v in plan.adjusted.items()},
                "alarms": read_alarms(out),
                "along_training": read_jsonl(out / "along_training.jsonl"),
                "differs_from_preset": s.get(PROVENANCE, {})}, indent=2, default=str))
    finally:
        bar.close()
        for tracker in acc.trackers:  # not end_training(): that also destroys the process group
            tracker.finish()
    return run


def main(argv=None) -> Run:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--variant", default=None, help="apply params 'variants.<name>' on top of train")
    ap.add_argument("--out", default=None, help="run directory (default runs/distill/<variant or 'default'>)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="require a checkpoint in --out and continue from it")
    group.add_argument("--fresh", action="store_true",
                       help="move the run in --out aside (to <out>.superseded/<time>/) and start over")
    ap.add_argument("--on-change", choices=("refuse", "supersede"), default="refuse",
                    help="a checkpoint in --out written with other settings: refuse to start (default), or move "
                         "that run aside and start over (the DVC stage uses this)")
    ap.add_argument("--results", default=None,
                    help="also copy the run's summary.json (alarms, metrics along training) into this folder (the DVC "
                         "stage: results/training/<variant>-<seed>/)")
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a train param, e.g. -S train.ttur=3 (repeatable)")
    args = ap.parse_args(argv)
    settings = load_settings(args.params, args.variant, args.overrides)
    out = args.out or f"runs/distill/{args.variant or 'default'}"
    mode = "require" if args.resume else "fresh" if args.fresh else "supersede" if args.on_change == "supersede" else "auto"
    results = writable_folder(args.results, "the results folder", "--results") if args.results else None
    run = train(settings, out, resume=mode)
    if results is not None and run.accelerator.is_main_process:
        results.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.out / "summary.json", results / "summary.json")
    run.accelerator.state.destroy_process_group()
    return run


if __name__ == "__main__":
    run_command(main)
