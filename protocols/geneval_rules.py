"""GenEval's correctness rules, detector-agnostic (djghosh13/geneval, evaluation/evaluate_images.py).

Detections come in as `{classname: [DetectedObject, ...]}`; the detector (Mask2Former for real
runs, the ToyWorld oracle for toy runs) and the colour classifier (CLIP for real runs, the
oracle's palette reading for toy runs) are plugged in by the caller. Only the rules live here:
score thresholds (0.3; 0.9 for counting), at most 16 objects per class, NMS disabled by
default (max_overlap 1.0), `relative_position` with position_threshold 0.1, and `evaluate`.
ToyWorld adds two requirement keys that GenEval does not have, `texture` and `same_color`;
they are checked the same way as `color` and are absent from official metadata.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

THRESHOLD = 0.3
COUNTING_THRESHOLD = 0.9
MAX_OBJECTS = 16
NMS_THRESHOLD = 1.0
POSITION_THRESHOLD = 0.1


@dataclass
class DetectedObject:
    box: Sequence[float]  # x1, y1, x2, y2[, score]
    score: float
    mask: np.ndarray | None = None
    attributes: dict = field(default_factory=dict)  # e.g. {"color": "red", "texture": "solid"}


def compute_iou(box_a, box_b) -> float:
    """IoU with GenEval's +1 pixel convention."""
    def area(b):
        return max(b[2] - b[0] + 1, 0) * max(b[3] - b[1] + 1, 0)
    inter = area([max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]), min(box_a[3], box_b[3])])
    union = area(box_a) + area(box_b) - inter
    return inter / union if union else 0


def filter_detections(candidates: dict[str, list[DetectedObject]], tag: str, threshold: float = THRESHOLD,
                      counting_threshold: float = COUNTING_THRESHOLD, max_objects: int = MAX_OBJECTS,
                      nms_threshold: float = NMS_THRESHOLD) -> dict[str, list[DetectedObject]]:
    """Per class: sort by score, keep score > threshold (counting: > 0.9), at most 16, greedy NMS."""
    conf = threshold if tag != "counting" else counting_threshold
    out: dict[str, list[DetectedObject]] = {}
    for cls, objs in candidates.items():
        order = sorted(objs, key=lambda o: -o.score)
        order = [o for o in order if o.score > conf][:max_objects]
        kept = []
        while order:
            best = order.pop(0)
            kept.append(best)
            order = [o for o in order if nms_threshold == 1 or compute_iou(best.box, o.box) < nms_threshold]
        if kept:
            out[cls] = kept
    return out


def relative_position(obj_a: DetectedObject, obj_b: DetectedObject, position_threshold: float = POSITION_THRESHOLD) -> set[str]:
    """Position of A relative to B, factoring in object dimensions (image y grows downward)."""
    boxes = np.array([list(obj_a.box)[:4], list(obj_b.box)[:4]], dtype=np.float64).reshape(2, 2, 2)
    center_a, center_b = boxes.mean(axis=-2)
    dim_a, dim_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - position_threshold * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    rels = set()
    if dx < -0.5:
        rels.add("left of")
    if dx > 0.5:
        rels.add("right of")
    if dy < -0.5:
        rels.add("above")
    if dy > 0.5:
        rels.add("below")
    return rels


ColorFn = Callable[[list[DetectedObject], str], list[str]]


def attribute_reader(key: str) -> ColorFn:
    """Attribute classifier that reads what the detector already attached (ToyWorld oracle)."""
    return lambda objs, classname: [o.attributes.get(key) for o in objs]


def evaluate(objects: dict[str, list[DetectedObject]], metadata: dict, classify_color: ColorFn,
             classify_texture: ColorFn | None = None, position_threshold: float = POSITION_THRESHOLD) -> tuple[bool, str]:
    """GenEval `evaluate`: includes combine with AND, excludes with OR; colour and position are
    checked on the most confident `count` objects of the class only."""
    correct = True
    reason: list[str] = []
    matched_groups: list[list[DetectedObject] | None] = []
    for req in metadata.get("include", []):
        classname = req["class"]
        matched = True
        found = objects.get(classname, [])[: req["count"]]
        if len(found) < req["count"]:
            correct = matched = False
            reason.append(f"expected {classname}>={req['count']}, found {len(found)}")
        else:
            for key, fn in (("color", classify_color), ("texture", classify_texture)):
                if key not in req:
                    continue
                if fn is None:
                    raise ValueError(f"metadata asks for {key!r} but no {key} classifier was given")
                values = fn(found, classname)
                if values.count(req[key]) < req["count"]:
                    correct = matched = False
                    reason.append(f"expected {req[key]} {classname}>={req['count']}, found "
                                  f"{values.count(req[key])} {req[key]}; and "
                                  + ", ".join(f"{values.count(c)} {c}" for c in sorted(set(map(str, values)))))
            if "position" in req and matched:
                expected_rel, target_group = req["position"]
                if matched_groups[target_group] is None:
                    correct = matched = False
                    reason.append(f"no target for {classname} to be {expected_rel}")
                else:
                    for obj in found:
                        for target in matched_groups[target_group]:
                            true_rels = relative_position(obj, target, position_threshold)
                            if expected_rel not in true_rels:
                                correct = matched = False
                                reason.append(f"expected {classname} {expected_rel} target, found "
                                              f"{' and '.join(true_rels)} target")
                                break
                        if not matched:
                            break
        matched_groups.append(found if matched else None)
    if metadata.get("same_color"):
        groups = matched_groups[:2]
        if len(groups) == 2 and all(g is not None for g in groups):
            a = classify_color(groups[0], metadata["include"][0]["class"])
            b = classify_color(groups[1], metadata["include"][1]["class"])
            if not set(a) & set(b):
                correct = False
                reason.append(f"expected the same color, found {a} and {b}")
    for req in metadata.get("exclude", []):
        classname = req["class"]
        if len(objects.get(classname, [])) >= req["count"]:
            correct = False
            reason.append(f"expected {classname}<{req['count']}, found {len(objects[classname])}")
    return correct, "\n".join(reason)
