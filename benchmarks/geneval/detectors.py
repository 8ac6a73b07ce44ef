"""Detectors behind GenEval's rules (protocols/geneval_rules.py): per image, candidate objects by
class name, plus a colour classifier for the `colors` / `color_attr` checks.

- `OracleDetector` (ToyWorld edition): the ToyWorld oracle's detections (class = shape) with their
  colour and texture attached; colours are read, not classified.
- `Mask2FormerDetector` (official edition): transformers `Mask2FormerForUniversalSegmentation` from
  `models.geneval_detector` (a COCO instance-segmentation checkpoint, e.g.
  facebook/mask2former-swin-small-coco-instance) with mmdet 2.x's test pipeline and instance
  post-processing (`instance_postprocess`: input resized to 800 px short side / 1333 long, padded to
  /32; mask logits bilinearly upsampled to the padded input, cropped, bilinearly upsampled to the
  image's full resolution; top 100 (query, class) pairs by class probability; mask = logit > 0;
  score = class probability x mean sigmoid inside the mask; box = the mask's extent with mmdet's
  `mask2bbox` convention [x_min, y_min, x_max + 1, y_max + 1]), and the colour classifier of
  evaluate_images.py with a transformers CLIP ViT-L/14 from `models.geneval_clip`
  (openai/clip-vit-large-patch14): each object composited with its mask onto a #999 background,
  cropped to its box, CLIP zero-shot over GenEval's 10 colours with its three templates.
  Class names: the checkpoint's COCO labels are GenEval's (object_names.txt, mmdet's names) except
  "mouse", "remote", "keyboard" = "computer mouse", "tv remote", "computer keyboard"
  (`COCO_TO_GENEVAL`); a checkpoint whose labels do not map onto GenEval's 80 names is refused.
  Residual differences from the official setup (mmdet Mask2Former Swin-S 8x2 50e COCO, open_clip
  ViT-L-14): a different Mask2Former checkpoint (detectron2-trained, converted by transformers) and
  therefore different weights; transformers' image resizing (PIL) vs mmdet's (cv2) and its RGB
  normalisation; transformers' `size_divisor` rounds each resized side up to a multiple of 32 by
  resizing where mmdet pads (the same for square images such as 1024 x 1024); CLIP weights are the
  same OpenAI ViT-L/14 in transformers form, with transformers' image preprocessing instead of
  open_clip's transform.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from protocols.geneval_rules import DetectedObject, attribute_reader
from configs.cli import UserError
from measures.clip_score import projected
from toyworld.grading import oracle_candidates
from toyworld.oracle import detect

COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"]
TEMPLATES = ["a photo of a {c} {cls}", "a photo of a {c}-colored {cls}", "a photo of a {c} object"]
OBJECT_NAMES = Path(__file__).resolve().parent / "prompts" / "object_names.txt"


# transformers' (detectron2's) COCO labels -> GenEval's object_names.txt (mmdet's names); same COCO order
COCO_TO_GENEVAL = {"mouse": "computer mouse", "remote": "tv remote", "keyboard": "computer keyboard"}
MMDET_TEST_SIZE = {"shortest_edge": 800, "longest_edge": 1333}  # mmdet 2.x test pipeline: Resize keep_ratio
MMDET_SIZE_DIVISOR = 32                                         # Pad size_divisor
MAX_PER_IMAGE = 100                                             # mmdet's Mask2Former test_cfg.max_per_image


class MissingDetector(UserError, FileNotFoundError):
    """A model of the official GenEval edition is not on disk."""


class DetectorLabelsError(UserError, ValueError):
    """The detector's labels are not GenEval's 80 COCO classes."""


def geneval_labels(id2label: dict, classnames: list[str]) -> dict[int, str]:
    """Label id -> GenEval class name (`COCO_TO_GENEVAL` renames); refuses a label set that is not
    GenEval's 80 classes (a panoptic or other-dataset checkpoint), naming what does not match."""
    mapping = {int(i): COCO_TO_GENEVAL.get(name, name) for i, name in id2label.items()}
    extra = sorted(name for i, name in id2label.items() if mapping[int(i)] not in classnames)
    missing = sorted(set(classnames) - set(mapping.values()))
    if extra or missing:
        raise DetectorLabelsError(
            f"models.geneval_detector must be a COCO instance-segmentation checkpoint with GenEval's 80 classes "
            f"(benchmarks/geneval/prompts/object_names.txt): labels not in GenEval: {extra[:8] or 'none'}; "
            f"GenEval classes the checkpoint lacks: {missing[:8] or 'none'}")
    return mapping


