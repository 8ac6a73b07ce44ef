"""Reward scorers against golden fixtures made by the OFFICIAL code on small random weights
(tests/fixtures/make_reward_golden.py, run in isolated virtualenvs): our scorers load the same
checkpoint files and must reproduce the official scores to 1e-4. Plus missing-weights errors."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from measures.weights import MissingWeights

GOLDEN = Path(__file__).parent / "fixtures" / "golden"


def golden(tool: str) -> tuple[dict, list[Image.Image]]:
    data = json.loads((GOLDEN / tool / "golden.json").read_text())
    return data, [Image.open(GOLDEN / tool / name) for name in data["images"]]


def test_hpsv2_matches_the_official_package():
    import open_clip

    from evaluate.hpsv2 import load_scorer

    torch.set_num_threads(1)
    open_clip.add_model_config(GOLDEN / "hpsv2" / "HPS-tiny.json")
    data, images = golden("hpsv2")
    scorer = load_scorer({"hpsv2": str(GOLDEN / "hpsv2" / "hps_tiny.pt"), "hpsv2_arch": "HPS-tiny"})
    np.testing.assert_allclose(scorer.score(images, data["prompts"]), data["scores"], atol=1e-4)


@pytest.mark.skipif(not (GOLDEN / "aesv2" / "golden.json").is_file(), reason="AESv2 fixture not built")
def test_aesthetic_matches_the_official_inference():
    from evaluate.aesthetic import load_scorer

    data, images = golden("aesv2")
    scorer = load_scorer({"aesv2": str(GOLDEN / "aesv2" / "aesv2_tiny_head.pth"),
                          "aesv2_clip": str(GOLDEN / "aesv2" / "clip_tiny.pt")})
    np.testing.assert_allclose(scorer.score(images), data["scores"], atol=1e-4)


def test_pickscore_matches_the_official_snippet(tmp_path):
    """PickScore's official inference is the README snippet on transformers; run it verbatim on a
    tiny random CLIPModel and compare."""
    from transformers import AutoModel, AutoProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from evaluate.pickscore import load_scorer
    from toyworld.encoders import build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer()
    cfg = CLIPConfig(text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64,
                                  "num_hidden_layers": 1, "num_attention_heads": 2},
                     vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "image_size": 32, "patch_size": 8}, projection_dim=16)
    CLIPModel(cfg).save_pretrained(tmp_path)
    CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tok).save_pretrained(tmp_path)
    prompts = ["a red circle", "two blue squares"]
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in prompts]
    processor, model = AutoProcessor.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path).eval()
    expected = []
    for image, prompt in zip(images, prompts):  # the README's calc_probs, without the softmax
        image_inputs = processor(images=[image], padding=True, truncation=True, max_length=77, return_tensors="pt")
        text_inputs = processor(text=[prompt], padding=True, truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            image_embs = model.get_image_features(**image_inputs)
            image_embs = image_embs if torch.is_tensor(image_embs) else image_embs.pooler_output
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = model.get_text_features(**text_inputs)
            text_embs = text_embs if torch.is_tensor(text_embs) else text_embs.pooler_output
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            expected.append(float((model.logit_scale.exp() * (text_embs @ image_embs.T))[0, 0]))
    ours = load_scorer({"pickscore": str(tmp_path)}).score(images, prompts)
    np.testing.assert_allclose(ours, expected, atol=1e-4)


@pytest.mark.parametrize("module,key", [("evaluate.hpsv2", "hpsv2"), ("evaluate.pickscore", "pickscore"),
                                        ("evaluate.aesthetic", "aesv2"), ("evaluate.imagereward", "imagereward")])
def test_missing_weights_name_the_file(module, key, tmp_path):
    import importlib

    with pytest.raises(MissingWeights, match=f"models.{key}"):
        importlib.import_module(module).load_scorer({key: str(tmp_path / "absent")})


def test_wrong_checkpoint_format(tmp_path):
    import open_clip

    from evaluate.hpsv2 import load_scorer

    open_clip.add_model_config(GOLDEN / "hpsv2" / "HPS-tiny.json")
    torch.save({"state_dict": {"nonsense": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not match"):
        load_scorer({"hpsv2": str(tmp_path / "bad.pt"), "hpsv2_arch": "HPS-tiny"})


def test_imagereward_matches_the_official_package():
    from evaluate.imagereward import load_scorer

    data, images = golden("imagereward")
    scorer = load_scorer({"imagereward": str(GOLDEN / "imagereward" / "imagereward_tiny.pt"),
                          "imagereward_tokenizer": str(GOLDEN / "imagereward" / "tokenizer")})
    scores = scorer.score(images, data["prompts"])
    assert np.ptp(data["scores"]) > 1e-2  # the fixture's rewards differ between images
    np.testing.assert_allclose(scores, data["scores"], atol=1e-4)


class _NotATensor:
    """Stands for any pickled object that would run code on load."""


def test_weights_files_are_loaded_without_running_pickled_code(tmp_path):
    """Reward checkpoints named in params are read with weights_only=True; a file holding other
    pickled objects is refused with how to convert it (nothing is executed)."""
    from measures.weights import UnsafeWeightsFile, load_tensors

    good = tmp_path / "good.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3, "name": "x"}, good)
    assert torch.equal(load_tensors(good, "HPSv2 checkpoint")["state_dict"]["w"], torch.ones(2))
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "extra": _NotATensor()}, bad)
    with pytest.raises(UnsafeWeightsFile, match=r"HPSv2 checkpoint .*bad\.pt.*convert it once"):
        load_tensors(bad, "HPSv2 checkpoint")
