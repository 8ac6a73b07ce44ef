"""The latent space of the AutoencoderKL families (sd3, flux, sdxl).

latents = (z - shift_factor) * scaling_factor with z ~ the VAE posterior (SD3/FLUX VAEs have a
shift_factor, SDXL's has none, i.e. 0), and the inverse before decoding, exactly as the diffusers
pipelines do. The VAE always runs in float32, also inside a bf16 autocast region of the training
loop (autocast is switched off around it): the released code decodes in fp32, and SDXL's VAE
overflows in fp16.
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL


def load_vae(path: str | Path, device="cpu") -> AutoencoderKL:
    """Frozen float32 AutoencoderKL from a local folder (config.json + weights)."""
    vae = AutoencoderKL.from_pretrained(path, torch_dtype=torch.float32)
    return vae.to(device).eval().requires_grad_(False)


def vae_scale_factor(vae: AutoencoderKL) -> int:
    """Pixels per latent cell along one side (8 for the real VAEs), as the pipelines compute it."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _shift_and_scale(vae: AutoencoderKL) -> tuple[float, float]:
    shift = vae.config.get("shift_factor", None)
    return (0.0 if shift is None else float(shift)), float(vae.config.scaling_factor)


def encode_to_latents(vae: AutoencoderKL, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] -> normalised latents (B, C, H/f, W/f), a posterior sample."""
    shift, scale = _shift_and_scale(vae)
    with torch.autocast(images.device.type, enabled=False):
        z = vae.encode(images.to(torch.float32)).latent_dist.sample(generator)
    return ((z - shift) * scale).to(images.dtype)


def decode_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents (B, C, h, w) -> images (B, 3, h*f, w*f) clamped to [-1, 1], float32.
    Differentiable (the VFM discriminator back-propagates through it)."""
    shift, scale = _shift_and_scale(vae)
    with torch.autocast(latents.device.type, enabled=False):
        z = latents.to(torch.float32) / scale + shift
        return vae.decode(z, return_dict=False)[0].clamp(-1, 1)