def mask2bbox(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) [x_min, y_min, x_max + 1, y_max + 1] (mmdet 2.x mask2bbox; zeros if empty)."""
    boxes = torch.zeros((masks.shape[0], 4), dtype=torch.float32)
    x_any, y_any = masks.any(dim=1), masks.any(dim=2)
    for i in range(masks.shape[0]):
        x, y = torch.where(x_any[i])[0], torch.where(y_any[i])[0]
        if len(x) and len(y):
            boxes[i] = torch.tensor([x[0], y[0], x[-1] + 1, y[-1] + 1], dtype=torch.float32)
    return boxes


def instance_postprocess(class_logits: torch.Tensor, mask_logits: torch.Tensor, padded_hw: tuple[int, int],
                         valid_hw: tuple[int, int], image_hw: tuple[int, int],
                         max_per_image: int = MAX_PER_IMAGE) -> tuple[torch.Tensor, ...]:
    """One image through mmdet 2.x's Mask2Former test path (module docstring): class_logits (Q, C + 1, the
    last is no-object), mask_logits (Q, h, w) at the decoder's resolution -> (labels, scores, masks
    (K, H, W) bool at the image's resolution, boxes (K, 4)) for the top `max_per_image` (query, class)."""
    masks = F.interpolate(mask_logits[None].float(), size=padded_hw, mode="bilinear", align_corners=False)[0]
    masks = masks[:, :valid_hw[0], :valid_hw[1]]
    masks = F.interpolate(masks[None], size=image_hw, mode="bilinear", align_corners=False)[0]
    probs = F.softmax(class_logits.float(), dim=-1)[:, :-1]
    n_classes = probs.shape[1]
    top, index = probs.flatten().topk(min(max_per_image, probs.numel()), sorted=False)
    labels, queries = index % n_classes, index // n_classes
    chosen = masks[queries]
    binary = chosen > 0
    mask_scores = (chosen.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    return labels, top * mask_scores, binary, mask2bbox(binary)


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
    name = "transformers Mask2Former (COCO instance weights; mmdet 2.x test pipeline and post-processing) + CLIP ViT-L/14"

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
        self.labels = geneval_labels(self.model.config.id2label, self.classnames)
        self._classifiers: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def candidates(self, image: np.ndarray) -> dict[str, list[DetectedObject]]:
        pil = Image.fromarray(image).convert("RGB")
        inputs = self.processor(images=pil, size=MMDET_TEST_SIZE, size_divisor=MMDET_SIZE_DIVISOR, return_tensors="pt")
        pixel_mask = inputs["pixel_mask"][0]
        valid_hw = (int(pixel_mask.any(1).sum()), int(pixel_mask.any(0).sum()))
        out = self.model(pixel_values=inputs["pixel_values"].to(self.device),
                         pixel_mask=inputs["pixel_mask"].to(self.device))
        labels, scores, masks, boxes = instance_postprocess(
            out.class_queries_logits[0], out.masks_queries_logits[0], tuple(inputs["pixel_values"].shape[-2:]),
            valid_hw, (pil.height, pil.width))
        found: dict[str, list[DetectedObject]] = {}
        for k in torch.argsort(scores, descending=True, stable=True).tolist():
            name = self.labels[int(labels[k])]
            box = boxes[k].tolist() + [float(scores[k])]
            found.setdefault(name, []).append(DetectedObject(box=box, score=float(scores[k]),
                                                             mask=masks[k].cpu().numpy()))
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


__all__ = ["COLORS", "COCO_TO_GENEVAL", "DetectorLabelsError", "MissingDetector", "OracleDetector",
           "Mask2FormerDetector", "geneval_labels", "instance_postprocess", "mask2bbox"]
