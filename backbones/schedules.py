"""Noise schedules and anchor timesteps as small pure functions (no models, no state).

Flow families: x_t = (1 - sigma) x0 + sigma eps, net timestep t = 1000 * sigma.
"""
from __future__ import annotations

import math

import torch


def shift_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3 static timestep shift: sigma = shift*u / (1 + (shift - 1)*u). Maps [0,1] onto [0,1]."""
    return shift * u / (1 + (shift - 1) * u)


def unshift_sigmas(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """Inverse of `shift_sigmas`: the u that `shift_sigmas(u, shift)` maps to sigma."""
    return sigma / (shift - (shift - 1) * sigma)


def flow_anchor_sigmas(num_steps: int, shift: float) -> torch.Tensor:
    """Descending anchors of an n-step flow student with static shift: shift(linspace(1, 1/n, n)).
    shift 3, n=4 gives [1.0, 0.9, 0.75, 0.5] (SenseFlow SD3.5 anchors)."""
    if num_steps < 1:
        raise ValueError("num_steps must be >= 1")
    u = torch.linspace(1.0, 1.0 / num_steps, num_steps, dtype=torch.float64)
    return shift_sigmas(u, shift).float()


def flow_sampling_sigmas(num_steps: int, shift: float) -> torch.Tensor:
    """Sigmas for a many-step teacher sampler: shift(linspace(1, 1/n, n)) like diffusers'
    FlowMatchEulerDiscreteScheduler (the final step goes to sigma 0)."""
    return flow_anchor_sigmas(num_steps, shift)


def logit_normal(batch: int, generator: torch.Generator | None = None, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """u = sigmoid(N(mean, std)) in (0, 1) (SD3 training timestep density)."""
    return torch.sigmoid(mean + std * torch.randn(batch, generator=generator))


def flux_time_shift(mu: float, u: torch.Tensor) -> torch.Tensor:
    """FLUX dynamic (exponential) shift: exp(mu) / (exp(mu) + (1/u - 1))."""
    return math.exp(mu) / (math.exp(mu) + (1.0 / u - 1.0))


def flux_mu(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096,
            base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """diffusers' `calculate_shift`: mu linear in the packed image sequence length."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * m + (base_shift - m * base_seq_len)


def ddpm_alphas_cumprod(num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """SD/SDXL 'scaled_linear' betas -> cumulative alpha products (float64)."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def ddpm_anchor_timesteps(num_steps: int, num_train_timesteps: int = 1000) -> torch.Tensor:
    """DMD2/SenseFlow SDXL anchors: range(999, 0, -1000 // n) -> [999, 749, 499, 249] for n=4."""
    if num_steps < 1:
        raise ValueError("num_steps must be >= 1")
    step = num_train_timesteps // num_steps
    return torch.arange(num_train_timesteps - 1, 0, -step, dtype=torch.float32)[:num_steps]
