"""Launching at every scale: accelerate's FSDP2 plugin configs parse (single and multi-node), the
SLURM batch script renders one accelerate command per node with the right ranks and rendezvous,
and the DVC distill stage's launcher is a param."""
import os
import stat
import subprocess
from pathlib import Path

import yaml
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from train.settings import DEFAULTS, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_accelerate_fsdp2_configs_parse_with_accelerate():
    single = load_config_from_file(str(ROOT / "configs" / "accelerate" / "fsdp2.yaml"))
    assert single.distributed_type == DistributedType.FSDP and single.fsdp_config["fsdp_version"] == 2
    multi = load_config_from_file(str(ROOT / "configs" / "accelerate" / "multi_node_fsdp2.yaml"))
    assert multi.distributed_type == DistributedType.FSDP and multi.num_machines == 2 and multi.num_processes == 16
    assert multi.main_process_ip and multi.main_process_port


def test_slurm_script_renders_one_command_per_node(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    scontrol = fake / "scontrol"
    scontrol.write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && printf "gpu-a01\\ngpu-a02\\ngpu-a03\\n"\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "SLURM_NNODES": "3",
           "SLURM_JOB_NODELIST": "gpu-a[01-03]", "SENSEFLOW_DRY_RUN": "1", "GPUS_PER_NODE": "4"}
    out = subprocess.run(["bash", str(ROOT / "configs" / "launch" / "slurm_senseflow.sbatch"), "--variant", "full",
                          "-S", "train.ttur=10"], env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 3
    for rank, line in enumerate(lines):
        assert line.startswith("accelerate launch --config_file configs/accelerate/fsdp2.yaml")
        assert f"--machine_rank {rank} " in line and "--num_machines 3 " in line and "--num_processes 12 " in line
        assert "--main_process_ip gpu-a01 --main_process_port 29500" in line
        assert line.rstrip().endswith("-m train.senseflow --variant full -S train.ttur=10")


def test_slurm_script_outside_slurm_says_so(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.run(["bash", str(ROOT / "configs" / "launch" / "slurm_senseflow.sbatch")], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "run under SLURM" in proc.stderr


def test_distill_stage_launcher_is_a_param():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["distill"]
    assert stage["cmd"].startswith("${train.launch} -m train.senseflow") and "--on-change supersede" in stage["cmd"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["train"]["launch"] == DEFAULTS["launch"] == "python"
    assert load_settings(ROOT / "params.yaml", overrides=["train.launch=torchrun --nproc_per_node 8"])["launch"] \
        == "torchrun --nproc_per_node 8"


def test_gpu_check_without_a_gpu_says_so():
    proc = subprocess.run(["python", "-m", "train.gpu_check", "--out", "/nonexistent/gpu.json"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "needs CUDA GPUs" in proc.stderr
