"""The whole DVC pipeline end to end on a fresh clone of HEAD with tiny parameters (ToyWorld of 48
images, a 4-step teacher, 2-iteration distillations, a handful of evaluation images): every stage
runs, results/summary.csv has a row per variant and metric, the no-op rerun does nothing, `-S`
overrides reach the training code through `dvc exp run`, and a `dvc repro` killed during `distill`
resumes from the last checkpoint. Marked slow (several minutes on 2 cores)."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dashboards.report import COMPBENCH, GENEVAL, METRICS
from evaluate.bench_pipeline import main as bench_pipeline

pytestmark = pytest.mark.slow

TINY = ["toyworld.train_size=48", "toyworld.oracle_validation_size=20", "teacher.steps=4", "teacher.batch_size=4",
        "teacher.checkpoint_every=2", "teacher.eval.prompts_per_task=2", "teacher.eval.images_per_prompt=1",
        "teacher.eval.sample_steps=2", "teacher.eval.few_steps=[1]", "train.steps=2", "train.batch_size=2", "train.eval_prompts=6",
        "eval.fid_prompts=6", "eval.diversity_prompts=1", "eval.diversity_samples=2", "eval.teacher_steps=2",
        "benchmarks.geneval.prompts_per_task=1", "benchmarks.geneval.images_per_prompt=1",
        "benchmarks.geneval.teacher_steps=2", "benchmarks.compbench.prompts_per_category=1",
        "benchmarks.compbench.images_per_prompt=1", "benchmarks.compbench.teacher_steps=2"]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    args = ["--repo", str(REPO), "--workdir", str(work), "--out", str(work / "pipeline.json")]
    for item in TINY:
        args += ["-S", item]
    result = bench_pipeline(args)
    return work / "clone", result


def test_fresh_clone_repro_produces_every_row(clone):
    repo, result = clone
    table = pd.read_csv(repo / "results" / "summary.csv", dtype={"seed": str})
    variants = list(yaml.safe_load((repo / "params.yaml").read_text())["variants"])
    for v in variants:
        rows = table[table.variant == v]
        assert set(METRICS) | set(GENEVAL) | set(COMPBENCH) <= set(rows.metric)
        assert rows[rows.metric == "fd_t_toyworld"].value.notna().all()
        assert rows[rows.metric == "hpsv2"].reason.notna().all()
        assert rows[rows.metric == "fd_t_toyworld"].ci_low.notna().all()  # intervals on every value
        if v != "full":
            assert rows[rows.metric == "fd_t_toyworld"].p_vs_full.notna().all()
        ran = rows[rows.value.notna()]
        assert set(ran.seed) == {"0"} and (ran.n_seeds == 1).all()
        summary = json.loads((repo / "runs" / "distill" / f"{v}-0" / "summary.json").read_text())
        assert summary["alarms"] == [], (v, summary["alarms"])  # the default runs raise no collapse alarm
        assert [p["step"] for p in summary["along_training"]] == [0, 2]  # metrics along training
        assert json.loads((repo / "results" / "training" / f"{v}-0" / "summary.json").read_text()) == summary
    euler = table[table.variant == "full_euler"]  # eval.euler_variants: the paper's "Ours (Euler)" row
    assert euler[euler.metric == "fd_t_toyworld"].value.notna().all() and "Ours (full, Euler)" in (
        repo / "results" / "ablation.md").read_text()
    assert (repo / "results" / "ablation.md").is_file()
    along = (repo / "results" / "along_training.md").read_text()
    assert "## eval/fd_t_toyworld" in along and "## eval/oracle_accuracy" in along
    assert result["noop_repro_s"] < 60 and set(result["stages_s"]) >= {"toyworld", "report"}


def test_params_override_reaches_the_training_code(clone):
    repo, _ = clone
    subprocess.run(["dvc", "exp", "run", "-S", "train.ttur=3", "distill@full-0"], cwd=repo, check=True,
                   capture_output=True, text=True)
    logged = yaml.safe_load((repo / "runs" / "distill" / "full-0" / "dvclive" / "params.yaml").read_text())
    assert logged["ttur"] == 3


def test_seeds_param_expands_every_stage_over_variant_and_seed(clone):
    repo, _ = clone
    stages = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=repo, check=True, capture_output=True,
                            text=True).stdout.split()
    assert {"distill@full-0", "metrics@wo_vfm-0"} <= set(stages) and "distill@full-1" not in stages
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump({**params, "seeds": [0, 1, 2]}, sort_keys=False))
    try:
        stages = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=repo, check=True, capture_output=True,
                                text=True).stdout.split()
    finally:
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for kind in ("distill", "generate", "metrics", "geneval", "compbench"):
        assert {f"{kind}@{v}-{k}" for v in params["variants"] for k in (0, 1, 2)} <= set(stages)


def test_killed_repro_resumes_distill_from_its_checkpoint(clone):
    repo, _ = clone
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(steps=40, checkpoint_every=4)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_dir = repo / "runs" / "distill" / "wo_vfm-0"
    proc = subprocess.Popen(["dvc", "repro", "distill@wo_vfm-0"], cwd=repo, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (run_dir / "checkpoints" / "step_8" / "state.json").is_file():
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run_dir / "checkpoints" / "step_8").is_dir(), "no checkpoint written before the kill"
    done = subprocess.run(["dvc", "repro", "distill@wo_vfm-0"], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["resumed_from"] >= 8
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]  # no half-written files left
