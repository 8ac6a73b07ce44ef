"""The optimiser recipe shared by the toy CLIP and DINOv2 trainings: AdamW (no decay on norms and
biases) and a linear warm-up then cosine decay to 5 % of the peak.
"""
from __future__ import annotations

import math

import torch


def cosine_lr(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 5 % of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; no decay on biases, norms, embeddings' 1-D tensors and the logit scale."""
    params = [q for q in model.parameters() if q.requires_grad]
    decay = [q for q in params if q.ndim >= 2]
    rest = [q for q in params if q.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.98), eps=1e-6)
