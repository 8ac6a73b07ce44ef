"""GenEval stage: the official prompt metadata, the official layout, ground-truth ToyWorld renders
graded >= 0.99, our results.jsonl read by the official summary script to the same printout, the CLI
end to end (with resume), and clear errors for bad metadata, layouts and missing weights."""
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.geneval.__main__ import main
from benchmarks.geneval.detectors import MissingDetector, OracleDetector
from benchmarks.geneval.metadata import MetadataError, TASKS, read_metadata, toy_metadata
from benchmarks.geneval.run import scan_layout, score_layout
from benchmarks.geneval.summary import summarize
from configs.cli import CommandLineError, UserError
from toyworld.grammar import sample_scene
from toyworld.render import render
from toyworld.world import PromptSpec

OFFICIAL_SUMMARY = Path(__file__).parent / "fixtures" / "geneval_official" / "summary_scores.py"


def test_official_metadata():
    metas = read_metadata()
    assert len(metas) == 553
    assert Counter(m["tag"] for m in metas) == {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94,
                                                 "position": 100, "color_attr": 100}


def write_ground_truth(root: Path, metas: list[dict], per_prompt: int = 2, wrong: bool = False):
    rng = np.random.default_rng(0)
    for index, meta in enumerate(metas):
        folder = root / f"{index:05}"
        (folder / "samples").mkdir(parents=True)
        (folder / "metadata.jsonl").write_text(json.dumps(meta))
        spec = PromptSpec.from_metadata(metas[(index + 1) % len(metas)] if wrong else meta)
        for k in range(per_prompt):
            Image.fromarray(render(sample_scene(spec, rng))).save(folder / "samples" / f"{k:05}.png")


def test_toy_ground_truth_scores_at_least_0_99(tmp_path):
    metas = toy_metadata(10, 0)
    assert set(m["tag"] for m in metas) == set(TASKS)
    write_ground_truth(tmp_path, metas)
    summary, _ = summarize(score_layout(OracleDetector(), tmp_path))
    assert summary["geneval_overall"] >= 0.99 and summary["n_images"] == 2 * len(metas)


def test_wrong_images_score_low(tmp_path):
    metas = [m for m in toy_metadata(10, 0) if m["tag"] in ("colors", "position", "counting")]
    write_ground_truth(tmp_path, metas, per_prompt=1, wrong=True)
    summary, _ = summarize(score_layout(OracleDetector(), tmp_path))
    assert summary["geneval_overall"] < 0.5


def test_results_file_read_by_the_official_summary_script(tmp_path):
    metas = toy_metadata(4, 1)
    write_ground_truth(tmp_path / "images", metas, per_prompt=2)
    # make some images wrong so the numbers are not trivially 100 %
    for index in range(0, len(metas), 3):
        Image.new("RGB", (32, 32), (128, 128, 128)).save(tmp_path / "images" / f"{index:05}" / "samples" / "00001.png")
    results = score_layout(OracleDetector(), tmp_path / "images")
    with open(tmp_path / "results.jsonl", "w") as fp:
        results.to_json(fp, orient="records", lines=True)
    _, ours = summarize(results)
    official = subprocess.run([sys.executable, str(OFFICIAL_SUMMARY), str(tmp_path / "results.jsonl")],
                              capture_output=True, text=True, check=True).stdout
    assert official == ours
    assert "Overall score (avg. over tasks)" in official and "100.00%" not in official.splitlines()[4]


def test_cli_end_to_end_and_resume(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"benchmarks": {"geneval": {"prompts_per_task": 1, "images_per_prompt": 2,
                                                             "teacher_steps": 2, "batch_size": 8}}}))
    out = tmp_path / "ge"
    summary = main(["--params", str(params), "--out", str(out)])
    assert set(k for k in summary if k.startswith("geneval_")) == {"geneval_overall"} | {f"geneval_{t}" for t in TASKS}
    assert len(scan_layout(out / "images")) == 12
    assert (out / "images" / "00000" / "samples" / "00001.png").is_file()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"filename", "tag", "prompt", "correct", "reason", "metadata", "details"}
    stamps = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    main(["--params", str(params), "--out", str(out)])
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}


