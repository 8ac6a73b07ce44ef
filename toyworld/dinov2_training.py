"""Training of the toy DINOv2.

DINOv2 -> `<out>/dinov2/`: `Dinov2Model(dinov2_config(...))` (32 px, patch 4: CLS + 8x8 patch
tokens) and a `BitImageProcessor` (no resize/crop, x/255 then ImageNet mean/std). Supervised
objective: for each of the 4 grid cells (16x16 px = 4x4 patches), one linear head shared by the
cells reads [final CLS token, mean of the cell's patch tokens] and predicts the cell's content
(empty / circle / square / triangle) and, for an occupied cell, its colour (6) and texture (2);
the loss is the sum of the three cross-entropies (colour and texture over occupied cells only).
The head is discarded; only the backbone is saved.
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import Dinov2Model
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from toyworld.encoders import dinov2_config
from toyworld.world import (GRID, RESOLUTION)
from toyworld.captions import N_CELL_CLASSES
from toyworld.encoder_optim import adamw, cosine_lr
from toyworld.scene_pool import ScenePool, normalize


class CellHead(torch.nn.Module):
    """Per grid cell: [CLS, mean of the cell's patch tokens] -> content/colour/texture logits."""

    def __init__(self, width: int, patch_size: int):
        super().__init__()
        self.per_cell = RESOLUTION // patch_size // GRID
        self.linear = torch.nn.Linear(2 * width, sum(N_CELL_CLASSES))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """tokens (B, 1 + P, W), CLS first -> logits (B, GRID*GRID, n) per attribute."""
        b, _, w = tokens.shape
        g = self.per_cell
        cells = tokens[:, 1:].reshape(b, GRID, g, GRID, g, w).mean((2, 4)).reshape(b, GRID * GRID, w)
        feats = torch.cat([tokens[:, :1].expand(-1, GRID * GRID, -1), cells], dim=-1)
        return self.linear(feats).split(N_CELL_CLASSES, dim=-1)


def _cell_loss(logits: tuple[torch.Tensor, ...], labels: torch.Tensor) -> torch.Tensor:
    return sum(F.cross_entropy(lg.reshape(-1, lg.shape[-1]), labels[:, a].reshape(-1), ignore_index=-1)
               for a, lg in enumerate(logits))


def new_dinov2(p: dict) -> Dinov2Model:
    torch.manual_seed(p["seed"] + 1)
    return Dinov2Model(dinov2_config(width=p["dinov2_width"], layers=p["dinov2_layers"], heads=p["dinov2_heads"]))


def train_dinov2(p: dict, pool: ScenePool) -> tuple[Dinov2Model, CellHead]:
    model = new_dinov2(p).train()
    head = CellHead(model.config.hidden_size, model.config.patch_size)
    both = torch.nn.ModuleList([model, head])
    opt = adamw(both, p["dinov2_lr"], p["dinov2_weight_decay"])
    rng = np.random.default_rng([p["seed"], 200])
    bs, steps = p["dinov2_batch_size"], p["dinov2_steps"]
    labels = torch.from_numpy(pool.labels)
    bar = tqdm(range(steps), desc="dinov2", unit="step", mininterval=5.0)
    for step in bar:
        idx = rng.choice(len(pool), bs, replace=False)
        tokens = model(pixel_values=normalize(pool.images[idx], IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)).last_hidden_state
        loss = _cell_loss(head(tokens), labels[idx])
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, p["dinov2_lr"], p["dinov2_warmup"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(both.parameters(), 1.0)
        opt.step()
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return model.eval(), head.eval()
