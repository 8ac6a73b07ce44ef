"""FLUX.1-dev: rectified flow with FLUX's resolution-dependent (dynamic, exponential) shift, a
`FluxTransformer2DModel` over 2x2-packed latents called with timestep = sigma (= t / 1000) and
position ids like diffusers' FluxPipeline, a 16-channel VAE with latents
(z - shift_factor) * scaling_factor, and CLIP-L (pooled) + T5 text encoders.

The teacher is guidance-distilled: it has a guidance embedding and takes the guidance scale as an
input (no two-pass CFG). The student and the fake score are built from the same config with
`guidance_embeds=False` (released `flux-wo-guidance-embed` config): see `guidance_free_copy`.

Latents stay (B, C, H/8, W/8) in this interface; packing happens inside `model_output`.
Timestep units: t = 1000 * sigma in [0, 1000].

Teacher folder (a diffusers FluxPipeline folder):
    transformer/ vae/ text_encoder/ text_encoder_2/ tokenizer/ tokenizer_2/
    scheduler/scheduler_config.json   optional; base/max shift and sequence lengths for mu
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from torch import nn
from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

from backbones.base import Backbone, BackboneError, Conditioning, require_folder
from backbones.schedules import flux_mu, flux_time_shift, logit_normal
from backbones.vae import decode_latents, encode_to_latents, load_vae, vae_scale_factor

T5_MAX_SEQUENCE_LENGTH = 512
DEFAULT_RESOLUTION = 1024
TEACHER_SUBFOLDERS = ["transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"]
# FluxPipeline's defaults for `calculate_shift` (FLUX.1-dev's scheduler_config has the same values).
DEFAULT_SHIFT_PARAMS = {"base_seq_len": 256, "max_seq_len": 4096, "base_shift": 0.5, "max_shift": 1.15}
GUIDANCE_EMBEDDER = "time_text_embed.guidance_embedder."  # teacher-only weights (guidance-distilled)
_SCHEDULER_KEYS = {"base_image_seq_len": "base_seq_len", "max_image_seq_len": "max_seq_len",
                   "base_shift": "base_shift", "max_shift": "max_shift"}


# ---- pure functions -----------------------------------------------------------------------
def flux_anchor_sigmas(num_steps: int, image_seq_len: int, **shift_params) -> torch.Tensor:
    """Descending anchors of an n-step FLUX student: time_shift(mu, linspace(1, 1/n, n)) with
    mu = flux_mu(image_seq_len) -- FluxPipeline's default schedule. 1024^2 (4096 packed tokens),
    n=4: [1.0, 0.9045, 0.7595, 0.5129]."""
    if num_steps < 1:
        raise ValueError("num_steps must be >= 1")
    u = torch.linspace(1.0, 1.0 / num_steps, num_steps, dtype=torch.float64)
    return flux_time_shift(flux_mu(image_seq_len, **shift_params), u).float()


def pack_latents(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C), FluxPipeline's 2x2 patch order."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of `pack_latents`: (B, H/2 * W/2, 4C) -> (B, C, H, W) for latent height/width H, W."""
    b, _, c4 = x.shape
    x = x.view(b, height // 2, width // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c4 // 4, height, width)


def latent_image_ids(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(H/2 * W/2, 3) position ids (0, row, col) of the packed tokens, as FluxPipeline builds them."""
    ids = torch.zeros(height // 2, width // 2, 3)
    ids[..., 1] += torch.arange(height // 2)[:, None]
    ids[..., 2] += torch.arange(width // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def has_guidance_embedding(net: nn.Module) -> bool:
    """True for a guidance-distilled FLUX net (config.guidance_embeds), looking through DDP/FSDP
    wrappers and any module that exposes the wrapped net's `config`."""
    config = getattr(getattr(net, "module", net), "config", None)
    return bool(config is not None and config.get("guidance_embeds", False))


def guidance_free_config(config) -> dict:
    """The teacher's transformer config with `guidance_embeds=False` (released
    `exp_flux/flux-wo-guidance-embed/transformer/config.json`)."""
    return {**{k: v for k, v in dict(config).items() if not k.startswith("_")}, "guidance_embeds": False}


def guidance_free_copy(net: FluxTransformer2DModel) -> FluxTransformer2DModel:
    """A student / fake-score net initialised from the teacher's weights without the guidance
    embedding; the teacher's `time_text_embed.guidance_embedder.*` weights are dropped and
    every other weight must load (the released code loads the shards into the new config)."""
    net = getattr(net, "module", net)
    student = FluxTransformer2DModel(**guidance_free_config(net.config)).to(device=net.device, dtype=net.dtype)
    missing, unexpected = student.load_state_dict(net.state_dict(), strict=False)
    unexpected = [k for k in unexpected if not k.startswith(GUIDANCE_EMBEDDER)]
    if missing or unexpected:
        raise BackboneError(f"FLUX guidance-free copy: missing {missing}, unexpected {unexpected}")
    return student


def _param_dtype(net: nn.Module) -> torch.dtype:
    return next(net.parameters()).dtype


class FluxBackbone(Backbone):
    """FLUX-family teacher. Latents (B, C, H/8, W/8); t = 1000 * sigma; Conditioning: embeds
    (B, max_sequence_length, T5 width) T5 tokens, pooled (B, CLIP-L width) CLIP pooled output.
    Anchors depend on the image resolution (`resolution`, default 1024) through mu."""

    family = "flux"
    prediction = "flow"
    denoiser_subfolder = "transformer"

    def __init__(self, denoiser: FluxTransformer2DModel, vae, text_encoder: CLIPTextModel, text_encoder_2: T5EncoderModel,
                 tokenizer, tokenizer_2, resolution: int | tuple[int, int] = DEFAULT_RESOLUTION,
                 max_sequence_length: int = T5_MAX_SEQUENCE_LENGTH, shift_params: dict | None = None,
                 device="cpu", dtype=torch.float32):
        """Build from already-constructed components. `resolution` (pixels, int or (H, W)) fixes the
        packed sequence length and hence mu; `shift_params` overrides DEFAULT_SHIFT_PARAMS."""
        super().__init__(denoiser, device, dtype)
        self.vae = vae
        self.text_encoder, self.text_encoder_2 = text_encoder, text_encoder_2
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        self.resolution = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        self.max_sequence_length = int(max_sequence_length)
        self.shift_params = {**DEFAULT_SHIFT_PARAMS, **(shift_params or {})}
        self._null: Conditioning | None = None

    # ---- loading --------------------------------------------------------------------------
    @classmethod
    def load(cls, path, device="cpu", dtype=torch.float32, resolution=DEFAULT_RESOLUTION,
             max_sequence_length: int = T5_MAX_SEQUENCE_LENGTH) -> "FluxBackbone":
        path = require_folder(path, TEACHER_SUBFOLDERS, "FLUX teacher")
        shift_params = {}
        sched = path / "scheduler" / "scheduler_config.json"
        if sched.exists():
            cfg = json.loads(sched.read_text())
            shift_params = {ours: cfg[theirs] for theirs, ours in _SCHEDULER_KEYS.items() if theirs in cfg}

        def frozen(model_cls, sub):
            return model_cls.from_pretrained(path / sub, torch_dtype=dtype).to(device).eval().requires_grad_(False)

        return cls(frozen(FluxTransformer2DModel, "transformer"), load_vae(path / "vae", device),
                   frozen(CLIPTextModel, "text_encoder"), frozen(T5EncoderModel, "text_encoder_2"),
                   AutoTokenizer.from_pretrained(path / "tokenizer"), AutoTokenizer.from_pretrained(path / "tokenizer_2"),
                   resolution, max_sequence_length, shift_params, device, dtype)

    def load_denoiser(self, path) -> nn.Module:
        path = Path(path)
        sub = path / self.denoiser_subfolder if (path / self.denoiser_subfolder).is_dir() else path
        require_folder(sub, ["config.json"], "FLUX denoiser")
        return FluxTransformer2DModel.from_pretrained(sub, torch_dtype=self.dtype).to(self.device)

    student_dropped_prefixes = (GUIDANCE_EMBEDDER,)

    def student_config(self) -> dict:
        """Generator / fake-score architecture: the teacher's without its guidance embedding."""
        return guidance_free_config(getattr(self.denoiser, "module", self.denoiser).config)

    def pipeline(self, transformer: nn.Module | None = None, scheduler=None) -> FluxPipeline:
        """The diffusers FluxPipeline over these components with `transformer` (default: the teacher)
        and `scheduler` (default: dynamic-shift FlowMatchEuler with these shift parameters). Its
        default sigmas at `self.resolution` are exactly `anchor_timesteps(n) / 1000`."""
        if scheduler is None:
            p = self.shift_params
            scheduler = FlowMatchEulerDiscreteScheduler(
                shift=3.0, use_dynamic_shifting=True, base_shift=p["base_shift"], max_shift=p["max_shift"],
                base_image_seq_len=p["base_seq_len"], max_image_seq_len=p["max_seq_len"])
        return FluxPipeline(scheduler=scheduler, vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                            text_encoder_2=self.text_encoder_2, tokenizer_2=self.tokenizer_2,
                            transformer=self.denoiser if transformer is None else transformer)

    # ---- text -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """Frozen text features via FluxPipeline.encode_prompt (text ids are all zeros, rebuilt per call)."""
        embeds, pooled, _ = self.pipeline().encode_prompt(
            prompt=list(prompts), prompt_2=None, device=self.device, max_sequence_length=self.max_sequence_length)
        return Conditioning(embeds, pooled)

    def null_conditioning(self, batch: int) -> Conditioning:
        """encode_prompt("") repeated; only needed for true CFG of a guidance-free net (the teacher
        uses its guidance embedding instead)."""
        if self._null is None:
            self._null = self.encode_prompts([""])
        n = self._null
        return Conditioning(n.embeds.expand(batch, -1, -1), n.pooled.expand(batch, -1))

    # ---- schedule -------------------------------------------------------------------------
    @property
    def image_seq_len(self) -> int:
        """Packed latent tokens at `self.resolution` (4096 at 1024^2)."""
        c, h, w = self.latent_shape(*self.resolution)
        return (h // 2) * (w // 2)

    def sigma(self, t):
        return t / self.num_train_timesteps

    def alpha(self, t):
        return 1 - t / self.num_train_timesteps

    def anchor_timesteps(self, num_steps: int) -> torch.Tensor:
        """1000 * time_shift(mu, linspace(1, 1/n, n)), mu from the packed sequence length at
        `self.resolution`: [1000, 904.5, 759.5, 512.9] at 1024^2 for n=4."""
        return self.num_train_timesteps * flux_anchor_sigmas(num_steps, self.image_seq_len, **self.shift_params)

    def sample_training_timesteps(self, batch, generator=None):
        """Released code: u ~ logit-normal(0, 1), idx = int(1000 u), t = scheduler.timesteps[idx] of
        the dynamic-shift scheduler, which is unshifted: t = 1000 - idx in {1, ..., 1000}, float (batch,)."""
        idx = (logit_normal(batch, generator) * self.num_train_timesteps).long().clamp(0, self.num_train_timesteps - 1)
        return (self.num_train_timesteps - idx).float()

    # ---- network --------------------------------------------------------------------------
    def model_output(self, net, x_t, t, cond, guidance=None):
        """Velocity (eps - x0) in the unpacked layout, same shape/dtype as x_t (B, C, H, W).
        The net gets timestep = t / 1000 and, if it has a guidance embedding, `guidance` (B,)
        (required then; ignored for guidance-free nets)."""
        b, c, h, w = x_t.shape
        if has_guidance_embedding(net):
            if guidance is None:
                raise BackboneError("this FLUX net has a guidance embedding (guidance-distilled teacher): "
                                    "call guided_output(..., guidance_scale=g) or pass guidance")
            guidance = torch.as_tensor(guidance, dtype=torch.float32, device=x_t.device).expand(b)
        else:
            guidance = None
        dt = _param_dtype(net)
        out = net(hidden_states=pack_latents(x_t).to(dt), timestep=(t / self.num_train_timesteps).to(torch.float32),
                  guidance=guidance, pooled_projections=cond.pooled.to(dt), encoder_hidden_states=cond.embeds.to(dt),
                  txt_ids=torch.zeros(cond.embeds.shape[1], 3, device=x_t.device, dtype=dt),
                  img_ids=latent_image_ids(h, w, x_t.device, dt), return_dict=False)[0]
        return unpack_latents(out, h, w).to(x_t.dtype)

    def guided_output(self, net, x_t, t, cond, guidance_scale=1.0, uncond=None):
        """Guidance-distilled net: one pass with the scale fed to its guidance embedding (float or
        (B,) tensor). Guidance-free net (student, fake score): true two-pass CFG as in the base class."""
        if has_guidance_embedding(net):
            return self.model_output(net, x_t, t, cond, guidance=guidance_scale)
        return super().guided_output(net, x_t, t, cond, guidance_scale, uncond)

    # ---- pixels ---------------------------------------------------------------------------
    def decode(self, latents):
        return decode_latents(self.vae, latents)

    def encode_images(self, images, generator=None):
        return encode_to_latents(self.vae, images, generator)

    def latent_shape(self, height, width):
        """(C, H/8, W/8); the latent sides must be even for 2x2 packing (image sides multiple of 16)."""
        f = vae_scale_factor(self.vae)
        if height % (2 * f) or width % (2 * f):
            raise BackboneError(f"FLUX: image size {height}x{width} must be a multiple of {2 * f}")
        return (self.vae.config.latent_channels, height // f, width // f)
