"""CLIP score: per image the cosine of the L2-normalised projected image and text features, mean over
images, then max(mean, 0), on one of two scales (`eval.clip_score_scale`):
- `cosine` (default): the paper's scale (Tab. 1 reports e.g. 0.3286);
- `torchmetrics`: torchmetrics.multimodal.CLIPScore's 100 * cosine (e.g. 32.86), the same number x 100.
torchmetrics 1.9 cannot call transformers 5's `get_*_features` (they return output objects) and only
loads hub names, so its steps (the processor's default preprocessing, projected features, cosine,
mean, max(., 0)) run here on a local CLIPModel folder: ViT-B/32 (`models.clip_vit_b32`) as in the
paper, the toy CLIP on ToyWorld. Also the L2-normalised image features used by CLIP-diversity."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def projected(out) -> torch.Tensor:
    """The projected features of CLIPModel.get_image/text_features: a tensor in transformers 4,
    an output object with them in `pooler_output` in transformers 5."""
    return out if torch.is_tensor(out) else out.pooler_output


SCALES = {"cosine": 1.0, "torchmetrics": 100.0}  # eval.clip_score_scale -> factor on the cosine


class ClipScorer:
    def __init__(self, path: str | Path, device: str = "cpu", scale: str = "cosine"):
        from transformers import CLIPModel, CLIPProcessor

        if scale not in SCALES:
            raise ValueError(f"CLIP score scale must be one of {', '.join(SCALES)}, got {scale!r}")
        self.scale = scale

        self.model = CLIPModel.from_pretrained(str(path)).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(str(path))
        self.device = device
        self.max_positions = self.model.config.text_config.max_position_embeddings

    @torch.no_grad()
    def image_features(self, images: np.ndarray, batch_size: int = 64, normalize: bool = True) -> torch.Tensor:
        """(N, D) projected image features of (N, H, W, 3) uint8 images, L2-normalised unless asked not to."""
        out = []
        for i in range(0, len(images), batch_size):
            chunk = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1) for im in images[i:i + batch_size]]
            px = self.processor(images=chunk, return_tensors="pt", padding=True)["pixel_values"]
            f = projected(self.model.get_image_features(pixel_values=px.to(self.device))).float()
            out.append(f / f.norm(p=2, dim=-1, keepdim=True) if normalize else f)
        return torch.cat(out).cpu()

    def __call__(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """The Fréchet-distance feature extractor interface: unnormalised projected features, numpy."""
        return self.image_features(images, batch_size, normalize=False).numpy()

    @torch.no_grad()
    def text_features(self, prompts: list[str], batch_size: int = 64) -> torch.Tensor:
        out = []
        for i in range(0, len(prompts), batch_size):
            tok = self.processor(text=prompts[i:i + batch_size], return_tensors="pt", padding=True)
            ids, mask = tok["input_ids"][..., :self.max_positions], tok["attention_mask"][..., :self.max_positions]
            f = projected(self.model.get_text_features(ids.to(self.device), mask.to(self.device))).float()
            out.append(f / f.norm(p=2, dim=-1, keepdim=True))
        return torch.cat(out).cpu()

    def per_image(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        """cos(image, its prompt) per image, times 100 on the torchmetrics scale."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        cosine = (self.image_features(images) * self.text_features(prompts)).sum(-1).double()
        return (SCALES[self.scale] * cosine).numpy()

    def clip_score(self, images: np.ndarray, prompts: list[str]) -> float:
        return float(max(self.per_image(images, prompts).mean(), 0.0))


__all__ = ["ClipScorer", "SCALES", "projected"]
