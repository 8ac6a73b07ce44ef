"""Metrics along training (train/probe.py, DESIGN.md's eval/* keys): the loop on the shipped
ToyWorld teacher logs FD-T, CLIP score and oracle accuracy at iteration 0, every train.eval_every and at
the end (dvclive, along_training.jsonl, summary.json; 132 probe images: a Fréchet distance needs more
images than the 128 feature dimensions), and `python -m evaluate.checkpoints` scores the
saved checkpoints to exactly the loop's values."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from evaluate.checkpoints import main as checkpoints_main
from toyworld.dataset import write_toy_dataset
from toyworld.grammar import TASKS
from train.senseflow import train
from train.settings import resolve

ROOT = Path(__file__).resolve().parent.parent
KEYS = ["eval/fd_t_toyworld", "eval/clip_score", "eval/oracle_accuracy"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("along")
    write_toy_dataset(root / "data", 32, 0, dict.fromkeys(TASKS, 1.0))
    explicit = {"teacher": str(ROOT / "models/toy/teacher"), "clip": str(ROOT / "models/toy/clip"),
                "vfm_backbone": str(ROOT / "models/toy/dinov2"), "dataset": str(root / "data" / "dataset.json"),
                "threads": 2}
    settings = resolve(explicit, overrides={"steps": 20, "eval_every": 10, "eval_prompts": 132, "checkpoint_every": 10,
                                            "keep_checkpoints": 3, "log_every": 5, "sample_every": 0})
    train(settings, root / "run")
    return root / "run"


def test_loop_logs_the_design_keys_at_fixed_iterations(toy_run):
    points = [json.loads(line) for line in (toy_run / "along_training.jsonl").read_text().splitlines()]
    assert [p["step"] for p in points] == [0, 10, 20]
    assert all(set(p) == {"step", "probe", *KEYS} for p in points) and len({p["probe"] for p in points}) == 1
    assert all(0 <= p["eval/oracle_accuracy"] <= 1 and p["eval/fd_t_toyworld"] > 0 for p in points)
    summary = json.loads((toy_run / "summary.json").read_text())
    assert summary["along_training"] == points
    for key in KEYS:  # dvclive curves (the dashboard and `dvc plots` read them)
        tsv = pd.read_csv(toy_run / "dvclive" / "plots" / "metrics" / f"{key}.tsv", sep="\t")
        assert list(tsv.step) == [0, 10, 20]
        assert tsv[key.split("/")[1]].tolist() == pytest.approx([p[key] for p in points])
    with (toy_run / "along_training" / "reference.npz").open("rb") as f:
        assert f.read(2) == b"PK"  # the teacher's reference images, cached for resumes and evaluate.checkpoints


def test_checkpoint_evaluation_reproduces_the_loop(toy_run, tmp_path, capsys):
    loop = {p["step"]: p for p in map(json.loads, (toy_run / "along_training.jsonl").read_text().splitlines())}
    out = tmp_path / "ckpt.jsonl"
    points = checkpoints_main([str(toy_run), "--out", str(out), "--device", "cpu"])
    assert [p["step"] for p in points] == [10, 20]
    for p in points:  # same prompts, noise, sampler and weights
        assert p["probe"] == loop[p["step"]]["probe"]
        assert {k: p[k] for k in KEYS} == pytest.approx({k: loop[p["step"]][k] for k in KEYS}, rel=1e-9)
    again = checkpoints_main([str(toy_run), "--out", str(out), "--steps", "20", "--device", "cpu"])
    assert "already in" in capsys.readouterr().out and again == points  # resumable: nothing recomputed


def test_checkpoint_evaluation_refuses_what_it_cannot_do(toy_run, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "evaluate.checkpoints", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)

    proc = run(str(toy_run), "--steps", "15", "--out", str(tmp_path / "x.jsonl"))
    assert proc.returncode == 2 and "no checkpoint at step(s) [15]" in proc.stderr and "[10, 20]" in proc.stderr
    proc = run(str(toy_run), "-S", "train.ttur=3", "--out", str(tmp_path / "x.jsonl"))
    assert proc.returncode == 2 and "only the evaluation keys" in proc.stderr
    proc = run(str(tmp_path), "--out", str(tmp_path / "x.jsonl"))
    assert proc.returncode == 2 and "no checkpoint in" in proc.stderr
    assert not (tmp_path / "x.jsonl").exists()
    other = tmp_path / "other.jsonl"  # points of another probe setting are never mixed in
    other.write_text(json.dumps({"step": 10, "eval/clip_score": 1.0, "probe": "0123456789ab"}) + "\n")
    proc = run(str(toy_run), "--out", str(other))
    assert proc.returncode == 2 and "holds points of another probe" in proc.stderr


def test_cached_reference_is_reused_only_for_the_same_teacher(toy_run, tmp_path):
    """The record that keys the cached teacher images survives its JSON round trip (so a resume reuses
    them) and changes when the teacher's files change (a teacher retrained in place is sampled again)."""
    import numpy as np
    import shutil

    from train.probe import probe_set, reference_record

    settings = json.loads((toy_run / "checkpoints" / "step_20" / "state.json").read_text())["settings"]
    probe = probe_set(settings, [])
    record = reference_record(settings, probe)
    with np.load(toy_run / "along_training" / "reference.npz") as data:
        assert json.loads(str(data["record"])) == record
    teacher = tmp_path / "teacher"
    shutil.copytree(settings["teacher"], teacher)
    moved = reference_record({**settings, "teacher": str(teacher)}, probe)
    weights = next(teacher.rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b"\0")
    assert reference_record({**settings, "teacher": str(teacher)}, probe) != moved


def test_a_curve_of_another_probe_is_moved_aside_not_mixed(tmp_path):
    from train.probe import append_point, keep_points_until, read_curve

    path = tmp_path / "along_training.jsonl"
    for step in (0, 100, 200):
        append_point(path, step, {"eval/clip_score": 60.0 + step}, "aaa")
    assert keep_points_until(path, 100, "aaa") is None and [p["step"] for p in read_curve(path)] == [0, 100]
    aside = keep_points_until(path, 100, "bbb")  # resumed with other train.eval_* values
    assert aside.name == "along_training.aaa.jsonl" and len(read_curve(aside)) == 2 and not path.exists()
