"""DiffAugment (Zhao et al. 2020), the policy the SenseFlow VFM discriminator applies to the
image it judges: 'color,translation,cutout'.

All ops are differentiable in the image (the generator's adversarial gradient passes through
them) and act per sample. Random draws come from an optional `torch.Generator` so a call is
reproducible; without one, the global RNG is used (as the released code does).

Images are (B, C, H, W) in [-1, 1]. The zero used for padding (translation) and for the
cut-out square is the value 0 of that range, i.e. mid-grey, exactly as the released code
(which augments before mapping to [0, 1]).
"""
from __future__ import annotations

import torch

DEFAULT_POLICY = "color,translation,cutout"


def _rand(shape, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """U[0, 1) of `shape`, drawn on the generator's device, returned on x's device/dtype."""
    device = generator.device if generator is not None else x.device
    return torch.rand(shape, generator=generator, device=device).to(device=x.device, dtype=x.dtype)


def _randint(low: int, high: int, shape, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Integers in [low, high) of `shape`, on x's device."""
    device = generator.device if generator is not None else x.device
    return torch.randint(low, high, shape, generator=generator, device=device).to(x.device)


def rand_brightness(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add a per-sample offset in [-0.5, 0.5)."""
    return x + (_rand((x.shape[0], 1, 1, 1), x, generator) - 0.5)


def rand_saturation(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each pixel's deviation from its channel mean by a per-sample factor in [0, 2)."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand((x.shape[0], 1, 1, 1), x, generator) * 2) + mean


def rand_contrast(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale the deviation from the per-sample image mean by a factor in [0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand((x.shape[0], 1, 1, 1), x, generator) + 0.5) + mean


def rand_translation(x: torch.Tensor, ratio: float = 0.125, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each sample by an integer offset in [-r, r] pixels per axis (r = round(ratio * side)),
    filling uncovered pixels with 0."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = _randint(-sh, sh + 1, (b, 1), x, generator)
    tx = _randint(-sw, sw + 1, (b, 1), x, generator)
    # Gather from a zero-padded copy: output[i, j] = x[i + ty, j + tx], or 0 outside the image.
    padded = torch.nn.functional.pad(x, (sw, sw, sh, sh))
    rows = torch.arange(h, device=x.device)[None] + ty + sh  # (B, H)
    cols = torch.arange(w, device=x.device)[None] + tx + sw  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def rand_cutout(x: torch.Tensor, ratio: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a square of side round(ratio * side) per sample, centred uniformly (clipped at borders)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # Centre ranges as in the released code: [0, side + (1 - size % 2)).
    cy = _randint(0, h + (1 - ch % 2), (b, 1, 1), x, generator)
    cx = _randint(0, w + (1 - cw % 2), (b, 1, 1), x, generator)
    top, left = cy - ch // 2, cx - cw // 2
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)  # (B, H, W)
    return x * (~inside).to(x.dtype).unsqueeze(1)


_POLICIES = {
    "color": (rand_brightness, rand_saturation, rand_contrast),
    "translation": (rand_translation,),
    "cutout": (rand_cutout,),
}


def diff_augment(x: torch.Tensor, policy: str = DEFAULT_POLICY, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the comma-separated `policy` ('color', 'translation', 'cutout') to x (B, C, H, W) in
    [-1, 1]; returns a tensor of the same shape (values may leave [-1, 1], as in the original).
    An empty policy returns x unchanged."""
    if not policy:
        return x
    for name in policy.split(","):
        name = name.strip()
        if name not in _POLICIES:
            raise ValueError(f"unknown DiffAugment op {name!r}; choose from {sorted(_POLICIES)}")
        for op in _POLICIES[name]:
            x = op(x, generator=generator)
    return x.contiguous()
