"""Grade an image against a ToyWorld prompt with the oracle as detector, through GenEval's rules."""
from __future__ import annotations

from collections import defaultdict

from protocols.geneval_rules import DetectedObject, attribute_reader, evaluate, filter_detections
from toyworld.oracle import Detection, detect
from toyworld.world import PromptSpec


def oracle_candidates(detections: list[Detection]) -> dict[str, list[DetectedObject]]:
    """Oracle detections grouped by class (= shape), in the rules' input format."""
    out: dict[str, list[DetectedObject]] = defaultdict(list)
    for d in detections:
        out[d.shape].append(DetectedObject(box=list(d.box), score=d.score,
                                           attributes={"color": d.color, "texture": d.texture}))
    return dict(out)


def grade(image, spec: PromptSpec | dict) -> tuple[bool, str, dict]:
    """(correct, reason, kept detections as {class: [[x1,y1,x2,y2,score], ...]})."""
    meta = spec.to_metadata() if isinstance(spec, PromptSpec) else spec
    kept = filter_detections(oracle_candidates(detect(image)), meta["tag"])
    ok, reason = evaluate(kept, meta, attribute_reader("color"), attribute_reader("texture"))
    details = {k: [list(o.box) + [o.score] for o in v] for k, v in kept.items()}
    return ok, reason, details
