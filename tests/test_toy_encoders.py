"""Toy encoders (toyworld.train_encoders and the modules it drives): a tiny CLI run whose folders reload through the real
transformers classes, exact preprocessing, determinism, and the caption machinery."""
import json

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor, AutoTokenizer, CLIPImageProcessor, CLIPModel, Dinov2Model
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from protocols.geneval_rules import DetectedObject, attribute_reader, evaluate
from toyworld import train_encoders as te
from toyworld.captions import SWAP_TASKS, caption_truth, cell_labels, held_out_prompts, random_scene, swapped
from toyworld.clip_training import train_clip, training_captions
from toyworld.dinov2_training import train_dinov2
from toyworld.encoder_eval import _features
from toyworld.scene_pool import normalize, render_pool
from toyworld.encoders import MAX_TOKENS, build_tokenizer, tokenize
from toyworld.grammar import prompt_set, sample_scene
from toyworld.render import render
from toyworld.world import PromptSpec, Requirement

# real model sizes, tiny batches; --steps-scale 0.01 turns 300 steps into 3 and 6400 images into 64
PARAMS = ("encoders:\n  threads: 1\n  images: 6400\n  clip_steps: 300\n  clip_batch_size: 16\n"
          "  dinov2_steps: 300\n  dinov2_batch_size: 16\n  eval_batches: 1\n  eval_swaps: 300\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    (root / "params.yaml").write_text(PARAMS)
    report = te.main(["--params", str(root / "params.yaml"), "--out", str(root / "models"),
                      "--results", str(root / "results"), "--steps-scale", "0.01"])
    return root, report


def test_cli_writes_report_and_atomic_folders(run):
    root, report = run
    saved = json.loads((root / "results" / "encoders.json").read_text())
    assert saved["clip"] == report["clip"] and saved["train"]["clip_steps"] == 3 and saved["train"]["images"] == 64
    assert {"retrieval_i2t_top1", "retrieval_t2i_top1", "prompt_retrieval_i2t_top1", "discrimination"} <= set(saved["clip"])
    assert set(saved["clip"]["discrimination"]) == set(SWAP_TASKS) | {"mean"}
    assert {"cell_shape_accuracy", "cell_color_accuracy", "cell_texture_accuracy", "cell_accuracy"} <= set(saved["dinov2"])
    assert all(0.0 <= v <= 1.0 for v in saved["clip"]["discrimination"].values())
    assert sorted(p.name for p in (root / "models").iterdir()) == ["clip", "dinov2"]  # no *.tmp left behind
    assert not (root / "results" / "encoders.json.tmp").exists()


def test_clip_folder_reloads_with_tokenizer_and_processor(run):
    folder = run[0] / "models" / "clip"
    model = CLIPModel.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    prompts = ["a photo of a red striped circle left of a blue square", "two triangles"]
    ids = tokenize(tok, prompts)
    assert torch.equal(ids["input_ids"], tokenize(build_tokenizer(), prompts)["input_ids"])
    assert ids["input_ids"].shape == (2, MAX_TOKENS) and (ids["input_ids"] != tok.unk_token_id).all()
    assert tok.batch_decode(ids["input_ids"], skip_special_tokens=True) == prompts

    images = np.stack([render(random_scene(np.random.default_rng(i))) for i in range(3)])
    pixels = CLIPImageProcessor.from_pretrained(folder)(images=list(images), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixels, normalize(torch.from_numpy(images), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD))
    dim = model.config.projection_dim
    with torch.no_grad():
        text = _features(model.get_text_features(**ids))
        image = _features(model.get_image_features(pixel_values=pixels))
    assert text.shape == (2, dim) and image.shape == (3, dim)


def test_dinov2_folder_reloads_with_processor_and_hidden_states(run):
    folder = run[0] / "models" / "dinov2"
    model = Dinov2Model.from_pretrained(folder).eval()
    images = np.stack([render(random_scene(np.random.default_rng(i))) for i in range(2)])
    pixels = AutoImageProcessor.from_pretrained(folder)(images=list(images), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixels, normalize(torch.from_numpy(images), IMAGENET_DEFAULT_MEAN,
                                                    IMAGENET_DEFAULT_STD))
    with torch.no_grad():
        hidden = model(pixel_values=pixels, output_hidden_states=True).hidden_states
    cfg = model.config
    assert len(hidden) == cfg.num_hidden_layers + 1
    assert all(h.shape == (2, 1 + (cfg.image_size // cfg.patch_size) ** 2, cfg.hidden_size) for h in hidden)
    assert cfg.image_size == 32 and cfg.patch_size == 4


def test_training_is_deterministic_and_pool_independent_of_workers():
    p = {**te.DEFAULTS, "threads": 1, "clip_steps": 2, "clip_batch_size": 8, "dinov2_steps": 2, "dinov2_batch_size": 8,
         "clip_width": 32, "clip_layers": 1, "clip_heads": 2, "clip_projection_dim": 16, "dinov2_width": 32,
         "dinov2_layers": 1, "dinov2_heads": 2}
    pool = render_pool(300, 0, 0, 0.5, workers=1)
    again = render_pool(300, 0, 0, 0.5, workers=2)  # 2 chunks in 2 processes
    assert torch.equal(pool.images, again.images) and pool.scenes == again.scenes
    tok = build_tokenizer()
    for a, b in ((train_clip(p, pool, tok), train_clip(p, again, tok)),
                 (train_dinov2(p, pool)[0], train_dinov2(p, again)[0])):
        for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), k


def _geneval_truth(scene, meta) -> bool:
    """GenEval's rules on ground-truth detections."""
    objects = {}
    for o in scene.objects:
        objects.setdefault(o.shape, []).append(DetectedObject(box=list(o.box()), score=1.0,
                                                              attributes={"color": o.color, "texture": o.texture}))
    return evaluate(objects, meta, attribute_reader("color"), attribute_reader("texture"))[0]


def test_training_captions_are_true_negatives_false_and_never_held_out():
    pool = render_pool(400, 3, 0, 0.5, workers=1)
    captions, negatives = training_captions(pool, np.arange(len(pool)), np.random.default_rng(0), 0.5)
    truth = caption_truth([s.to_metadata() for s in captions], pool.labels)
    assert truth.diagonal().all()
    assert 0 < truth.sum() - len(pool) < 0.2 * len(pool) ** 2  # some false negatives to mask, not many
    assert not caption_truth([s.to_metadata() for s in negatives], pool.labels).diagonal().any()
    assert {s.tag for s in captions} > {"description"}
    assert not {s.prompt for s in captions + negatives} & held_out_prompts()
    tok = build_tokenizer()
    ids = tokenize(tok, [s.prompt for s in captions + negatives])["input_ids"]
    assert (ids != tok.unk_token_id).all() and (ids == tok.eos_token_id).sum(1).eq(1).all()  # nothing truncated
    for scene, spec in zip(pool.scenes, captions):  # grammar prompts: GenEval's verdict on the truth agrees
        if spec.tag != "description":
            assert _geneval_truth(scene, spec.to_metadata())


def test_caption_truth_semantics():
    rng = np.random.default_rng(0)
    spec = next(s for s in prompt_set("complex") if s.prompt == "a red striped circle on the left of a blue square")
    scene = sample_scene(spec, rng)
    labels = cell_labels(scene)[None]
    metas = [spec.to_metadata(),
             PromptSpec("t", "a circle", [Requirement("circle")]).to_metadata(),
             PromptSpec("t", "a blue square right of a circle",
                        [Requirement("circle"), Requirement("square", color="blue", position=("right of", 0))]).to_metadata(),
             PromptSpec("t", "two circles", [Requirement("circle", count=2)], [Requirement("circle", count=3)]).to_metadata()]
    assert caption_truth(metas, labels)[:, 0].tolist() == [True, True, True, False]
    for kind in ("color", "shape", "relation", "texture", "binding"):
        neg = swapped(spec, kind, rng)
        assert neg is not None and neg.prompt != spec.prompt and neg.tag == "complex"
        assert not caption_truth([neg.to_metadata()], labels)[0, 0], kind
    assert swapped(spec, "count", rng) is None
    two = next(s for s in prompt_set("counting") if s.prompt == "a photo of two circles")
    assert swapped(two, "count", rng).prompt == "a photo of three circles"
