"""Collapse and oscillation alarms (train/alarms.py): each signal on batches with a known answer, the
thresholds, and the loop on the shipped ToyWorld teacher: quiet with the default settings, firing
with a far too high generator learning rate (warning, dvclive `alarm/<signal>`, summary.json)."""
import json
from pathlib import Path

import pytest
import torch

from toyworld.dataset import write_toy_dataset
from toyworld.grammar import TASKS
from train.alarms import check_alarms, sample_signals
from train.senseflow import train
from train.settings import resolve

ROOT = Path(__file__).resolve().parent.parent


def test_signals_on_batches_with_a_known_answer():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(8, 3, 16, 16, generator=g)
    assert sample_signals(real, real) == pytest.approx({"sample_diversity": 1.0, "sample_contrast": 1.0})
    same = real[:1].expand(8, -1, -1, -1)  # one image eight times: collapsed
    assert sample_signals(same, real)["sample_diversity"] == pytest.approx(0.0, abs=1e-6)
    solid = torch.randn(8, 3, 1, 1, generator=g).expand(8, 3, 16, 16)  # solid colours
    signals = sample_signals(solid, real)
    assert signals["sample_contrast"] == pytest.approx(0.0, abs=1e-6) and signals["sample_diversity"] > 0.3
    assert sample_signals(10 * real, real)["sample_contrast"] == pytest.approx(10.0)


def test_thresholds_directions_arming_and_off_switch():
    s = resolve({})
    quiet = {"sample_diversity": 0.9, "sample_contrast": 1.0, "fake_loss_cv": 0.3, "d_logit_gap": 1.0}
    assert check_alarms(quiet, s, 500) == []
    loud = {"sample_diversity": 0.1, "sample_contrast": 5.0, "fake_loss_cv": 2.0, "d_logit_gap": 9.0}
    fired = check_alarms(loud, s, 500)
    assert {(a["signal"], a["key"]) for a in fired} == {
        ("sample_diversity", "alarm_diversity_min"), ("sample_contrast", "alarm_contrast_max"),
        ("fake_loss_cv", "alarm_fake_loss_cv_max"), ("d_logit_gap", "alarm_logit_gap_max")}
    assert all(set(a) == {"step", "signal", "value", "threshold", "key"} and a["step"] == 500 for a in fired)
    assert check_alarms(loud, s, s["alarm_after"] - 1) == []  # not armed yet
    assert check_alarms(loud, {**s, "alarm_logit_gap_max": None}, 500) == [a for a in fired if a["signal"] != "d_logit_gap"]


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("toy_data")
    write_toy_dataset(root, 64, 0, dict.fromkeys(TASKS, 1.0))
    return root / "dataset.json"


def short_toy_run(out: Path, dataset: Path, **overrides) -> dict:
    """The shipped ToyWorld teacher, encoders and preset; 60 iterations on 64 rendered pairs."""
    explicit = {"teacher": str(ROOT / "models/toy/teacher"), "clip": str(ROOT / "models/toy/clip"),
                "vfm_backbone": str(ROOT / "models/toy/dinov2"), "dataset": str(dataset), "threads": 2}
    settings = resolve(explicit, overrides={"steps": 60, "log_every": 10, "checkpoint_every": 1000,
                                            "sample_every": 0, "alarm_after": 20, **overrides})
    train(settings, out)
    return json.loads((out / "summary.json").read_text())


def test_alarm_fires_on_a_broken_run_and_stays_quiet_on_the_default(toy_data, tmp_path, capsys):
    assert short_toy_run(tmp_path / "default", toy_data)["alarms"] == []
    broken = short_toy_run(tmp_path / "broken", toy_data, lr_generator=3e-2)  # 300x the preset's
    assert broken["alarms"], "a generator learning rate 300x too high raised no alarm"
    first = broken["alarms"][0]
    assert first["signal"] == "sample_contrast" and first["value"] > first["threshold"] and first["step"] >= 20
    printed = capsys.readouterr()
    assert "senseflow: warning: alarm at iteration" in printed.out
    # the preset's 96-image probe is below the toy CLIP's 128 feature dimensions: said once per run
    assert printed.err.count("probe: note: eval/fd_t_toyworld compares 96 images of 128-d features") == 2
    tsv = tmp_path / "broken" / "dvclive" / "plots" / "metrics" / "alarm" / "sample_contrast.tsv"
    assert tsv.is_file()
