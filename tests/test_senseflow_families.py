"""One SenseFlow iteration (every component on) for the tiny sd3 / flux / sdxl teachers, through each
family's released preset (resolution, precision and paths overridden for the tiny models)."""
import pytest
import torch

from train.tiny_assets import family_teacher, make_clip, make_dataset, make_dinov2, params_state
from train.batches import batch_indices
from train.settings import resolve
from train.senseflow import build_run, train_step

PRESETS = {"sd3": "sd35_medium", "flux": "flux", "sdxl": "sdxl"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("shared")
    return {"clip": str(make_clip(root / "clip")), "vfm_backbone": str(make_dinov2(root / "dinov2")),
            "dataset": str(make_dataset(root / "data", n=4))}


@pytest.mark.parametrize("family", ["sd3", "flux", "sdxl"])
def test_one_iteration_per_family(family, shared, tmp_path):
    teacher = family_teacher(family, tmp_path / "teacher")
    settings = resolve({**shared, "family": family, "preset": PRESETS[family], "teacher": str(teacher),
                        "resolution": 32, "batch_size": 2, "precision": "fp32", "vfm_downsample": 1,
                        "ttur": 1, "ida": True, "isg": True, "vfm": True, "threads": 1,
                        "optimizer": "adamw", "fsdp": False, "shard_teacher": False})  # 8-bit AdamW needs CUDA
    run = build_run(settings, tmp_path / "run")
    idx = batch_indices(0, len(run.data), 2, 0)
    images, prompts = torch.stack([run.data[i][0] for i in idx]), [run.data[i][1] for i in idx]
    before = params_state(run.generator)
    logs = train_step(run, 0, images, prompts)
    for key in ("loss_dmd", "loss_adv", "loss_isg", "loss_fake_score", "loss_d_real", "loss_d_fake"):
        assert torch.isfinite(torch.tensor(logs[key])), (family, key)
    after = params_state(run.generator)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert run.settings["gradient_checkpointing"]  # the presets train with checkpointing on