def test_teacher_at_the_students_step_count(tmp_path):
    """--teacher-steps (the geneval_teacher_few stage) samples the teacher with that many Euler steps on the
    same prompts and seeds, and says so in its summary; it is refused with a student or a count below 1."""
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"benchmarks": {"geneval": {"prompts_per_task": 1, "images_per_prompt": 1,
                                                             "teacher_steps": 3, "batch_size": 8}}}))
    ref = main(["--params", str(params), "--out", str(tmp_path / "ref")])
    few = main(["--params", str(params), "--teacher-steps", "1", "--out", str(tmp_path / "few")])
    assert (ref["generator"]["steps"], few["generator"]["steps"]) == (3, 1)
    like = main(["--params", str(params), "--teacher-steps", "student", "--out", str(tmp_path / "like")])
    assert like["generator"]["steps"] == 4 and like["generator"]["sampler"] == "euler"  # student_steps (default 4)
    assert few["generator"]["sampler"] == "euler" and few["generator"]["source"] == "teacher"
    first = [np.asarray(Image.open(tmp_path / name / "images" / "00000" / "samples" / "00000.png"))
             for name in ("ref", "few")]
    assert not np.array_equal(*first)
    assert [json.loads(x)["prompt"] for x in (tmp_path / "ref" / "results.jsonl").read_text().splitlines()] == \
        [json.loads(x)["prompt"] for x in (tmp_path / "few" / "results.jsonl").read_text().splitlines()]
    for bad in (["--teacher-steps", "0"], ["--teacher-steps", "x"], ["--teacher-steps", "2", "--student", str(tmp_path)]):
        with pytest.raises(CommandLineError, match="--teacher-steps"):
            main(["--params", str(params), *bad, "--out", str(tmp_path / "bad")])


def test_student_sampler_choice(tmp_path):
    """--student-sampler (the geneval_euler stage) samples the student with Euler and records it; the
    folder's settings check moves a stochastic folder aside instead of reusing it; refused for the teacher."""
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"benchmarks": {"geneval": {"prompts_per_task": 1, "images_per_prompt": 1,
                                                             "student_steps": 2, "batch_size": 8}}}))
    student = "models/toy/teacher"  # the teacher's transformer stands in for a student folder
    sto = main(["--params", str(params), "--student", student, "--out", str(tmp_path / "s")])
    eul = main(["--params", str(params), "--student", student, "--student-sampler", "euler", "--out", str(tmp_path / "s")])
    assert (sto["generator"]["sampler"], eul["generator"]["sampler"]) == ("stochastic", "euler")
    assert len(list((tmp_path / "s" / "images.superseded").iterdir())) == 1  # the stochastic images kept, moved aside
    with pytest.raises(CommandLineError, match="--student-sampler needs --student"):
        main(["--params", str(params), "--student-sampler", "euler", "--out", str(tmp_path / "t")])


def test_bad_metadata_and_layout(tmp_path):
    with pytest.raises(UserError, match=r"does not exist \(benchmarks.geneval.metadata: "):
        read_metadata(tmp_path / "none.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"tag": "colors", "prompt": "x"}\n')
    with pytest.raises(MetadataError, match="missing"):
        read_metadata(tmp_path / "bad.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"tag": "colors"\n')
    with pytest.raises(MetadataError, match="invalid JSON"):
        read_metadata(tmp_path / "bad.jsonl")
    (tmp_path / "layout" / "00000" / "samples").mkdir(parents=True)
    with pytest.raises(MetadataError, match="no metadata.jsonl"):
        scan_layout(tmp_path / "layout")
    with pytest.raises(MetadataError, match="does not exist"):
        scan_layout(tmp_path / "nothing")


def test_official_edition_missing_weights_stop_before_generation(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"benchmarks": {"geneval": {"edition": "official"}}, "models": {}}))
    with pytest.raises(MissingDetector, match="Mask2Former"):
        main(["--params", str(params), "--out", str(tmp_path / "ge")])
    assert not (tmp_path / "ge").exists()
