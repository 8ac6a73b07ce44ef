"""TTUR sweep (paper Fig. 3): runs of the loop at every (ttur, ida) for the same number of generator
updates with the probe at the same generator updates, the oscillation statistics, the verdict, reuse
of finished runs."""
import json
from pathlib import Path

import pytest
import torch
import yaml

from toyworld.dataset import write_toy_dataset
from toyworld.grammar import TASKS
from configs.cli import CommandLineError
from train.ttur_sweep import SweepRunError, curve_statistics, main, markdown, read_run, run_name, summarize

ROOT = Path(__file__).resolve().parent.parent


def test_a_jumping_curve_oscillates_more_than_a_smooth_one():
    steps = list(range(0, 90, 10))
    smooth = curve_statistics([(s, 10.0 - s / 10) for s in steps], [(s, 0.1) for s in steps], 80)
    jumpy = curve_statistics([(s, 10.0 - s / 10 + (2.0 if (s // 10) % 2 else 0.0)) for s in steps],
                             [(s, 0.3) for s in steps], 80)
    assert smooth["fd_oscillation"] == pytest.approx(1.0) and jumpy["fd_oscillation"] == pytest.approx(2.0)
    assert smooth["late_evaluations"] == 5 and jumpy["fd_late_std"] > smooth["fd_late_std"]
    assert (smooth["fd_final"], jumpy["fake_loss_cv"]) == (pytest.approx(2.0), pytest.approx(0.3))
    with pytest.raises(ValueError, match="at least 3"):
        curve_statistics([(0, 1.0), (10, 2.0)], [], 10)


def test_the_verdict_needs_every_ttur():
    def run(osc):
        return {"fd_final": 1.0, "fd_oscillation": osc, "fd_late_std": 0.1, "fake_loss_cv": 0.2}

    runs = {run_name(5, True, 0): run(1.0), run_name(5, False, 0): run(2.0),
            run_name(10, True, 0): run(1.0), run_name(10, False, 0): run(0.5)}
    result = summarize(runs, [5, 10], [0])
    assert result["without_ida_oscillates_more"] == {5: True, 10: False} and not result["paper_claim_holds"]
    runs[run_name(5, False, 0)] = run(None)  # no neighbouring FD points in that run: not shown, never a yes
    assert summarize(runs, [5, 10], [0])["without_ida_oscillates_more"] == {5: False, 10: False}


def test_with_seeds_the_verdict_needs_the_paired_interval_above_zero():
    """Seed s's runs with and without IDA are paired: a difference that every seed shows is established,
    one whose sign changes between seeds is not, whatever the means say."""
    def run(osc):
        return {"fd_final": 1.0, "fd_oscillation": osc, "fd_late_std": 0.1, "fake_loss_cv": None}

    on = {5: [1.0, 2.0, 3.0], 10: [1.0, 1.0, 1.0]}
    off = {5: [1.5, 2.6, 3.4], 10: [3.0, 0.5, 1.1]}  # TTUR 10: a larger mean, but not on every seed
    runs = {run_name(t, ida, s): run((on if ida else off)[t][s]) for t in (5, 10) for ida in (True, False)
            for s in range(3)}
    result = summarize(runs, [5, 10], [0, 1, 2])
    assert result["without_ida_oscillates_more"] == {5: True, 10: True}
    effect = result["ida_effect"]
    assert effect[5]["fd_oscillation"]["mean"] == pytest.approx(0.5) and effect[5]["fd_oscillation"]["lo"] > 0
    assert effect[10]["fd_oscillation"]["lo"] < 0 < effect[10]["fd_oscillation"]["hi"]
    assert effect[5]["fd_final"] == {"mean": 0.0, "lo": None, "hi": None, "p": None, "seeds": 3}  # no spread
    assert effect[5]["fake_loss_cv"] is None  # a value some run lacks
    assert result["without_ida_oscillates_more_established"] == {5: True, 10: False}
    assert not result["paper_claim_holds"]
    md = markdown({"generator_updates": 60, "evals": 12, "seeds": [0, 1, 2], "fd_key": "eval/fd_t_toyworld",
                   **result})
    assert "| 5 | +0.000 (the same on every seed: no interval) | +0.500 [" in md and "is not established here" in md
    same = {name: run(2.0 if "off" in name else 1.0) for name in runs}  # +1 on every seed: no interval, not established
    assert not summarize(same, [5, 10], [0, 1, 2])["without_ida_oscillates_more_established"][5]


def test_a_repeated_seed_is_refused(tmp_path):
    with pytest.raises(CommandLineError, match="each seed once"):
        main(["--seeds", "0", "0", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "res")])


def test_an_evaluation_without_fd_is_left_out_of_the_curve(tmp_path):
    def write(points):
        (tmp_path / "summary.json").write_text(json.dumps({"steps": 80, "along_training": points}))

    points = [{"step": s, "probe": "k", "eval/clip_score": 0.7, **({} if s == 60 else {"eval/fd_t_toyworld": 10.0 - s / 10})}
              for s in range(0, 90, 10)]
    write(points)
    run = read_run(tmp_path, 10)
    assert run["fd_missing"] == [60] and [s for s, _ in run["curve"]] == [0, 10, 20, 30, 40, 50, 70, 80]
    assert run["fd_final"] == 2.0 and run["fd_oscillation"] == pytest.approx(1.0)  # 50 -> 70 is not one jump
    write([{k: v for k, v in p.items() if not (p["step"] == 80 and k == "eval/fd_t_toyworld")} for p in points])
    assert read_run(tmp_path, 10)["fd_final"] is None  # the last evaluation has no FD: no final value
    write([{**p, "eval/fd_t_toyworld": None} if p["step"] > 10 else p for p in points])
    with pytest.raises(SweepRunError, match="only 2 of 9 evaluations have an FD-T"):
        read_run(tmp_path, 10)


def test_sweep_end_to_end_on_the_toy_and_reuse(tmp_path):
    torch.set_num_threads(2)
    write_toy_dataset(tmp_path / "data", 16, 0, dict.fromkeys(TASKS, 1.0))
    # 130 probe images > the toy CLIP's 128 feature dims: with fewer the covariances are singular and
    # clean-fid's matrix square root may fail (it did, at 6, with the refined teacher)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "train": {"family": "toy", "preset": "toy", "teacher": str(ROOT / "models/toy/teacher"),
                  "clip": str(ROOT / "models/toy/clip"), "vfm_backbone": str(ROOT / "models/toy/dinov2"),
                  "dataset": str(tmp_path / "data" / "dataset.json"), "batch_size": 2, "eval_prompts": 130,
                  "checkpoint_every": 100, "sample_every": 0, "log_every": 1, "loss_window": 2},
        "variants": {"full": {}}}))
    args = ["--params", str(params), "--ttur", "1", "2", "--generator-updates", "4", "--evals", "2",
            "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "res")]
    result = main(args)
    for ttur in (1, 2):
        for ida in (True, False):
            run = result["runs"][run_name(ttur, ida, 0)]
            assert [s for s, _ in run["curve"]] == [0, 2 * ttur, 4 * ttur]  # the same generator updates
            summary = json.loads((tmp_path / "runs" / run_name(ttur, ida, 0) / "summary.json").read_text())
            assert summary["steps"] == 4 * ttur
    assert set(result["table"]) == {"ttur1-ida_on", "ttur1-ida_off", "ttur2-ida_on", "ttur2-ida_off"}
    md = (tmp_path / "res" / "sweep.md").read_text()
    assert "| 2 | off |" in md and "paper's claim" in md
    assert json.loads((tmp_path / "res" / "sweep.json").read_text())["fd_key"] == "eval/fd_t_toyworld"
    ckpt = next((tmp_path / "runs" / run_name(2, False, 0) / "checkpoints").iterdir())
    stamp = ckpt.stat().st_mtime_ns
    assert main(args)["table"] == result["table"]  # finished runs are reloaded, not retrained
    assert ckpt.stat().st_mtime_ns == stamp
    with pytest.raises(SweepRunError, match="another --evals"):  # another schedule's curve is never mixed in
        main([*args[:-4], "--evals", "4", *args[-4:]])
