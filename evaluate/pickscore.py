"""PickScore (yuvalkirstain/PickScore README inference snippet): transformers CLIPModel
(`models.pickscore`, the yuvalkirstain/PickScore_v1 folder) with the CLIPProcessor of
laion/CLIP-ViT-H-14-laion2B-s32B-b79K (`models.pickscore_processor`; defaults to the model folder
when it holds a processor): projected image and text features, L2-normalised;
score = logit_scale.exp() * cos (no softmax: that is only for comparing images of one prompt).
Reported as the mean raw score over images, as benchmark papers do."""
from __future__ import annotations

import numpy as np
import torch

from measures.clip_score import projected
from measures.weights import model_path

SOURCE = "https://huggingface.co/yuvalkirstain/PickScore_v1 (saved with save_pretrained)"


class PickScorer:
    def __init__(self, models: dict, device: str = "cpu"):
        from transformers import AutoModel, AutoProcessor

        path = model_path(models, "pickscore", "PickScore_v1 (CLIPModel folder)", SOURCE, "dir")
        proc = models.get("pickscore_processor") or path
        self.model = AutoModel.from_pretrained(str(path)).to(device).eval()
        self.processor = AutoProcessor.from_pretrained(str(proc))
        self.device = device

    @torch.no_grad()
    def score(self, images, prompts: list[str]) -> np.ndarray:
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        px = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        tok = self.processor(text=prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        img = projected(self.model.get_image_features(pixel_values=px.to(self.device)))
        txt = projected(self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                   attention_mask=tok["attention_mask"].to(self.device)))
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        return (self.model.logit_scale.exp() * (img * txt).sum(-1)).double().cpu().numpy()


def load_scorer(models: dict, device: str = "cpu") -> PickScorer:
    return PickScorer(models, device)


__all__ = ["PickScorer", "load_scorer"]
