"""T2I-CompBench's official edition end to end through the CLI on tiny models with the real
geometries: BLIP-VQA converted at 480 px from the released-format checkpoint (the golden fixture's
tiny weights), an open-vocabulary OWLv2 asked for the prompt's nouns, the toy CLIP for non-spatial,
and a spaCy pipeline loaded from a local folder. en_core_web_sm cannot be downloaded here, so the
pipeline is a small rule-based English parser (below) that gives spaCy's Doc the parts of speech
and dependency arcs the official scripts read (`noun_chunks`, `pos_`); the judge parses through
spaCy's own English noun-chunk rules on it. Every category scores one official prompt (a declared
subset); each answer is checked against the scorer run directly on the saved image."""
import json

import numpy as np
import pytest
import spacy
import torch
from PIL import Image
from spacy.language import Language
from spacy.tokens import Doc

from backbones.toy import ToyBackbone
from benchmarks.t2i_compbench.__main__ import main
from benchmarks.t2i_compbench.blip_vqa import BlipVqa
from benchmarks.t2i_compbench.blip_vqa import main as convert_blip
from benchmarks.t2i_compbench.prompts import CATEGORIES, official_prompts
from benchmarks.t2i_compbench.judges import OfficialJudge
from benchmarks.t2i_compbench.scoring import attribute_image_score, blip_answer, spatial_image_score, spatial_relation
from measures.clip_score import projected
from tests.test_compbench_blip import GOLDEN
from tests.test_compbench_open_vocabulary import tiny_owlv2

DETERMINERS = {"a", "an", "the", "its", "his", "her", "their"}
ADPOSITIONS = {"on", "of", "to", "at", "with", "in", "near", "under", "above", "below", "beside", "behind",
               "next", "top", "side", "left", "right", "front", "bottom"}
AUXILIARIES = {"is", "was", "are", "were", "be"}
CLOSED_CLASS = {"DET", "ADP", "AUX", "VERB", "CCONJ", "PUNCT"}


def _pos(word: str) -> str:
    w = word.lower()
    if w in DETERMINERS:
        return "DET"
    if w in ADPOSITIONS:
        return "ADP"
    if w in AUXILIARIES:
        return "AUX"
    if w == "and":
        return "CCONJ"
    if not w.isalpha():
        return "PUNCT"
    return "VERB" if w.endswith("ing") else "OPEN"


@Language.factory("toy_english_parse")
def toy_english_parse(nlp, name):
    """Parts of speech and a dependency tree by rule: in a run of open-class words the last is the
    NOUN and the others its ADJ modifiers; determiners attach to the next noun; nouns attach to the
    first verb or auxiliary (or, without one, to the first noun, the ROOT) as subject or object."""
    def parse(doc: Doc) -> Doc:
        words = [t.text for t in doc]
        pos = [_pos(w) for w in words]
        for i, p in enumerate(pos):
            if p == "OPEN":
                pos[i] = "NOUN" if i + 1 == len(pos) or pos[i + 1] in CLOSED_CLASS else "ADJ"
        nouns = [i for i, p in enumerate(pos) if p == "NOUN"]
        verbs = [i for i, p in enumerate(pos) if p in ("VERB", "AUX")]
        root = verbs[0] if verbs else (nouns[0] if nouns else 0)
        heads, deps = list(range(len(words))), ["dep"] * len(words)
        deps[root] = "ROOT"
        for i, p in enumerate(pos):
            if i == root:
                continue
            if p in ("DET", "ADJ"):
                noun = next((j for j in nouns if j > i), root)
                heads[i], deps[i] = noun, "det" if p == "DET" else "amod"
            elif p == "NOUN":
                heads[i], deps[i] = root, "nsubj" if i < root else "dobj"
            else:
                heads[i], deps[i] = root, {"ADP": "prep", "CCONJ": "cc", "PUNCT": "punct", "AUX": "aux"}.get(p, "dep")
        return Doc(doc.vocab, words=words, spaces=[bool(t.whitespace_) for t in doc], pos=pos, heads=heads, deps=deps)
    return parse


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("compbench_official_models")
    convert_blip(["--checkpoint", str(GOLDEN / "blip_vqa_tiny.pth"), "--tokenizer", str(GOLDEN / "tokenizer"),
                  "--out", str(root / "blip480"), "--vision-heads", "2", "--text-heads", "2"])
    nlp = spacy.blank("en")
    nlp.add_pipe("toy_english_parse")
    nlp.to_disk(root / "spacy_en")
    ToyBackbone.new(layers=1, heads=2, head_dim=8, text_width=16, text_layers=1).save(root / "teacher")
    return {"compbench_blip_vqa": str(root / "blip480"), "compbench_detector": str(tiny_owlv2(root / "owlv2")),
            "clip_vit_b32": "models/toy/clip", "compbench_spacy": str(root / "spacy_en"), "teacher": root / "teacher"}


