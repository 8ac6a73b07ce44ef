"""The generator's training input x_{t_i} (Algorithm 1, first lines), family-agnostic.

Two ways, chosen per batch with probability `backsim_prob` (released code: 0.5,
senseflow_code.md section 2 "Generator input"):

- backward simulation: one anchor index i for the whole batch; start from pure noise at anchor 0
  and run the generator (no grad) through anchors 0..i-1 as the few-step sampler does:
  x0_k = G(x_k), x_{k+1} = add_noise(x0_k, fresh eps, tau_{k+1}); the input is x_i.
- forward diffusion: an anchor index per sample; x_i = add_noise(x_real, eps, tau_i).

At anchor 0 the input is pure N(0, I) in both cases (the sampler's start; for flow families
add_noise at sigma = 1 is the same thing, for SDXL it is the released `t == 999` rule).

Random draws: `decisions` (CPU generator, identical on every rank, so FSDP ranks run the same
number of forwards) for the coin and anchor indices; `noise` (CPU generator, per rank) for eps.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from backbones.base import Backbone, Conditioning


@dataclass
class GeneratorInput:
    x_t: torch.Tensor           # (B, ...) generator input
    t: torch.Tensor             # (B,) its timestep (an anchor per sample)
    anchor_index: torch.Tensor  # (B,) long, index into the anchors
    backsim: bool               # built by backward simulation


def _randn(shape, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype).to(like.device)


@torch.no_grad()
def backward_simulation(backbone: Backbone, generator_net: nn.Module, cond: Conditioning, anchors: torch.Tensor,
                        anchor_index: int, latent_like: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
    """x at anchors[anchor_index] reached by the generator's own stochastic sampler from pure noise
    (anchor_index generator calls). latent_like: (B, ...) tensor giving shape/dtype/device."""
    b = latent_like.shape[0]
    x = _randn(latent_like.shape, latent_like, noise)
    for k in range(anchor_index):
        t = anchors[k].expand(b).to(latent_like.device)
        x0 = backbone.predict_x0(generator_net, x, t, cond)
        x = backbone.add_noise(x0.to(x.dtype), _randn(x.shape, x, noise), anchors[k + 1].expand(b).to(x.device))
    return x


def forward_diffusion(backbone: Backbone, x_real: torch.Tensor, anchors: torch.Tensor, anchor_index: torch.Tensor,
                      noise: torch.Generator) -> torch.Tensor:
    """add_noise(x_real, eps, anchors[anchor_index]) per sample; pure eps where the index is 0."""
    eps = _randn(x_real.shape, x_real, noise)
    t = anchors[anchor_index].to(x_real.device)
    x_t = backbone.add_noise(x_real, eps, t)
    first = (anchor_index == 0).to(x_real.device).reshape(-1, *([1] * (x_real.ndim - 1)))
    return torch.where(first, eps, x_t)


def generator_input(backbone: Backbone, generator_net: nn.Module, x_real: torch.Tensor, cond: Conditioning,
                    anchors: torch.Tensor, backsim_prob: float, decisions: torch.Generator,
                    noise: torch.Generator) -> GeneratorInput:
    """x_{t_i} for one batch (see the module docstring). x_real: (B, ...) latents of the paired
    real images; anchors: (N,) descending anchor timesteps (CPU)."""
    b, n = x_real.shape[0], len(anchors)
    backsim = bool(torch.rand((), generator=decisions) < backsim_prob)
    if backsim:
        i = int(torch.randint(n, (), generator=decisions))
        index = torch.full((b,), i, dtype=torch.long)
        x_t = backward_simulation(backbone, generator_net, cond, anchors, i, x_real, noise)
    else:
        index = torch.randint(n, (b,), generator=decisions)
        x_t = forward_diffusion(backbone, x_real, anchors, index, noise)
    return GeneratorInput(x_t, anchors[index].to(x_real.device), index, backsim)


__all__ = ["GeneratorInput", "backward_simulation", "forward_diffusion", "generator_input"]
