"""Hand-off diagnostic (benchmarks/geneval/handoff.py): s0 is the teacher's own `geneval` sampling and
s<N> / t0 the student's, image for image; the mixed modes differ from both; a finished mode is reused."""
import json

import numpy as np
import pytest
from PIL import Image

from benchmarks.geneval.__main__ import main as geneval
from benchmarks.geneval.handoff import main as handoff
from configs.cli import CommandLineError
from configs.params import ParamsError

STUDENT = "models/toy/teacher"  # the teacher's transformer stands in for a student folder


def images(folder) -> dict[str, bytes]:
    """Every PNG's pixels under `folder`, by relative path."""
    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p)).tobytes() for p in sorted(folder.rglob("*.png"))}


def test_handoff_modes_reproduce_the_geneval_samplers(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"benchmarks": {"geneval": {"prompts_per_task": 1, "images_per_prompt": 1,
                                                             "teacher_steps": 4, "student_steps": 2, "batch_size": 4}}}))
    teacher = geneval(["--params", str(params), "--out", str(tmp_path / "teacher")])
    student = geneval(["--params", str(params), "--student", STUDENT, "--out", str(tmp_path / "student")])
    out = tmp_path / "handoff"
    record = handoff(["--params", str(params), "--student", STUDENT, "--out", str(out)])
    assert list(record) == ["s0", "s1", "s2", "t1"]
    assert images(out / "s0" / "images") == images(tmp_path / "teacher" / "images")
    assert images(out / "s2" / "images") == images(tmp_path / "student" / "images")
    assert record["s0"]["geneval_overall"] == teacher["geneval_overall"]
    assert record["s2"]["geneval_overall"] == student["geneval_overall"]
    mixed = images(out / "s1" / "images")
    teacher_images = images(out / "s0" / "images")
    assert all(mixed[k] != teacher_images[k] for k in mixed)
    assert images(out / "t1" / "images").keys() == mixed.keys()
    assert json.loads((out / "handoff.json").read_text()) == record

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    again = handoff(["--params", str(params), "--student", STUDENT, "--out", str(out), "--modes", "t0,s1"])
    assert again["t0"] == record["s2"] and again["s1"] == record["s1"]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # s1's images reused, not sampled again
    assert images(out / "t0" / "images") == images(out / "s2" / "images")


@pytest.mark.parametrize("modes", ["s3", "t2", "x1", ","])
def test_bad_modes(tmp_path, modes):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"benchmarks": {"geneval": {"student_steps": 2}}}))
    with pytest.raises(ParamsError, match="--modes"):
        handoff(["--params", str(params), "--student", STUDENT, "--out", str(tmp_path / "h"), "--modes", modes])


def test_prompt_count_must_be_positive(tmp_path):
    with pytest.raises(CommandLineError, match="--prompts-per-task"):
        handoff(["--student", STUDENT, "--out", str(tmp_path / "h"), "--prompts-per-task", "0"])