def test_the_parser_gives_spacy_the_official_noun_phrases_and_nouns(models):
    nlp = spacy.load(models["compbench_spacy"])  # from the local folder, as the judge loads it
    doc = nlp("The red hat was on top of the brown coat rack.")
    assert [c.text for c in doc.noun_chunks] == ["The red hat", "the brown coat rack"]
    assert [t.text for t in doc if t.pos_ == "NOUN"] == ["hat", "rack"]
    assert [c.text for c in nlp("a green bench and a blue bowl").noun_chunks] == ["a green bench", "a blue bowl"]


def test_official_edition_end_to_end_on_tiny_models(tmp_path, models):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({
        "models": {k: v for k, v in models.items() if k != "teacher"},
        "benchmarks": {"compbench": {"edition": "official", "teacher_steps": 1, "batch_size": 6,
                                     "detector_threshold": 0.0,  # a tiny random OWLv2: keep every box
                                     "subset": {"prompts_per_category": 1, "images_per_prompt": 1}}}}))
    out = tmp_path / "cb"
    summary = main(["--params", str(params), "--family", "toy", "--teacher", str(models["teacher"]),
                    "--out", str(out)])
    assert {k for k in summary if k.startswith("compbench_")} == {f"compbench_{c}" for c in CATEGORIES}
    assert all(0.0 <= summary[f"compbench_{c}"] <= 1.0 for c in CATEGORIES if c != "non_spatial")
    assert -1.0 <= summary["compbench_non_spatial"] <= 1.0  # a CLIP cosine
    assert summary["edition"] == "official" and summary["subset"] == {"prompts_per_category": 1,
                                                                       "images_per_prompt": 1}
    assert "open-vocabulary detector owlv2" in summary["judge"] and "BLIP-VQA" in summary["judge"]
    provenance = json.loads((out / "provenance.json").read_text())
    assert "owlv2" in json.dumps(provenance)

    answers = {c: json.loads((out / "scores" / c / "vqa_result.json").read_text()) for c in CATEGORIES}
    assert all(len(rows) == 1 and rows[0]["question_id"] == 0 for rows in answers.values())
    prompt = {c: official_prompts(c, limit=1)[0].prompt for c in CATEGORIES}
    image = {c: np.asarray(Image.open(out / "images" / c / "samples" / f"{prompt[c]}_000000.png").convert("RGB"))
             for c in CATEGORIES}
    assert image["color"].shape == (32, 32, 3)  # the toy teacher's size; the judges resize as the official code

    # colour: BLIP-VQA asked "<noun phrase>?" for each of spaCy's noun chunks, answers "%.4f", product
    blip = BlipVqa(models["compbench_blip_vqa"])
    probs = blip.yes_probabilities(image["color"], ["a green bench?", "a blue bowl?"])
    expected = attribute_image_score([float(blip_answer(p)) for p in probs])
    assert answers["color"][0]["answer"] == blip_answer(expected)

    # non-spatial: CLIP's cosine between the image and the whole prompt
    from transformers import CLIPModel, CLIPProcessor

    clip, processor = CLIPModel.from_pretrained(models["clip_vit_b32"]).eval(), CLIPProcessor.from_pretrained(
        models["clip_vit_b32"])
    inputs = processor(text=[prompt["non_spatial"]], images=Image.fromarray(image["non_spatial"]),
                       return_tensors="pt", padding=True)
    with torch.no_grad():
        a = projected(clip.get_image_features(pixel_values=inputs.pixel_values))
        b = projected(clip.get_text_features(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask))
    cosine = float((a / a.norm(dim=-1, keepdim=True) * b / b.norm(dim=-1, keepdim=True)).sum())
    assert answers["non_spatial"][0]["answer"] == pytest.approx(cosine, abs=1e-5)

    # spatial: OWLv2 asked for the prompt's two nouns, the official rule on the first detection of each
    judge = OfficialJudge({k: v for k, v in models.items() if k != "teacher"}, threshold=0.0)
    assert judge.spatial_objects(prompt["spatial"], False) == ("giraffe", "lamp")
    det1, det2 = judge.spatial_detections(image["spatial"], prompt["spatial"])
    assert det1 is not None and det2 is not None
    assert answers["spatial"][0]["answer"] == spatial_image_score(spatial_relation(prompt["spatial"]), det1, det2)


def test_the_official_judge_reads_prompts_as_the_official_scripts(models):
    judge = OfficialJudge({k: v for k, v in models.items() if k != "teacher"})
    assert judge.noun_phrases("a green bench and a blue bowl") == ["a green bench", "a blue bowl"]
    # complex prompts: the objects around the relation phrase; the action score drops adjectives
    assert judge.spatial_objects("The red hat was on top of the brown coat rack.", True) == ("hat", "rack")
    image = np.asarray(Image.open(GOLDEN / "image_0.png").convert("RGB"))
    with_adjectives = judge.action_score(image, "The black phone was resting on the brown charger.", complex_prompt=True)
    assert with_adjectives == judge.action_score(image, "The phone was resting on the charger.")
    assert with_adjectives != judge.action_score(image, "The black phone was resting on the brown charger.")
