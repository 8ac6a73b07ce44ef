"""The loop on 2 CPU processes (gloo): DDP replicas stay in sync, FSDP2-sharded IDA equals the
unsharded formula, an FSDP2 run killed mid-way and resumed equals the uninterrupted one bit for bit,
and FSDP2 and DDP agree. The launch is asserted to really have 2 processes (a misconfigured
launch silently runs one)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train.tiny_assets import toy_assets

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    work = tmp_path_factory.mktemp("dist")
    (work / "assets.json").write_text(json.dumps(toy_assets(work / "assets")))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "distributed_senseflow.py"), str(work)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return {**json.loads((work / "result.json").read_text()), "stderr": proc.stderr}


def test_two_processes_really_ran(result):
    assert result["world_size"] == 2 and result["distributed_type"] == "DistributedType.MULTI_CPU"


def test_ddp_replicas_stay_in_sync(result):
    assert result["ddp_replicas_in_sync"] and result["fsdp_heads_in_sync"]


def test_ida_on_sharded_parameters_equals_the_formula(result):
    assert result["ida_params_dtensor"] and result["ida_params_split"]
    assert result["ida_sharded_equals_formula"]


def test_sharded_resume_is_bit_identical_and_matches_ddp(result):
    assert result["fsdp_generator_is_dtensor"] and result["same_keys"]
    assert result["fsdp_resume_not_equal"] == []  # FSDP2 + bf16 + 8-bit AdamW, killed at iteration 3, resumed from 2
    assert result["fsdp_export_equals_generator"] and result["fsdp_bf16_export_equals_generator"]
    assert result["ddp_vs_fsdp_max_abs_diff"] < 1e-4  # same math; only reduction order differs


def test_sharded_checkpoints_keep_fp32_masters_and_gather_nothing(result):
    assert result["master_weights_fp32"]
    assert result["sharded_checkpoint_files"] == ["sharded", "state.json", "transformer"]  # config.json only
    assert result["sharded_checkpoint_has_no_weights_outside_shards"]
    assert result["offline_export_equals_generator"]  # python -m train.export_checkpoint, one process
    assert result["sharded_checkpoint_dtypes"] == ["torch.float32"]


def test_metrics_along_training_under_ddp_fsdp2_and_bf16(result):
    """The probe runs on both ranks (sharded nets need them all), logs from rank 0, and a killed and
    resumed FSDP2 + bf16 run records the uninterrupted run's points."""
    assert all(steps == [0, 4] for steps in result["along_training_steps"].values())
    assert result["along_training_resumed_equals_straight"]
    assert result["along_training_ddp_vs_fsdp"] < 1e-3


def test_a_failing_probe_frechet_distance_does_not_end_an_fsdp2_bf16_run(result):
    """clean-fid fails on singular covariances (probe N < feature dims): that evaluation logs CLIP and the
    oracle without FD, says why, and the run trains on to the same weights as without the probe failure."""
    assert result["no_fd_run_finished"] and result["no_fd_equals_straight"]
    assert result["no_fd_points"] == [["eval/clip_score", "eval/oracle_accuracy"]] * 2  # iterations 0 and 4
    assert "probe: no eval/fd_t_toyworld at this evaluation: simulated" in result["stderr"]
