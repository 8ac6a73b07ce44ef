"""The models behind T2I-CompBench's scores, behind one interface, so the same scoring code
(benchmarks/t2i_compbench/scoring.py) runs with the official models or with the ToyWorld oracle.

A judge answers four questions about an image of a prompt:
  attribute_probabilities  yes-probability per noun phrase (BLIP-VQA's "<noun phrase>?")
  spatial_detections       (obj1, obj2) chosen detections (box in the 479-px detector frame, score)
  action_score             non-spatial score (CLIP cosine officially)
  (the complex category combines the three with the 3-in-1 rule)

`OracleJudge` (toy edition): noun phrases are the grammar's objects; the oracle's detections answer
"is there a <colour> <texture> <shape>?" with probability 1 or 0; its boxes (scaled to the 479-px
frame) and scores feed the official spatial rule; the non-spatial relation "X the same color as
Y" is scored 1 when both objects are detected with the same colour, else 0 (the toy CLIP cannot
judge colour equality reliably, see results/encoders/encoders.json; this replaces the CLIP cosine).

`OfficialJudge` (real runs): BLIP-VQA at the official 480 px (`models.compbench_blip_vqa`: a
BlipForQuestionAnswering folder converted from Salesforce's model_base_vqa_capfilt_large.pth by
benchmarks/t2i_compbench/blip_vqa.py, which also holds the scoring; the hub's 384-px conversion is
refused), an
object detector from `models.compbench_detector`, CLIP ViT-B/32 from
`models.clip_vit_b32`, and spaCy `en_core_web_sm` (`models.compbench_spacy`, a local package or
folder) for noun chunks and nouns exactly as the official scripts parse prompts.

The spatial detector. The official UniDet RS200 (722 classes) has no transformers port. An
open-vocabulary detector (OWLv2 / OWL-ViT folder, recommended: google/owlv2-base-patch16-ensemble) is
queried with the prompt's two nouns ("a photo of a <noun>"), so every prompt can score; a closed-set
detector (any AutoModelForObjectDetection, e.g. COCO's 80 classes) only finds nouns in its label set
(about 90 of the 300 spatial_val prompts have both). The detector's kind, folder and score threshold
(`benchmarks.compbench.detector_threshold`; null: UniDet's 0.5 for closed-set, OWL-ViT's 0.1 for
open-vocabulary) are in the judge's name, so they go with every number. Detector scores enter the
official per-image score (0.25 s1 + 0.25 s2 + position / 2), so another detector's calibration moves
the numbers: compare spatial scores only within one detector. To run the official UniDet script on
our images (official layout, `images/<category>/samples/<prompt>_<n>.png`) in its own environment
(the T2I-CompBench repository's UniDet_eval setup): `cd T2I-CompBench/UniDet_eval && python
2D_spatial_eval.py --outpath <run>/images/spatial` (and `--complex True --outpath
<run>/images/complex`); it writes `<outpath>/labels/annotation_obj_detection_2d/vqa_result.json`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.t2i_compbench.blip_vqa import SOURCE as BLIP_SOURCE
from benchmarks.t2i_compbench.blip_vqa import BlipVqa
from benchmarks.t2i_compbench.scoring import DETECTOR_FRAME, Box, blip_answer, canonical_object, first_detection
from configs.cli import UserError
from measures.clip_score import projected
from toyworld.oracle import detect
from toyworld.world import PromptSpec, Requirement

NOUN_PHRASE_SKIP = {"top", "the side", "the left", "the right"}   # BLIP_vqa.py
NOUN_PHRASES = 8  # BLIP_vqa.py --np_num: the noun phrases asked per image
OPEN_VOCABULARY = ("owlv2", "owlvit")     # detector model types queried with the prompt's nouns
CLOSED_SET_THRESHOLD, OPEN_VOCABULARY_THRESHOLD = 0.5, 0.1
COMPLEX_PREPOSITIONS = ["on top of", "on bottom of", "on the left", "on the right", "next to", "on side of", "near"]


class MissingModel(UserError, FileNotFoundError):
    """A model the official edition needs is not on disk."""


# ---- toy edition ---------------------------------------------------------------------------------
def _matches(det, req: Requirement) -> bool:
    return (det.shape == req.shape and (req.color is None or det.color == req.color)
            and (req.texture is None or det.texture == req.texture))


class OracleJudge:
    """ToyWorld oracle answers (needs the prompt's grammar spec)."""

    name = "ToyWorld oracle"

    def _spec(self, spec: PromptSpec | None) -> PromptSpec:
        if spec is None:
            raise ValueError("the oracle judge needs the ToyWorld prompt spec (toy edition prompts only)")
        return spec

    def attribute_probabilities(self, image: np.ndarray, prompt: str, spec: PromptSpec | None) -> list[float]:
        dets = detect(image)
        return [1.0 if any(_matches(d, r) for d in dets) else 0.0 for r in self._spec(spec).include]

    def spatial_detections(self, image: np.ndarray, prompt: str, spec: PromptSpec | None, complex_prompt: bool):
        spec = self._spec(spec)
        placed = next((r for r in spec.include if r.position), None)
        if placed is None:
            return None, None
        other = spec.include[placed.position[1]]
        scale = DETECTOR_FRAME / min(image.shape[0], image.shape[1])
        dets = sorted(detect(image), key=lambda d: -d.score)
        listed = [(d.shape, Box(*map(float, d.box)).scaled(scale), float(d.score)) for d in dets]
        return first_detection(listed, placed.shape), first_detection(listed, other.shape)

    def action_score(self, image: np.ndarray, prompt: str, spec: PromptSpec | None, complex_prompt: bool) -> float:
        spec = self._spec(spec)
        if not spec.same_color:
            raise ValueError(f"toy non-spatial prompts are 'X the same color as Y'; got {prompt!r}")
        a, b = spec.include[0].shape, spec.include[1].shape
        dets = detect(image)
        colors_a, colors_b = {d.color for d in dets if d.shape == a}, {d.color for d in dets if d.shape == b}
        return 1.0 if colors_a & colors_b else 0.0


# ---- official edition ----------------------------------------------------------------------------
def require_model(path: str | Path | None, what: str, source: str) -> Path:
    if not path or not Path(path).exists():
        raise MissingModel(f"T2I-CompBench needs {what} at a local path (params.yaml models): {str(path)!r} is "
                           f"missing. Get it from {source} and set the path.")
    return Path(path)


def load_spacy(path: str | Path | None):
    """spaCy's en_core_web_sm from a local path (a pip-installed package name also works)."""
    try:
        import spacy
    except ImportError:
        raise MissingModel("T2I-CompBench parses prompts with spaCy (`pip install spacy`, plus the "
                           "en_core_web_sm model package) exactly as the official scripts do") from None
    target = str(path or "en_core_web_sm")
    try:
        return spacy.load(target)
    except OSError:
        raise MissingModel(f"spaCy model {target!r} not found; install en_core_web_sm from a local wheel or set "
                           f"models.compbench_spacy to its folder") from None


def model_type(folder: str | Path) -> str:
    """The `model_type` of a transformers model folder's config.json ("" when unreadable)."""
    try:
        import json
        return str(json.loads((Path(folder) / "config.json").read_text()).get("model_type") or "")
    except (OSError, ValueError):
        return ""


@torch.no_grad()
def open_vocabulary_detections(model, processor, pil: Image.Image, names: list[str], threshold: float,
                               device: str = "cpu") -> list[tuple[str, Box, float]]:
    """OWLv2 / OWL-ViT queried with "a photo of a <name>" for each name: (name, box in `pil`'s pixel
    frame, score), descending score. OWLv2 pads the image to a square at the bottom / right, so its
    boxes are scaled to the padded square's side."""
    if not names:
        return []
    inputs = processor(text=[[f"a photo of a {n}" for n in names]], images=pil, padding=True, truncation=True,
                       return_tensors="pt").to(device)
    out = model(**inputs)
    side = max(pil.width, pil.height)
    target = (side, side) if getattr(model.config, "model_type", "") == "owlv2" else (pil.height, pil.width)
    res = processor.image_processor.post_process_object_detection(out, threshold=threshold,
                                                                  target_sizes=torch.tensor([target]))[0]
    order = torch.argsort(res["scores"], descending=True, stable=True)  # ties: patch order
    return [(names[int(res["labels"][i])], Box(*map(float, res["boxes"][i].tolist())), float(res["scores"][i]))
            for i in order]


class OfficialJudge:
    """BLIP-VQA + detector + CLIP ViT-B/32 + spaCy, each from a local path."""

    name = "official models"  # replaced per instance by the models it runs (the detector named)

    def __init__(self, models: dict, device: str = "cpu", threshold: float | None = None):
        from transformers import (AutoImageProcessor, AutoModelForObjectDetection, AutoProcessor, CLIPModel,
                                  CLIPProcessor)

        blip = require_model(models.get("compbench_blip_vqa"), "BLIP-VQA at 480 px (BlipForQuestionAnswering "
                             "converted from the released checkpoint: python -m benchmarks.t2i_compbench.blip_vqa)",
                             BLIP_SOURCE)
        det = require_model(models.get("compbench_detector"), "an object detector (OWLv2 / OWL-ViT, or any "
                            "AutoModelForObjectDetection)", "https://huggingface.co/google/owlv2-base-patch16-ensemble "
                            "(official: UniDet RS200, no transformers port)")
        clip = require_model(models.get("clip_vit_b32"), "CLIP ViT-B/32",
                             "https://huggingface.co/openai/clip-vit-base-patch32")
        self.nlp = load_spacy(models.get("compbench_spacy"))
        self.device = device
        self.blip = BlipVqa(blip, device)  # refuses a folder not made for the official 480 px
        self.detector_kind = model_type(det)
        self.open_vocabulary = self.detector_kind in OPEN_VOCABULARY
        if self.open_vocabulary:
            from transformers import AutoModelForZeroShotObjectDetection
            self.detector = AutoModelForZeroShotObjectDetection.from_pretrained(det).to(device).eval()
            self.detector_processor = AutoProcessor.from_pretrained(det)
        else:
            self.detector = AutoModelForObjectDetection.from_pretrained(det).to(device).eval()
            self.detector_processor = AutoImageProcessor.from_pretrained(det)
        self.threshold = float(threshold if threshold is not None else
                               OPEN_VOCABULARY_THRESHOLD if self.open_vocabulary else CLOSED_SET_THRESHOLD)
        self.name = (f"BLIP-VQA + {'open-vocabulary' if self.open_vocabulary else 'closed-set'} detector "
                     f"{self.detector_kind} ({Path(det).name}, threshold {self.threshold:g}) + CLIP ViT-B/32")
        self.clip = CLIPModel.from_pretrained(clip).to(device).eval()
        self.clip_processor = CLIPProcessor.from_pretrained(clip)

    # BLIP-VQA ------------------------------------------------------------------------------------
    def noun_phrases(self, prompt: str) -> list[str]:
        return [c.text for c in self.nlp(prompt).noun_chunks if c.text not in NOUN_PHRASE_SKIP]

    def attribute_probabilities(self, image: np.ndarray, prompt: str, spec=None) -> list[float]:
        """BLIP-VQA's yes-probability of "<noun phrase>?" for the first NOUN_PHRASES noun phrases
        (benchmarks/t2i_compbench/blip_vqa.py), each rounded as the official per-phrase vqa_result.json
        answers ("%.4f") that BLIP_vqa.py multiplies."""
        questions = [f"{p}?" for p in self.noun_phrases(prompt)[:NOUN_PHRASES]]
        return [float(blip_answer(p)) for p in self.blip.yes_probabilities(image, questions)]

    # detector ------------------------------------------------------------------------------------
    def spatial_objects(self, prompt: str, complex_prompt: bool) -> tuple[str | None, str | None]:
        doc = self.nlp(prompt)
        if not complex_prompt:
            nouns = [t.text for t in doc if t.pos_ == "NOUN"]
            return (nouns[0], nouns[-1]) if nouns else (None, None)
        objects = []
        for i in range(len(doc)):
            k = next((n for n in (3, 2, 1) if doc[i:i + n].text in COMPLEX_PREPOSITIONS), None)
            if k is None:
                continue
            for j in range(i - 1, -1, -1):
                if doc[j].pos_ in ("NOUN", "PROPN"):
                    objects.append(doc[j].text)
                    break
            found = False
            for j in range(i + k, len(doc)):
                if doc[j].pos_ == "NOUN":
                    objects.append(doc[j].text)
                    found = True
                    break
            if not found:
                for j in range(i + k, len(doc)):
                    if j + 1 < len(doc) and doc[j].pos_ == "PROPN" and doc[j + 1].pos_ != "PROPN":
                        objects.append(doc[j].text)
                        break
        return (objects[0], objects[1]) if len(objects) == 2 else (None, None)

    @torch.no_grad()
    def detections(self, image: np.ndarray, names: list[str] | None = None) -> list[tuple[str, Box, float]]:
        """(class name, box in the 479-px frame, score), descending score, above the threshold. An
        open-vocabulary detector is asked for `names` ("a photo of a <name>"); a closed-set one reports
        its own classes."""
        pil = Image.fromarray(image).convert("RGB")
        scale = DETECTOR_FRAME / min(pil.size)
        size = (round(pil.width * scale), round(pil.height * scale))
        pil = pil.resize(size, Image.BILINEAR)
        if self.open_vocabulary:
            return open_vocabulary_detections(self.detector, self.detector_processor, pil, names or [],
                                              self.threshold, self.device)
        inputs = self.detector_processor(images=pil, return_tensors="pt").to(self.device)
        out = self.detector(**inputs)
        res = self.detector_processor.post_process_object_detection(
            out, threshold=self.threshold, target_sizes=torch.tensor([[pil.height, pil.width]]))[0]
        labels = self.detector.config.id2label
        order = res["scores"].argsort(descending=True)
        return [(labels[int(res["labels"][i])], Box(*map(float, res["boxes"][i].tolist())), float(res["scores"][i]))
                for i in order]

    def spatial_detections(self, image: np.ndarray, prompt: str, spec=None, complex_prompt: bool = False):
        obj1, obj2 = (canonical_object(o) for o in self.spatial_objects(prompt, complex_prompt))
        dets = self.detections(image, [o for o in dict.fromkeys((obj1, obj2)) if o])
        return first_detection(dets, obj1), first_detection(dets, obj2)

    # CLIP ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def action_score(self, image: np.ndarray, prompt: str, spec=None, complex_prompt: bool = False) -> float:
        if complex_prompt:  # the official --complex run drops adjectives
            prompt = " ".join(t.text for t in self.nlp(prompt) if t.pos_ != "ADJ")
        inputs = self.clip_processor(text=[prompt], images=Image.fromarray(image).convert("RGB"),
                                     return_tensors="pt", padding=True).to(self.device)
        img = projected(self.clip.get_image_features(pixel_values=inputs.pixel_values))
        txt = projected(self.clip.get_text_features(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask))
        img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
        return float((img * txt).sum())


__all__ = ["MissingModel", "OracleJudge", "OfficialJudge", "require_model", "load_spacy", "model_type",
           "open_vocabulary_detections"]
