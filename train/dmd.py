"""Distribution matching (DMD2) and the fake-score loss, family-agnostic.

Everything here talks to a model family only through `backbones.base.Backbone`; shapes are
(B, ...) latents (pixels for the toy family), `t` is (B,) in family timestep units.
`generator` arguments are optional `torch.Generator`s for reproducibility; use a CPU one (the
families' timestep samplers draw on CPU; noise is drawn on it and moved to the latents' device).

Released-code ground truth: shared/reference/senseflow_code.md sections 2 (DMD) and 3 (fake score).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from backbones.base import Backbone, Conditioning
from backbones.schedules import shift_sigmas


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal like x, drawn on the generator's device (so a CPU generator works for
    CUDA tensors), returned on x's device/dtype."""
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def _sample_dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def dmd_loss(x0_gen: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """DMD2 distribution-matching loss, exactly as the released code (DMD2 `sd_guidance.py`,
    SenseFlow `compute_distribution_matching_loss`).

    x0_gen: (B, ...) generator output (x0 prediction) WITH grad.
    x0_real / x0_fake: (B, ...) x0 predictions of the teacher (with CFG) and of the fake score
    at the same noisy input; treated as constants.

    grad = (p_real - p_fake) / mean_{non-batch dims}|p_real|, p = x - x0_*, nan_to_num'd;
    loss = 0.5 * mse(x, (x - grad).detach()) with mean reduction, so dL/dx = grad / x.numel().
    Computed in float32. Returns (scalar loss, logs of detached tensors).
    """
    x = x0_gen.float()
    with torch.no_grad():
        p_real = x - x0_real.float()
        p_fake = x - x0_fake.float()
        normaliser = p_real.abs().mean(dim=_sample_dims(x), keepdim=True)
        grad = torch.nan_to_num((p_real - p_fake) / normaliser)
    loss = 0.5 * F.mse_loss(x, (x - grad).detach(), reduction="mean")
    logs = {"dmd_grad_norm": grad.norm().detach(), "dmd_normaliser": normaliser.mean().detach()}
    return loss, logs


def sample_dmd_timesteps(backbone: Backbone, batch: int, min_frac: float = 0.02, max_frac: float = 0.98,
                         shift: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """DMD timesteps (B,) in family units, the released SD3.5/SDXL rule: an integer index
    k ~ U_int[round(min_frac*T), round(max_frac*T)] (T = backbone.num_train_timesteps; 0.02/0.98
    gives U_int[20, 980]), mapped through the family's timestep table:
    t = T * shift_sigmas(k / T, shift).

    `shift` is the static shift of the family's training sigma table (SD3.5 / toy: 3.0, which
    reproduces indexing the shifted table; DDPM families and unshifted tables: 1.0, giving t = k).
    The released flow table is indexed one entry later (u = (k+1)/T); the 0.1 % difference in the
    range is ignored. FLUX's released rule is logit-normal: pass
    `t=backbone.sample_training_timesteps(...)` to `dmd_targets` instead.
    """
    if not 0.0 <= min_frac <= max_frac <= 1.0:
        raise ValueError(f"need 0 <= min_frac <= max_frac <= 1, got {min_frac}, {max_frac}")
    total = backbone.num_train_timesteps
    lo, hi = int(round(min_frac * total)), int(round(max_frac * total))
    device = generator.device if generator is not None else "cpu"
    k = torch.randint(lo, hi + 1, (batch,), generator=generator, device=device).cpu().to(torch.float64)
    if shift == 1.0:
        return k.float()
    return (total * shift_sigmas(k / total, shift)).float()


@dataclass
class DMDTargets:
    """What the DMD gradient is built from, for one batch (all detached)."""

    t: torch.Tensor  # (B,) timesteps in family units
    x_t: torch.Tensor  # (B, ...) noised generator output
    x0_real: torch.Tensor  # (B, ...) teacher x0 with guidance
    x0_fake: torch.Tensor  # (B, ...) fake-score x0, no guidance


@torch.no_grad()
def dmd_targets(backbone: Backbone, real_net: nn.Module, fake_net: nn.Module, x0_gen: torch.Tensor,
                cond: Conditioning, guidance_scale: float | torch.Tensor = 1.0, uncond: Conditioning | None = None,
                t: torch.Tensor | None = None, min_frac: float = 0.02, max_frac: float = 0.98, shift: float = 1.0,
                generator: torch.Generator | None = None) -> DMDTargets:
    """Noise the (detached) generator output and ask both score models for x0, under no_grad.

    x0_gen: (B, ...) generator output; cond: conditioning for B samples; uncond: the family's
    unconditional input for CFG (None: `backbone.null_conditioning`). `t` (B,) overrides the
    timestep sampling (e.g. FLUX's logit-normal); otherwise `sample_dmd_timesteps(min_frac,
    max_frac, shift)`. Teacher: `predict_x0(real_net, ..., guidance_scale, uncond)` (true CFG,
    or the family's embedded guidance); fake score: guidance 1 (released `fake_guidance_scale=1`).
    Precision (e.g. a bf16 teacher) is the caller's autocast choice.
    """
    x = x0_gen.detach()
    b = x.shape[0]
    if t is None:
        t = sample_dmd_timesteps(backbone, b, min_frac, max_frac, shift, generator)
    t = t.to(device=x.device, dtype=torch.float32)
    x_t = backbone.add_noise(x, _randn_like(x, generator), t)
    x0_real = backbone.predict_x0(real_net, x_t, t, cond, guidance_scale=guidance_scale, uncond=uncond)
    x0_fake = backbone.predict_x0(fake_net, x_t, t, cond, guidance_scale=1.0)
    return DMDTargets(t=t, x_t=x_t, x0_real=x0_real.to(x.dtype), x0_fake=x0_fake.to(x.dtype))


def fake_score_loss(backbone: Backbone, fake_net: nn.Module, x0_detached: torch.Tensor, cond: Conditioning,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Denoising loss of the fake score on generator samples (released `compute_loss_fake`).

    x0_detached: (B, ...) generator output (detached here in any case). t ~
    `backbone.sample_training_timesteps` (flow: logit-normal on the family's table; DDPM:
    uniform), eps ~ N(0, I), x_t = add_noise(x0, eps, t);
    loss = mean((model_output(fake_net, x_t, t, cond) - training_target(x0, eps, t))^2), float32,
    no guidance and unit weighting. Only `fake_net` receives gradients.
    Returns (scalar loss, logs of detached tensors incl. the fake x0 prediction).
    """
    x0 = x0_detached.detach()
    t = backbone.sample_training_timesteps(x0.shape[0], generator).to(device=x0.device, dtype=torch.float32)
    eps = _randn_like(x0, generator)
    x_t = backbone.add_noise(x0, eps, t)
    out = backbone.model_output(fake_net, x_t, t, cond)
    loss = F.mse_loss(out.float(), backbone.training_target(x0, eps, t).float(), reduction="mean")
    logs = {"fake_score_loss": loss.detach(), "fake_x0": backbone.to_x0(out.detach(), x_t, t), "fake_t": t}
    return loss, logs


__all__ = ["dmd_loss", "sample_dmd_timesteps", "DMDTargets", "dmd_targets", "fake_score_loss"]
