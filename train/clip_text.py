"""CLIP text features for the VFM discriminator's text condition (released: open_clip ViT-L/14
`encode_text`, L2-normalised, no grad). Here a transformers `CLIPModel` folder with its tokenizer
(the toy CLIP on ToyWorld, e.g. openai/clip-vit-large-patch14 saved locally for real families).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from configs.cli import UserError


class ClipTextError(UserError, ValueError):
    """A missing or unreadable CLIP folder (user-fixable)."""


class ClipTextEncoder(nn.Module):
    """prompts -> (B, projection_dim) L2-normalised text embeddings, frozen."""

    def __init__(self, model: nn.Module, tokenizer, max_length: int):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = int(max_length)

    @classmethod
    def from_pretrained(cls, path: str | Path, device="cpu") -> "ClipTextEncoder":
        from transformers import AutoTokenizer, CLIPModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ClipTextError(f"CLIP text encoder: no CLIPModel at {str(path)!r} (config.json missing). Point "
                                f"train.clip at a local transformers CLIP folder with its tokenizer, or set vfm: false.")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as e:
            raise ClipTextError(f"CLIP text encoder: no tokenizer in {str(path)!r} ({e})") from None
        model = CLIPModel.from_pretrained(str(path)).to(device)
        limit = model.config.text_config.max_position_embeddings
        max_length = min(limit, tokenizer.model_max_length or limit)
        return cls(model, tokenizer, max_length)

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> torch.Tensor:
        # lower-cased: the toy word-level tokenizer expects it, CLIP's BPE lower-cases anyway
        toks = self.tokenizer([p.lower() for p in prompts], padding="max_length", truncation=True,
                              max_length=self.max_length, return_tensors="pt")
        device = next(self.model.parameters()).device
        out = self.model.get_text_features(input_ids=toks["input_ids"].to(device),
                                           attention_mask=toks["attention_mask"].to(device))
        feats = out if torch.is_tensor(out) else out.pooler_output
        return F.normalize(feats.float(), dim=-1)


__all__ = ["ClipTextEncoder", "ClipTextError"]
