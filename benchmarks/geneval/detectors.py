"""Detectors behind GenEval's rules (protocols/geneval_rules.py): per image, candidate objects by
class name, plus a colour classifier for the `colors` / `color_attr` checks.

- `OracleDetector` (ToyWorld edition): the ToyWorld oracle's detections (class = shape) with their
  colour and texture attached; colours are read, not classified.
- `Mask2FormerDetector` (official edition): transformers `Mask2FormerForUniversalSegmentation` from
  `models.geneval_detector` (a COCO instance-segmentation checkpoint, e.g.
  facebook/mask2former-swin-small-coco-instance) and the colour classifier of evaluate_images.py
  with a transformers CLIP ViT-L/14 from `models.geneval_clip` (openai/clip-vit-large-patch14):
  each object composited with its mask onto a #999 background, cropped to its box, CLIP zero-shot
  over GenEval's 10 colours with its three templates.
  Differences from the official setup (mmdet Mask2Former Swin-S 8x2 50e COCO, open_clip ViT-L-14):
  a different Mask2Former checkpoint and post-processing (transformers' instance post-processing,
  its score = class probability x mask quality, vs mmdet's); boxes are the masks' extents; class
  names are matched to GenEval's 80 COCO names by exact string (others are dropped); CLIP weights are
  the same OpenAI ViT-L/14 in transformers form, with transformers' image preprocessing.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from protocols.geneval_rules import DetectedObject, attribute_reader
from configs.cli import UserError
from measures.clip_score import projected
from toyworld.grading import oracle_candidates
from toyworld.oracle import detect

COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"]
TEMPLATES = ["a photo of a {c} {cls}", "a photo of a {c}-colored {cls}", "a photo of a {c} object"]
OBJECT_NAMES = Path(__file__).resolve().parent / "prompts" / "object_names.txt"


class MissingDetector(UserError, FileNotFoundError):
    """A model of the official GenEval edition is not on disk."""


class OracleDetector:
    name = "ToyWorld oracle"

    def candidates(self, image: np.ndarray) -> dict[str, list[DetectedObject]]:
        return oracle_candidates(detect(image))

    def color_fn(self, image: np.ndarray):
        return attribute_reader("color")

    def texture_fn(self, image: np.ndarray):
        return attribute_reader("texture")


def _require(path, what: str, source: str) -> Path:
    if not path or not Path(path).exists():
        raise MissingDetector(f"GenEval (official edition) needs {what} at a local path: {str(path)!r} is missing "
                              f"(params.yaml models). Get {source} and set the path.")
    return Path(path)


class Mask2FormerDetector:
    name = "transformers Mask2Former + CLIP ViT-L/14"

    def __init__(self, models: dict, device: str = "cpu"):
        from transformers import (AutoImageProcessor, CLIPModel, CLIPProcessor,
                                  Mask2FormerForUniversalSegmentation)

        det = _require(models.get("geneval_detector"), "a Mask2Former COCO instance-segmentation folder",
                       "facebook/mask2former-swin-small-coco-instance")
        clip = _require(models.get("geneval_clip"), "CLIP ViT-L/14 (transformers CLIPModel folder)",
                        "openai/clip-vit-large-patch14")
        self.device = device
        self.model = Mask2FormerForUniversalSegmentation.from_pretrained(det).to(device).eval()
        self.processor = AutoImageProcessor.from_pretrained(det)
        self.clip = CLIPModel.from_pretrained(clip).to(device).eval()
        self.clip_processor = CLIPProcessor.from_pretrained(clip)
        self.classnames = [line.strip() for line in OBJECT_NAMES.read_text().splitlines() if line.strip()]
        self._classifiers: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def candidates(self, image: np.ndarray) -> dict[str, list[DetectedObject]]:
        pil = Image.fromarray(image).convert("RGB")
        inputs = self.processor(images=pil, return_tensors="pt").to(self.device)
        out = self.model(**inputs)
        res = self.processor.post_process_instance_segmentation(
            out, threshold=0.0, target_sizes=[(pil.height, pil.width)], return_binary_maps=True)[0]
        names = self.model.config.id2label
        found: dict[str, list[DetectedObject]] = {}
        seg = res["segmentation"]
        for k, info in enumerate(res["segments_info"]):
            name = names[int(info["label_id"])]
            if name not in self.classnames or seg is None:
                continue
            mask = seg[k].cpu().numpy().astype(bool) if seg.dim() == 3 else (seg.cpu().numpy() == info["id"])
            ys, xs = np.nonzero(mask)
            if len(xs) == 0:
                continue
            box = [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()), float(info["score"])]
            found.setdefault(name, []).append(DetectedObject(box=box, score=float(info["score"]), mask=mask))
        return found

    @torch.no_grad()
    def _classifier(self, classname: str) -> torch.Tensor:
        if classname not in self._classifiers:
            weights = []
            for c in COLORS:
                texts = [t.format(c=c, cls=classname) for t in TEMPLATES]
                tok = self.clip_processor(text=texts, return_tensors="pt", padding=True).to(self.device)
                f = projected(self.clip.get_text_features(input_ids=tok.input_ids, attention_mask=tok.attention_mask))
                f = f / f.norm(dim=-1, keepdim=True)
                mean = f.mean(0)
                weights.append(mean / mean.norm())
            self._classifiers[classname] = torch.stack(weights, dim=1)
        return self._classifiers[classname]

    def color_fn(self, image: np.ndarray):
        pil = Image.fromarray(image).convert("RGB")
        blank = Image.new("RGB", pil.size, color="#999")

        @torch.no_grad()
        def classify(objs: list[DetectedObject], classname: str) -> list[str]:
            crops = []
            for o in objs:
                im = Image.composite(pil, blank, Image.fromarray(o.mask)) if o.mask is not None else pil
                crops.append(im.crop(tuple(o.box[:4])))
            px = self.clip_processor(images=crops, return_tensors="pt")["pixel_values"].to(self.device)
            f = projected(self.clip.get_image_features(pixel_values=px))
            f = f / f.norm(dim=-1, keepdim=True)
            return [COLORS[i] for i in (100.0 * f @ self._classifier(classname)).argmax(1).tolist()]

        return classify

    def texture_fn(self, image: np.ndarray):
        return None  # the official GenEval has no texture checks


__all__ = ["COLORS", "MissingDetector", "OracleDetector", "Mask2FormerDetector"]
