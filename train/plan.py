"""Memory planner for a SenseFlow run at real scale: per-GPU memory by part, before any GPU is used.

    python -m train.plan --preset sd35_large --gpus 8 --gpu-memory-gb 80
    python -m train.plan --preset flux --gpus 8 --gpu-memory-gb 80 --no-fsdp --batch-size 2
    python -m train.plan --paper            # the three paper setups -> results/bench/plan.json

Every network is built on the meta device (no memory, no weights) from the published configs in
configs/models/ (SD 3.5 Medium/Large and FLUX.1-dev transformers, the SDXL UNet, their VAEs and
text encoders, DINOv2-L; sources in configs/models/README.md). Options come from the family preset
(configs/families/<preset>.yaml), overridable on the command line, and follow the loop's precision
policy (train/senseflow.py docstring):

- generator, fake score (and EMA): fp32 master weights, sharded over the GPUs under FSDP;
- gradients: fp32, one network's at a time (the generator's are freed before the fake score's
  backward), sharded under FSDP;
- optimizer states: AdamW 8 bytes per parameter, bitsandbytes AdamW8bit 2 (both networks + heads);
- FSDP buffers: the all-gathered fp32 parameters and gradients of the largest block, twice
  (current + prefetched);
- teacher and text encoders: bf16 (or fp32), replicated or sharded (train.shard_teacher: the
  teacher and T5; CLIP encoders stay replicated); VAE fp32; discriminator: frozen DINOv2 + CLIP (fp32, replicated) and the heads
  with their gradients and AdamW states;
- activations: measured on the meta device by running the real forward with the real input shapes
  under autograd's saved-tensor hooks (what autograd keeps for the backward), with attention saving
  only q, k, v, its output and log-sum-exp as flash/memory-efficient attention does, plus the bf16
  weight casts autocast keeps; with gradient checkpointing, the checkpointed blocks' inputs plus the
  largest block recomputed. At the peak (a generator turn): the generator's activations + the VAE
  decode and the discriminator's DINOv2 forward that the adversarial gradient passes through.

A run fits when the total is at most `gpu_memory_gb` minus 10 % (CUDA context, allocator slack,
fragmentation). When it does not, the planner tries the memory options in a fixed order and says
which make it fit. `--validate` compares the same estimate with what torch allocates on CPU for
small real-architecture configs (results/bench/plan.json `validation`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from configs.cli import ArgumentParser, count, run_command
from configs.paths import writable_file
from train.settings import load_preset
from train.sharding import shard_units

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "models"
GB = 1e9
HEADROOM = 0.10  # of the GPU memory, kept free for the CUDA context, allocator slack and fragmentation
TEXT_TOKENS = {"sd3": 77 + 77, "flux": 512, "sdxl": 77}  # released max lengths (SD3.5: CLIP 77 + T5 77)
# what each preset's networks are: (class, config file) per part
MODELS = {
    "sd35_medium": {"denoiser": ("SD3Transformer2DModel", "sd35_medium_transformer.json"), "vae": "sd35_vae.json",
                    "text": [("CLIPTextModelWithProjection", "clip_l_text.json"),
                             ("CLIPTextModelWithProjection", "clip_g_text.json"), ("T5EncoderModel", "t5_xxl.json")]},
    "sd35_large": {"denoiser": ("SD3Transformer2DModel", "sd35_large_transformer.json"), "vae": "sd35_vae.json",
                   "text": [("CLIPTextModelWithProjection", "clip_l_text.json"),
                            ("CLIPTextModelWithProjection", "clip_g_text.json"), ("T5EncoderModel", "t5_xxl.json")]},
    "flux": {"denoiser": ("FluxTransformer2DModel", "flux_dev_transformer.json"), "vae": "flux_vae.json",
             "text": [("CLIPTextModel", "flux_clip_l_text.json"), ("T5EncoderModel", "flux_t5_xxl.json")]},
    "sdxl": {"denoiser": ("UNet2DConditionModel", "sdxl_unet.json"), "vae": "sdxl_vae.json",
             "text": [("CLIPTextModel", "sdxl_clip_l_text.json"), ("CLIPTextModelWithProjection", "sdxl_clip_g_text.json")]},
}
DISCRIMINATOR = {"vfm": ("Dinov2Model", "dinov2_large.json"), "clip_text": ("CLIPTextModel", "clip_l_text.json")}
# (the released text condition is open_clip ViT-L/14's text tower: the same size as CLIP-L's text encoder)
# the three paper setups (Tab. 1 / App. B.3: 8 GPUs, per-GPU batch 1, released options)
PAPER_SETUPS = [("sd35_large", 8, 80), ("flux", 8, 80), ("sdxl", 8, 80)]
# memory options tried in this order when a setup does not fit
FIT_OPTIONS = [("fsdp", True), ("gradient_checkpointing", True), ("shard_teacher", True),
               ("optimizer", "adamw8bit"), ("cpu_offload", True)]


# ---- networks on the meta device -------------------------------------------------------------
def _config(name: str) -> dict:
    return {k: v for k, v in json.loads((CONFIG_DIR / name).read_text()).items() if not k.startswith("_")}


def build_meta(cls_name: str, config: dict | str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A network of a diffusers/transformers class on the meta device (no memory)."""
    import diffusers
    import transformers

    config = _config(config) if isinstance(config, str) else config
    with torch.device("meta"):
        if hasattr(diffusers, cls_name):
            net = getattr(diffusers, cls_name).from_config(config)
        else:
            cls = getattr(transformers, cls_name)
            net = cls(cls.config_class(**config))
    return net.to(dtype)


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _own_parameters(unit: nn.Module, units: list[nn.Module]) -> int:
    """Parameters of `unit` that no unit nested in it owns (what FSDP2 gathers for this unit)."""
    nested = {id(p) for u in units if u is not unit and u in set(unit.modules()) for p in u.parameters()}
    return sum(p.numel() for p in unit.parameters() if id(p) not in nested)


