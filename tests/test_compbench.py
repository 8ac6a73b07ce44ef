"""T2I-CompBench: the official score formulas on hand-made inputs, the official prompt lists, the
ToyWorld edition on ground-truth renders (and on wrong ones), the stage CLI end to end on the
shipped toy teacher, and clear errors before any work."""
import json

import numpy as np
import pytest
from PIL import Image

from benchmarks.t2i_compbench.__main__ import main
from benchmarks.t2i_compbench.judges import MissingModel, OracleJudge
from benchmarks.t2i_compbench.prompts import (CATEGORIES, PromptFileError, complex_subsets, official_prompts,
                                              read_prompt_file, toy_prompts)
from benchmarks.t2i_compbench.run import image_plan, score_images
from benchmarks.t2i_compbench.scoring import (Box, attribute_image_score, blip_answer, category_score, complex_kind,
                                              determine_position, spatial_image_score, spatial_relation, three_in_one)
from toyworld.grammar import sample_scene
from toyworld.render import render


def test_determine_position_matches_the_official_rule():
    left, right = Box(0, 0, 100, 100), Box(300, 0, 400, 100)
    assert determine_position("on the left of", left, right) == 1.0
    assert determine_position("on the right of", left, right) == 0.0
    assert determine_position("on the right of", right, left) == 1.0
    overlap = Box(50, 0, 150, 100)  # IoU 1/3, centres 50 px apart horizontally
    assert determine_position("on the left of", left, overlap) == pytest.approx(0.1 / (1 / 3))
    top, bottom = Box(0, 0, 100, 100), Box(0, 300, 100, 400)
    assert determine_position("on the top of", top, bottom) == 1.0
    assert determine_position("on the bottom of", bottom, top) == 1.0
    assert determine_position("on the left of", top, bottom) == 0.0  # vertical offset dominates
    far = Box(1000, 1000, 1100, 1100)
    assert determine_position("next to", left, far) == pytest.approx(150 / 1000)
    assert determine_position("near", left, right) == 1.0  # |dy| < 150
    assert determine_position("on top of", top, bottom) == 0.0  # without "the": the official code scores 0


def test_spatial_image_score_weights_and_cutoff():
    a, b = (Box(0, 0, 100, 100), 0.9), (Box(300, 0, 400, 100), 0.8)
    assert spatial_image_score("on the left of", a, b) == pytest.approx(0.25 * 0.9 + 0.25 * 0.8 + 0.5)
    assert spatial_image_score("on the right of", a, b) == 0.0  # 0.425 < 0.5 -> 0
    assert spatial_image_score("on the left of", a, None) == 0.0  # 0.225 -> 0
    assert spatial_image_score("on the left of", None, None) == 0.0
    assert spatial_relation("a dog on the left of a cat") == "on the left of"
    assert spatial_relation("a lamp near a sofa on side of x") == "on side of"  # first in the official list order


def test_attribute_product_answer_format_and_three_in_one():
    assert attribute_image_score([0.5, 0.8]) == pytest.approx(0.4)
    assert attribute_image_score([]) == 1.0
    assert blip_answer(0.123456) == "0.1235"
    assert category_score(["0.5000", "0.2500"]) == pytest.approx(0.375)
    assert three_in_one("spatial", 0.6, 0.8, None) == pytest.approx(0.7)
    assert three_in_one("action", 0.6, None, 0.3) == pytest.approx(0.45)
    assert three_in_one("both", 0.6, 0.9, 0.3) == pytest.approx(0.6)


def test_official_prompt_lists():
    for cat in CATEGORIES:
        prompts = official_prompts(cat)
        assert len(prompts) == 300 and all("_" not in p.prompt for p in prompts)
    spatial, action = complex_subsets()
    assert (len(spatial), len(action)) == (58, 212)
    first = official_prompts("complex")[0].prompt
    assert complex_kind(first, spatial, action) in ("spatial", "action", "both")


