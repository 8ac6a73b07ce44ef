"""T2I-CompBench's score formulas, detector- and VQA-agnostic (Karine-Huang/T2I-CompBench @1b70949).

- Attribute binding (colour / shape / texture; the attribute part of complex), BLIPvqa_eval/BLIP_vqa.py:
  one question "<noun phrase>?" per noun phrase; the image's score is the PRODUCT of the per-phrase
  yes-probabilities P(yes) / (P(yes) + P(no)) (a missing phrase counts 1); answers are written as
  "%.4f" strings and the category score is the mean of those rounded answers.
- 2D spatial, UniDet_eval/2D_spatial_eval.py: relation = the first of SPATIAL_WORDS found in the
  prompt; obj1/obj2 = the first/last noun; each takes the first (highest-scoring) detection of its
  class; `determine_position` below (boxes in the detector's frame: the image resized so its shorter
  side is 479 px); image score 0.25*s1 + 0.25*s2 + position/2 with both found, 0.25*s with one,
  0 with none, and then 0 whenever below 0.5.
- Non-spatial, CLIPScore_eval/CLIP_similarity.py: raw cosine of the CLIP ViT-B/32 embeddings.
- Complex, 3_in_1_eval/3_in_1.py: prompts of complex_val_spatial -> (spatial + attribute) / 2, of
  complex_val_action -> (action + attribute) / 2, others -> (attribute + spatial + action) / 3.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPATIAL_WORDS = ["on side of", "next to", "near", "on the left of", "on the right of", "on the bottom of",
                 "on the top of", "on top of"]
PERSON_WORDS = {"girl", "boy", "man", "woman"}
DETECTOR_FRAME = 479          # UniDet input: shorter side resized to 479 (max 480)
IOU_THRESHOLD = 0.1
DISTANCE_THRESHOLD = 150.0
SPATIAL_CUTOFF = 0.5


@dataclass(frozen=True)
class Box:
    x_min: float
    y_min: float
    x_max: float
    y_max: float

    def scaled(self, factor: float) -> "Box":
        return Box(self.x_min * factor, self.y_min * factor, self.x_max * factor, self.y_max * factor)


def spatial_relation(prompt: str) -> str | None:
    """The official locality: the first of SPATIAL_WORDS contained in the prompt (None if none)."""
    return next((w for w in SPATIAL_WORDS if w in prompt), None)


def canonical_object(name: str | None) -> str | None:
    """The official person mapping (girl/boy/man/woman -> person)."""
    return "person" if name in PERSON_WORDS else name


def determine_position(locality: str | None, box1: Box, box2: Box, iou_threshold: float = IOU_THRESHOLD,
                       distance_threshold: float = DISTANCE_THRESHOLD) -> float:
    """Soft score that box1 (obj1) stands in `locality` to box2 (obj2); y grows downwards."""
    c1 = ((box1.x_min + box1.x_max) / 2, (box1.y_min + box1.y_max) / 2)
    c2 = ((box2.x_min + box2.x_max) / 2, (box2.y_min + box2.y_max) / 2)
    dx, dy = c2[0] - c1[0], c2[1] - c1[1]
    x_overlap = max(0.0, min(box1.x_max, box2.x_max) - max(box1.x_min, box2.x_min))
    y_overlap = max(0.0, min(box1.y_max, box2.y_max) - max(box1.y_min, box2.y_min))
    inter = x_overlap * y_overlap
    union = ((box1.x_max - box1.x_min) * (box1.y_max - box1.y_min)
             + (box2.x_max - box2.x_min) * (box2.y_max - box2.y_min) - inter)
    iou = inter / union if union > 0 else 0.0  # two zero-area boxes: the official script divides by zero

    def directional(along: float, across: float, sign_ok: bool) -> float:
        if not sign_ok or abs(along) <= abs(across):
            return 0.0
        return 1.0 if iou < iou_threshold else iou_threshold / iou

    if locality in ("next to", "on side of", "near"):
        if abs(dx) < distance_threshold or abs(dy) < distance_threshold:
            return 1.0
        return distance_threshold / max(abs(dx), abs(dy))
    if locality == "on the right of":
        return directional(dx, dy, dx < 0)
    if locality == "on the left of":
        return directional(dx, dy, dx > 0)
    if locality == "on the bottom of":
        return directional(dy, dx, dy < 0)
    if locality == "on the top of":
        return directional(dy, dx, dy > 0)
    return 0.0


def spatial_image_score(locality: str | None, det1: tuple[Box, float] | None,
                        det2: tuple[Box, float] | None) -> float:
    """The official per-image 2D-spatial score from the chosen detections (box, score) of obj1 and
    obj2 (None when not detected)."""
    if det1 is not None and det2 is not None:
        score = 0.25 * det1[1] + 0.25 * det2[1] + determine_position(locality, det1[0], det2[0]) / 2
    elif det1 is not None:
        score = 0.25 * det1[1]
    elif det2 is not None:
        score = 0.25 * det2[1]
    else:
        score = 0.0
    return 0.0 if score < SPATIAL_CUTOFF else score


def first_detection(detections: list[tuple[str, Box, float]], name: str | None) -> tuple[Box, float] | None:
    """The first detection (detector order = descending score) whose class is `name`."""
    for label, box, score in detections:
        if name is not None and label == name:
            return box, score
    return None


def attribute_image_score(probabilities: list[float]) -> float:
    """Product over noun phrases (an image without noun phrases scores 1, as the official loop), in
    float32 and in order as BLIP_vqa.py's reward tensor multiplies."""
    score = np.float32(1.0)
    for p in probabilities:
        score = np.float32(score * np.float32(p))
    return float(score)


def blip_answer(score: float) -> str:
    """The official vqa_result.json answer format for BLIP-VQA scores."""
    return "{:.4f}".format(score)


def complex_kind(prompt: str, spatial_prompts: set[str], action_prompts: set[str]) -> str:
    """'spatial', 'action' or 'both' as 3_in_1.py decides (prompt normalised like the official code)."""
    key = normalise_complex(prompt)
    if key in spatial_prompts:
        return "spatial"
    if key in action_prompts:
        return "action"
    return "both"


def normalise_complex(prompt: str) -> str:
    return prompt.strip("\n").split(".")[0].lower()


def three_in_one(kind: str, attribute: float, spatial: float | None, action: float | None) -> float:
    if kind == "spatial":
        return (spatial + attribute) * 0.5
    if kind == "action":
        return (action + attribute) * 0.5
    return (attribute + spatial + action) / 3


def category_score(answers: list[float | str]) -> float:
    """Mean of the per-image answers (the official avg over vqa_result.json)."""
    if not answers:
        raise ValueError("no answers to average")
    return sum(float(a) for a in answers) / len(answers)


__all__ = ["Box", "SPATIAL_WORDS", "DETECTOR_FRAME", "spatial_relation", "canonical_object", "determine_position",
           "spatial_image_score", "first_detection", "attribute_image_score", "blip_answer",
           "complex_kind", "normalise_complex", "three_in_one", "category_score"]
