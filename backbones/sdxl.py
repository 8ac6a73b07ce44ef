"""SDXL: DDPM eps-prediction with scaled_linear betas, a `UNet2DConditionModel` called with the
integer DDPM index t in [0, 999] (stored as float), a 4-channel VAE with latents = z * scaling_factor
(no shift), and CLIP-L + CLIP-G text encoders (penultimate hidden states concatenated, pooled =
CLIP-G text_embeds) plus the SDXL micro-conditioning time ids.

x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps; x0 from eps is computed in float64 as in the released
code (senseflow_utils.get_x0_from_noise). Unconditional input = zero prompt embeddings and zero pooled
embeddings (DMD2 convention), with the same time ids.

Teacher folder (a diffusers StableDiffusionXLPipeline folder):
    unet/ vae/ text_encoder/ text_encoder_2/ tokenizer/ tokenizer_2/
    scheduler/scheduler_config.json   optional; beta_start / beta_end (defaults 0.00085 / 0.012)
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import LCMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from torch import nn
from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

from backbones.base import Backbone, BackboneError, Conditioning, _bcast, require_folder
from backbones.schedules import ddpm_alphas_cumprod, ddpm_anchor_timesteps
from backbones.vae import decode_latents, encode_to_latents, load_vae, vae_scale_factor

DEFAULT_RESOLUTION = 1024
TEACHER_SUBFOLDERS = ["unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"]
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v"}  # scheduler_config prediction_type -> ours


def sdxl_time_ids(height: int, width: int) -> torch.Tensor:
    """(6,) micro-conditioning: original size + crop top-left (0, 0) + target size, as the pipeline
    builds `add_time_ids` for an unconditioned (height, width) generation."""
    return torch.tensor([height, width, 0, 0, height, width], dtype=torch.float32)


def _param_dtype(net: nn.Module) -> torch.dtype:
    return next(net.parameters()).dtype


class SDXLBackbone(Backbone):
    """SDXL-family teacher. Latents (B, 4, H/8, W/8); t = DDPM index 0..999 as float;
    Conditioning: embeds (B, 77, CLIP-L + CLIP-G width), pooled (B, CLIP-G projection),
    extra["time_ids"] (B, 6) for `resolution`."""

    family = "sdxl"
    prediction = "eps"
    denoiser_subfolder = "unet"

    def __init__(self, denoiser: UNet2DConditionModel, vae, text_encoder: CLIPTextModel,
                 text_encoder_2: CLIPTextModelWithProjection, tokenizer, tokenizer_2,
                 resolution: int | tuple[int, int] = DEFAULT_RESOLUTION, beta_start: float = 0.00085,
                 beta_end: float = 0.012, device="cpu", dtype=torch.float32, prediction: str = "eps"):
        """Build from already-constructed components; `resolution` (pixels) sets the time ids;
        `prediction` "eps" (SDXL base) or "v" (v-prediction fine-tunes; scheduler_config
        prediction_type v_prediction)."""
        super().__init__(denoiser, device, dtype)
        if prediction not in PREDICTION_TYPES.values():
            raise BackboneError(f"SDXL prediction must be one of {sorted(PREDICTION_TYPES.values())}, got {prediction!r}")
        self.prediction = prediction
        self.vae = vae
        self.text_encoder, self.text_encoder_2 = text_encoder, text_encoder_2
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        self.resolution = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.alphas_cumprod = ddpm_alphas_cumprod(self.num_train_timesteps, beta_start, beta_end)  # float64

    # ---- loading --------------------------------------------------------------------------
    @classmethod
    def load(cls, path, device="cpu", dtype=torch.float32, resolution=DEFAULT_RESOLUTION) -> "SDXLBackbone":
        path = require_folder(path, TEACHER_SUBFOLDERS, "SDXL teacher")
        betas = {}
        sched = path / "scheduler" / "scheduler_config.json"
        if sched.exists():
            cfg = json.loads(sched.read_text())
            if cfg.get("beta_schedule", "scaled_linear") != "scaled_linear":
                raise BackboneError(f"SDXL teacher {str(path)!r}: beta_schedule {cfg['beta_schedule']!r} "
                                    "is not supported (expected 'scaled_linear')")
            betas = {k: cfg[k] for k in ("beta_start", "beta_end") if k in cfg}
            if cfg.get("rescale_betas_zero_snr", False):
                raise BackboneError(f"SDXL teacher {str(path)!r}: rescale_betas_zero_snr (zero terminal SNR) is not "
                                    "supported; its alphas differ from the scaled_linear schedule used here")
            kind = cfg.get("prediction_type", "epsilon")
            if kind not in PREDICTION_TYPES:
                raise BackboneError(f"SDXL teacher {str(path)!r}: prediction_type {kind!r} is not supported "
                                    f"(supported: {', '.join(PREDICTION_TYPES)})")
            betas["prediction"] = PREDICTION_TYPES[kind]

        def frozen(model_cls, sub):
            return model_cls.from_pretrained(path / sub, torch_dtype=dtype).to(device).eval().requires_grad_(False)

        return cls(frozen(UNet2DConditionModel, "unet"), load_vae(path / "vae", device),
                   frozen(CLIPTextModel, "text_encoder"), frozen(CLIPTextModelWithProjection, "text_encoder_2"),
                   AutoTokenizer.from_pretrained(path / "tokenizer"), AutoTokenizer.from_pretrained(path / "tokenizer_2"),
                   resolution, device=device, dtype=dtype, **betas)

    def load_denoiser(self, path) -> nn.Module:
        path = Path(path)
        sub = path / self.denoiser_subfolder if (path / self.denoiser_subfolder).is_dir() else path
        require_folder(sub, ["config.json"], "SDXL denoiser")
        return UNet2DConditionModel.from_pretrained(sub, torch_dtype=self.dtype).to(self.device)

    def pipeline(self, unet: nn.Module | None = None, scheduler=None) -> StableDiffusionXLPipeline:
        """The diffusers pipeline over these components with `unet` (default: the teacher) and
        `scheduler` (default: LCMScheduler on these betas, the released few-step sampler; call it
        with timesteps=anchor_timesteps(n).long().tolist() and guidance_scale=0)."""
        if scheduler is None:
            scheduler = LCMScheduler(beta_start=self.beta_start, beta_end=self.beta_end, beta_schedule="scaled_linear",
                                     num_train_timesteps=self.num_train_timesteps,
                                     prediction_type="v_prediction" if self.prediction == "v" else "epsilon")
        return StableDiffusionXLPipeline(
            vae=self.vae, text_encoder=self.text_encoder, text_encoder_2=self.text_encoder_2, tokenizer=self.tokenizer,
            tokenizer_2=self.tokenizer_2, unet=self.denoiser if unet is None else unet, scheduler=scheduler,
            add_watermarker=False)

    # ---- text -----------------------------------------------------------------------------
    def _time_ids(self, batch: int) -> torch.Tensor:
        return sdxl_time_ids(*self.resolution).to(self.device, self.dtype).expand(batch, -1)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """Frozen text features via StableDiffusionXLPipeline.encode_prompt, plus time ids."""
        embeds, _, pooled, _ = self.pipeline().encode_prompt(
            prompt=list(prompts), device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False)
        return Conditioning(embeds, pooled, {"time_ids": self._time_ids(len(prompts))})

    def null_conditioning(self, batch: int) -> Conditioning:
        """Zero prompt embeddings and zero pooled embeddings (DMD2 / released SDXL trainer), same time ids."""
        length = self.tokenizer.model_max_length
        width = self.text_encoder.config.hidden_size + self.text_encoder_2.config.hidden_size
        pooled = self.text_encoder_2.config.projection_dim
        return Conditioning(torch.zeros(batch, length, width, device=self.device, dtype=self.dtype),
                            torch.zeros(batch, pooled, device=self.device, dtype=self.dtype),
                            {"time_ids": self._time_ids(batch)})

    # ---- schedule -------------------------------------------------------------------------
    def _alphas_cumprod(self, t: torch.Tensor) -> torch.Tensor:
        """abar at the (rounded) DDPM index, float64, on t's device."""
        idx = torch.as_tensor(t).round().long().clamp(0, self.num_train_timesteps - 1)
        return self.alphas_cumprod.to(idx.device)[idx]

    def sigma(self, t):
        t = torch.as_tensor(t)
        dtype = t.dtype if t.is_floating_point() else torch.float32
        return (1 - self._alphas_cumprod(t)).sqrt().to(dtype)

    def alpha(self, t):
        t = torch.as_tensor(t)
        dtype = t.dtype if t.is_floating_point() else torch.float32
        return self._alphas_cumprod(t).sqrt().to(dtype)

    def anchor_timesteps(self, num_steps: int) -> torch.Tensor:
        """range(999, 0, -1000 // n): [999, 749, 499, 249] for n=4."""
        return ddpm_anchor_timesteps(num_steps, self.num_train_timesteps)

    def sample_training_timesteps(self, batch, generator=None):
        """Uniform integer t in [0, 999] as float (batch,) (eps-loss of the fake score)."""
        return torch.randint(0, self.num_train_timesteps, (batch,), generator=generator).float()

    def to_x0(self, output, x_t, t):
        """eps: (x_t - sqrt(1 - abar) eps) / sqrt(abar); v: sqrt(abar) x_t - sqrt(1 - abar) v; in float64,
        returned in x_t's dtype."""
        x64 = x_t.to(torch.float64)
        abar = _bcast(self._alphas_cumprod(t).to(x_t.device), x64)
        if self.prediction == "v":
            return (abar.sqrt() * x64 - (1 - abar).sqrt() * output.to(torch.float64)).to(x_t.dtype)
        return ((x64 - (1 - abar).sqrt() * output.to(torch.float64)) / abar.sqrt()).to(x_t.dtype)

    # ---- network --------------------------------------------------------------------------
    def model_output(self, net, x_t, t, cond, guidance=None):
        """Predicted eps, same shape/dtype as x_t. The UNet gets the DDPM index t, the text tokens
        and added_cond_kwargs {text_embeds: pooled, time_ids} in its own dtype."""
        dt = _param_dtype(net)
        out = net(sample=x_t.to(dt), timestep=t, encoder_hidden_states=cond.embeds.to(dt),
                  added_cond_kwargs={"text_embeds": cond.pooled.to(dt), "time_ids": cond.extra["time_ids"].to(dt)},
                  return_dict=False)[0]
        return out.to(x_t.dtype)

    # ---- pixels ---------------------------------------------------------------------------
    def decode(self, latents):
        return decode_latents(self.vae, latents)

    def encode_images(self, images, generator=None):
        return encode_to_latents(self.vae, images, generator)

    def latent_shape(self, height, width):
        f = vae_scale_factor(self.vae)
        if height % f or width % f:
            raise BackboneError(f"SDXL: image size {height}x{width} must be a multiple of {f}")
        return (self.vae.config.latent_channels, height // f, width // f)