def test_bad_prompt_files(tmp_path):
    with pytest.raises(PromptFileError, match="not found"):
        read_prompt_file(tmp_path / "none.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(PromptFileError, match="no prompts"):
        read_prompt_file(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_text("a red_car\n")
    with pytest.raises(PromptFileError, match="'_'"):
        read_prompt_file(tmp_path / "bad.txt")
    with pytest.raises(PromptFileError, match="unknown"):
        toy_prompts("numeracy", 2, 0)


def _render_plan(tmp_path, prompts, render_spec):
    plan = image_plan(prompts, 1)
    rng = np.random.default_rng(0)
    for p, _, name in plan:
        folder = tmp_path / p.category / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render(sample_scene(render_spec(p), rng))).save(folder / name)
    return plan


def test_toy_edition_on_ground_truth_renders(tmp_path):
    prompts = [p for cat in CATEGORIES for p in toy_prompts(cat, 12, 0)]
    plan = _render_plan(tmp_path, prompts, lambda p: p.spec)
    answers, frame = score_images(OracleJudge(), plan, tmp_path, "toy")
    scores = frame.groupby("category").score.mean()
    assert set(scores.index) == set(CATEGORIES)
    assert (scores >= 0.99).all(), scores
    assert all(isinstance(a["answer"], str) for a in answers["color"])  # BLIP-style answers


def test_toy_edition_scores_wrong_images_low(tmp_path):
    """Images of the mirrored relation / of other colours fail: the judge reads the image, not the prompt."""
    spatial = toy_prompts("spatial", 24, 0)
    lr = [p for p in spatial if "left of" in p.prompt or "right of" in p.prompt]
    mirror = {p.prompt: p for p in spatial}

    def mirrored(p):
        text = p.prompt.replace("left", "@").replace("right", "left").replace("@", "right")
        return mirror[text].spec

    plan = _render_plan(tmp_path, lr, mirrored)
    _, frame = score_images(OracleJudge(), plan, tmp_path, "toy")
    # both objects found (score 1 each) but the position wrong: 0.25 + 0.25 + 0 = 0.5, which the
    # official cut-off (score < 0.5 -> 0) keeps; the right position scores 1.0
    assert (frame.score == 0.5).all()
    color = toy_prompts("color", 12, 0)

    def other_colors(p):
        spec = p.spec
        swapped = [r.__class__(r.shape, r.count, spec.include[1 - i].color, r.texture, r.position)
                   for i, r in enumerate(spec.include)]
        return spec.__class__(spec.tag, spec.prompt, swapped)

    plan = _render_plan(tmp_path / "c", [p for p in color if p.spec.include[0].color != p.spec.include[1].color],
                        other_colors)
    _, frame = score_images(OracleJudge(), plan, tmp_path / "c", "toy")
    assert frame.score.max() == 0.0


def test_cli_end_to_end_on_the_toy_teacher(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"benchmarks": {"compbench": {
        "prompts_per_category": 1, "images_per_prompt": 1, "teacher_steps": 2, "batch_size": 8}}}))
    out = tmp_path / "cb"
    summary = main(["--params", str(params), "--out", str(out)])
    assert set(k for k in summary if k.startswith("compbench_")) == {f"compbench_{c}" for c in CATEGORIES}
    assert all(0.0 <= summary[f"compbench_{c}"] <= 1.0 for c in CATEGORIES)
    assert len(list((out / "images").glob("*/samples/*_000000.png"))) == 6
    rows = json.loads((out / "scores" / "spatial" / "vqa_result.json").read_text())
    assert rows[0]["question_id"] == 0
    assert (out / "per_prompt.csv").read_text().startswith("category,prompt,images,score")
    before = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    main(["--params", str(params), "--out", str(out)])  # resumed: nothing regenerated
    assert before == {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}


def test_official_edition_missing_models_stop_before_generation(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"models": {"compbench_blip_vqa": str(tmp_path / "no_blip")},
                                  "benchmarks": {"compbench": {"edition": "official"}}}))
    with pytest.raises(MissingModel, match="BLIP-VQA"):
        main(["--params", str(params), "--out", str(tmp_path / "cb")])
    assert not (tmp_path / "cb").exists()


def test_unknown_params_key(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"benchmarks": {"compbench": {"imgs": 3}}}))
    with pytest.raises(KeyError, match="imgs"):
        main(["--params", str(params), "--out", str(tmp_path / "cb")])