def largest_unit(net: nn.Module) -> int:
    """Parameters FSDP2 all-gathers at once for the largest unit (transformer/UNet block, nested
    units excluded), or the whole net when it has none."""
    units = shard_units(net)
    return max((_own_parameters(u, units) for u in units), default=parameter_count(net))


# ---- activations ---------------------------------------------------------------------------------
class _FlashLikeAttention(torch.autograd.Function):
    """scaled_dot_product_attention that keeps for backward what flash / memory-efficient attention
    keeps (q, k, v, output, fp32 log-sum-exp), not the math path's T x T probabilities."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        ctx.save_for_backward(q, k, v, out, q.new_empty(q.shape[:-1], dtype=torch.float32))
        return out

    @staticmethod
    def backward(ctx, grad):  # never run: the planner only counts what is saved
        q, k, v, _, _ = ctx.saved_tensors
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)


@contextlib.contextmanager
def flash_like_attention():
    real = torch.nn.functional.scaled_dot_product_attention

    def sdpa(query, key, value, *args, **kwargs):
        return _FlashLikeAttention.apply(query, key, value)

    torch.nn.functional.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = real


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@dataclass
class ActivationEstimate:
    total: int                 # bytes autograd keeps for the backward, all of it (no checkpointing)
    checkpointed: int          # with per-block checkpointing: block inputs + outside + largest block
    weight_casts: int          # bf16 weight casts autocast keeps without checkpointing (all weights)
    weight_casts_checkpointed: int  # ... with checkpointing (outside the blocks + the largest block)


def saved_activations(net: nn.Module, run_forward, compute_dtype: torch.dtype = torch.bfloat16,
                      units: list[nn.Module] | None = None, trainable: bool = True) -> ActivationEstimate:
    """What autograd saves for the backward of `run_forward(net)` (its inputs on the meta device, in
    `compute_dtype`), attributed to the checkpointed blocks (`units`, default `shard_units(net)`:
    the innermost ones count) for the checkpointed estimate. `trainable=False`: a frozen net the
    gradient only passes through (its inputs must require grad)."""
    params = {id(p) for p in net.parameters()}
    units = shard_units(net) if units is None else units
    leaves = [u for u in units if not any(o is not u and o in set(u.modules()) for o in units)]
    current: list[int | None] = [None]  # the leaf unit (checkpointed block) running now
    calls: list[int] = []               # saved bytes per leaf-unit call
    inputs = 0                          # bytes of the inputs of every leaf-unit call
    outside = 0
    seen: dict[int, torch.Tensor] = {}

    def pack(t):
        nonlocal outside
        base = t._base if t._base is not None else t
        if id(base) in params or id(base) in seen:
            return t
        seen[id(base)] = base  # keep a reference: ids stay unique
        if current[0] is None:
            outside += _nbytes(base)
        else:
            calls[current[0]] += _nbytes(base)
        return t

    def pre(module, args, kwargs):
        nonlocal inputs
        current[0] = len(calls)
        calls.append(0)
        inputs += sum(_nbytes(a) for a in list(args) + list(kwargs.values()) if torch.is_tensor(a))

    def post(module, args, kwargs, output):
        current[0] = None

    hooks = [h for u in leaves for h in (u.register_forward_pre_hook(pre, with_kwargs=True),
                                        u.register_forward_hook(post, with_kwargs=True))]
    try:
        net.to(compute_dtype).requires_grad_(trainable)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), flash_like_attention():
            run_forward(net)
    finally:
        for h in hooks:
            h.remove()
    elt = torch.finfo(compute_dtype).bits // 8
    leaf_params = [_own_parameters(u, units) for u in leaves] or [0]
    outside_params = parameter_count(net) - sum(sum(p.numel() for p in u.parameters()) for u in leaves)
    return ActivationEstimate(
        total=outside + sum(calls),
        checkpointed=outside + inputs + max(calls, default=0),
        weight_casts=elt * parameter_count(net),
        weight_casts_checkpointed=elt * (max(outside_params, 0) + max(leaf_params)))


def denoiser_forward(family: str, batch: int, resolution: int, dtype: torch.dtype):
    """A function running a family's denoiser on meta inputs of the real shapes (latent = res / 8)."""
    side = resolution // 8
    text = TEXT_TOKENS[family]

    def meta(*shape, dt=dtype):
        return torch.empty(*shape, device="meta", dtype=dt)

    if family == "sd3":
        return lambda net: net(hidden_states=meta(batch, 16, side, side), encoder_hidden_states=meta(batch, text, 4096),
                               pooled_projections=meta(batch, 2048), timestep=meta(batch, dt=torch.float32),
                               return_dict=False)
    if family == "flux":
        tokens = (side // 2) ** 2
        return lambda net: net(hidden_states=meta(batch, tokens, 64), encoder_hidden_states=meta(batch, text, 4096),
                               pooled_projections=meta(batch, 768), timestep=meta(batch, dt=torch.float32),
                               img_ids=meta(tokens, 3), txt_ids=meta(text, 3), return_dict=False)
    return lambda net: net(sample=meta(batch, 4, side, side), timestep=meta(batch, dt=torch.float32),
                           encoder_hidden_states=meta(batch, text, 2048),
                           added_cond_kwargs={"text_embeds": meta(batch, 1280), "time_ids": meta(batch, 6)},
                           return_dict=False)


def vfm_activations(disc: nn.Module, batch: int, resolution: int, compute: torch.dtype, checkpointing: bool) -> int:
    """Bytes saved for the generator's adversarial backward through the discriminator (DINOv2 run
    in `compute` dtype as under autocast, its layers checkpointed with gradient_checkpointing, heads
    frozen, reference features constant)."""
    backbone_dtype = compute
    disc.to(backbone_dtype)  # under autocast the convolutions and matmuls run in bf16
    images = torch.empty(batch, 3, resolution, resolution, device="meta", requires_grad=True)
    with torch.no_grad():
        refs = [f.detach() for f in disc.features(torch.empty(batch, 3, resolution, resolution, device="meta"))]
    text = torch.empty(batch, disc.heads[0].cmapper.weight.shape[1], device="meta")
    layers = list(disc.backbone.encoder.layer)
    est = saved_activations(disc, lambda d: d(images, text, ref_features=refs), backbone_dtype, units=layers,
                            trainable=False)
    casts = est.weight_casts_checkpointed if checkpointing else est.weight_casts
    return (est.checkpointed if checkpointing else est.total) + (casts if compute == torch.bfloat16 else 0)


# ---- the plan ----------------------------------------------------------------------------------
def plan(preset: str, gpus: int, gpu_memory_gb: float, **options) -> dict:
    """Per-rank memory by part for `preset` on `gpus` GPUs of `gpu_memory_gb`. `options` override the
    preset's batch_size, precision, fsdp, shard_teacher, cpu_offload, optimizer,
    gradient_checkpointing, ema, resolution, vfm. Returns a plan.json entry."""
    if preset not in MODELS:
        raise ValueError(f"no real-size configs for preset {preset!r}; known: {sorted(MODELS)}")
    s = {"fsdp": gpus > 1, "shard_teacher": False, "cpu_offload": False, "optimizer": "adamw", "ema": 0.0, "vfm": True,
         **load_preset(preset)}
    s.update({k: v for k, v in options.items() if v is not None})
    family, batch, res = s["family"], int(s["batch_size"]), int(s["resolution"])
    bf16 = s["precision"] == "bf16"
    spec = MODELS[preset]
    cls_name, config_file = spec["denoiser"]
    teacher_cfg = _config(config_file)
    student_cfg = {**teacher_cfg, "guidance_embeds": False} if family == "flux" else teacher_cfg
    student = build_meta(cls_name, student_cfg)
    n_student, n_teacher = parameter_count(student), parameter_count(build_meta(cls_name, teacher_cfg))
    block = largest_unit(student)
    shard = gpus if s["fsdp"] else 1
    on_gpu = 0.0 if s["cpu_offload"] else 1.0
    state_bytes = 2 if s["optimizer"] == "adamw8bit" else 8
    parts = {
        "generator": on_gpu * 4 * n_student / shard,
        "fake_score": on_gpu * 4 * n_student / shard,
        "ema": on_gpu * 4 * n_student / shard if s["ema"] > 0 else 0.0,
        "gradients": on_gpu * 4 * n_student / shard,
        "optimizer_states": on_gpu * state_bytes * 2 * n_student / shard,
        "fsdp_buffers": 2 * (4 + 4) * block if s["fsdp"] else 0.0,
    }
    teacher_bytes = 2 if bf16 else 4
    teacher_shard = gpus if (s["fsdp"] and s["shard_teacher"]) else 1
    parts["teacher"] = teacher_bytes * n_teacher / teacher_shard + (2 * teacher_bytes * block if teacher_shard > 1 else 0)
    encoders = [(c, parameter_count(build_meta(c, f))) for c, f in spec["text"]]
    parts["text_encoders"] = teacher_bytes * sum(n / (1 if c.startswith("CLIP") else teacher_shard)
                                                 for c, n in encoders)  # T5 sharded with the teacher, CLIP not
    # sharded encoders are gathered whole for the no-grad prompt encoding at the start of an iteration,
    # when no activations are held: that transient is below the activation peak counted here
    vae = build_meta("AutoencoderKL", spec["vae"])
    parts["vae"] = 4 * parameter_count(vae)
    compute = torch.bfloat16 if bf16 else torch.float32
    gen = saved_activations(student, denoiser_forward(family, batch, res, compute), compute)
    ckpt = bool(s["gradient_checkpointing"])
    activations = (gen.checkpointed + gen.weight_casts_checkpointed) if ckpt else (gen.total + gen.weight_casts)
    if bf16 is False:
        activations -= gen.weight_casts_checkpointed if ckpt else gen.weight_casts  # no casts in fp32
    detail = {"denoiser": activations}
    decoder = vae.decoder
    side, channels = res // 8, vae.config.latent_channels
    latents = torch.empty(batch, channels, side, side, device="meta", requires_grad=True)  # the generator's x0
    dec = saved_activations(decoder, lambda d: d(latents), torch.float32, trainable=False,
                            units=[decoder.mid_block, *decoder.up_blocks])  # diffusers' checkpointing granularity
    detail["vae_decode"] = (dec.checkpointed if ckpt else dec.total) if s["vfm"] else 0
    if s["vfm"]:
        from train.vfm_discriminator import VFMDiscriminator

        clip = build_meta(*DISCRIMINATOR["clip_text"])
        with torch.device("meta"):  # no real spectral-norm power iterations on 8 real-size heads
            disc = VFMDiscriminator(build_meta(*DISCRIMINATOR["vfm"]), clip.config.hidden_size, diffaug=False,
                                    downsample=int(s.get("vfm_downsample", 3)))
        n_heads = parameter_count(disc.heads)
        parts["discriminator"] = (4 * (parameter_count(disc.backbone) + parameter_count(clip)) +
                                  (4 + 4 + state_bytes) * n_heads)  # heads: weights, gradients, optimizer
        # the generator's adversarial gradient passes through DINOv2 and the (frozen) heads
        detail["vfm_discriminator"] = vfm_activations(disc, batch, res, compute, ckpt)
    else:
        parts["discriminator"] = 0.0
    parts["activations"] = float(sum(detail.values()))
    per_rank = {k: round(v / GB, 2) for k, v in parts.items()}
    per_rank["total"] = round(sum(parts.values()) / GB, 2)
    usable = gpu_memory_gb * (1 - HEADROOM)
    options_used = {k: s[k] for k in ("batch_size", "precision", "fsdp", "shard_teacher", "cpu_offload", "optimizer",
                                      "gradient_checkpointing", "ema", "resolution", "vfm")}
    return {"preset": preset, "gpus": gpus, "gpu_memory_gb": gpu_memory_gb, "per_rank_gb": per_rank,
            "fits": per_rank["total"] <= usable, "usable_gb": round(usable, 2), "options": options_used,
            "parameters": {"student": n_student, "teacher": n_teacher, "largest_block": block},
            "activations_gb": {k: round(v / GB, 2) for k, v in detail.items()}}


def plan_to_fit(preset: str, gpus: int, gpu_memory_gb: float, **options) -> dict:
    """`plan`, and when it does not fit, the first cumulative set of FIT_OPTIONS that does (`to_fit`)."""
    entry = plan(preset, gpus, gpu_memory_gb, **options)
    if entry["fits"]:
        return entry
    tried = dict(options)
    for key, value in FIT_OPTIONS:
        if key in ("fsdp", "shard_teacher", "cpu_offload") and gpus == 1 and key != "cpu_offload":
            continue
        if entry["options"].get(key) == value:
            continue
        tried[key] = value
        if key in ("shard_teacher", "cpu_offload"):
            tried["fsdp"] = True
        candidate = plan(preset, gpus, gpu_memory_gb, **tried)
        if candidate["fits"]:
            entry["to_fit"] = {k: candidate["options"][k] for k in candidate["options"]
                               if candidate["options"][k] != entry["options"][k]}
            entry["to_fit_total_gb"] = candidate["per_rank_gb"]["total"]
            return entry
    entry["to_fit"] = None  # nothing in FIT_OPTIONS is enough: more GPUs or a smaller batch/resolution
    return entry


def format_plan(entry: dict) -> str:
    lines = [f"{entry['preset']} on {entry['gpus']} x {entry['gpu_memory_gb']} GB "
             f"({', '.join(f'{k}={v}' for k, v in entry['options'].items())})"]
    for part, gb in entry["per_rank_gb"].items():
        lines.append(f"  {part:<17} {gb:8.2f} GB")
    verdict = "fits" if entry["fits"] else "does NOT fit"
    lines.append(f"  -> {verdict} in {entry['usable_gb']} GB usable per GPU ({int(HEADROOM * 100)} % kept free)")
    if not entry["fits"]:
        fix = entry.get("to_fit")
        lines.append(f"  -> fits with {fix} ({entry.get('to_fit_total_gb')} GB)" if fix else
                     "  -> no memory option is enough: use more GPUs, a smaller batch or resolution")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(MODELS))
    ap.add_argument("--gpus", type=count(1), default=8)
    ap.add_argument("--gpu-memory-gb", type=float, default=80.0)
    ap.add_argument("--batch-size", type=count(1), default=None, help="per GPU (default: the preset's)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default=None)
    ap.add_argument("--resolution", type=count(8), default=None)
    ap.add_argument("--optimizer", choices=("adamw", "adamw8bit"), default=None)
    ap.add_argument("--ema", type=float, default=None)
    for flag in ("fsdp", "shard-teacher", "cpu-offload", "gradient-checkpointing", "vfm"):
        ap.add_argument(f"--{flag}", dest=flag.replace("-", "_"), action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--paper", action="store_true", help="the three paper setups with the released options")
    ap.add_argument("--validate", action="store_true", help="also check the estimate on small CPU configs")
    ap.add_argument("--json", default=None, help="write the entries here (--paper: results/bench/plan.json)")
    args = ap.parse_args(argv)
    if args.gpus < 1 or args.gpu_memory_gb <= 0:
        ap.error("--gpus must be >= 1 and --gpu-memory-gb > 0")
    if not args.paper and not args.preset:
        ap.error("give --preset (or --paper)")
    out = args.json or ("results/bench/plan.json" if args.paper else None)
    if out:
        writable_file(out, "the plan table", "--json")  # checked before any work
    options = {k: getattr(args, k) for k in ("batch_size", "precision", "resolution", "optimizer", "ema", "fsdp",
                                             "shard_teacher", "cpu_offload", "gradient_checkpointing", "vfm")}
    setups = PAPER_SETUPS if args.paper else [(args.preset, args.gpus, args.gpu_memory_gb)]
    entries = [plan_to_fit(p, g, m, **options) for p, g, m in setups]
    for entry in entries:
        print(format_plan(entry))
    if out:
        report = {"setups": entries, "headroom": HEADROOM}
        if args.validate:
            from train.plan_validation import validate

            report["validation"] = validate()
            for row in report["validation"]:
                print(f"  validation {row['config']}: estimated {row['estimated_mb']:.1f} MB, "
                      f"measured {row['measured_mb']:.1f} MB, ratio {row['ratio']:.2f}")
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2))
    return entries


if __name__ == "__main__":
    run_command(main)
