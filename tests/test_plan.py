"""The memory planner (`python -m train.plan`): real published configs on the meta device, per-rank
memory by part, the paper setups fitting on 8 x 80 GB with the released options, and advice when a
setup does not fit. Its activation estimate against measured CPU memory is a slow test."""
import json

import pytest

from train.plan import main, parameter_count, build_meta, plan_to_fit

PARTS = {"generator", "fake_score", "ema", "gradients", "optimizer_states", "fsdp_buffers", "teacher", "text_encoders",
         "vae", "discriminator", "activations", "total"}


def test_real_configs_have_the_published_sizes():
    assert round(parameter_count(build_meta("SD3Transformer2DModel", "sd35_large_transformer.json")) / 1e9, 2) == 8.06
    assert round(parameter_count(build_meta("SD3Transformer2DModel", "sd35_medium_transformer.json")) / 1e9, 2) == 2.24
    assert round(parameter_count(build_meta("FluxTransformer2DModel", "flux_dev_transformer.json")) / 1e9, 1) == 11.9
    assert round(parameter_count(build_meta("UNet2DConditionModel", "sdxl_unet.json")) / 1e9, 2) == 2.57


def test_cli_prints_and_writes_the_plan(tmp_path, capsys):
    [entry] = main(["--preset", "sd35_large", "--gpus", "8", "--gpu-memory-gb", "80", "--json", str(tmp_path / "p.json")])
    assert "fits in 72.0 GB" in capsys.readouterr().out
    saved = json.loads((tmp_path / "p.json").read_text())["setups"][0]
    assert saved == json.loads(json.dumps(entry))
    assert {"preset", "gpus", "gpu_memory_gb", "per_rank_gb", "fits", "options"} <= set(saved)
    assert set(saved["per_rank_gb"]) == PARTS and saved["fits"]
    assert saved["options"]["optimizer"] == "adamw8bit" and saved["options"]["shard_teacher"]  # released options
    parts = saved["per_rank_gb"]
    assert abs(sum(v for k, v in parts.items() if k != "total") - parts["total"]) < 0.05


def test_a_setup_that_does_not_fit_says_what_would():
    entry = plan_to_fit("flux", 8, 80, shard_teacher=False, optimizer="adamw")
    assert not entry["fits"] and entry["to_fit"]  # e.g. the teacher sharded and 8-bit AdamW, as released
    one_gpu = plan_to_fit("flux", 1, 80)
    assert not one_gpu["fits"] and one_gpu["per_rank_gb"]["teacher"] > 20  # 12B bf16 teacher alone


def test_committed_plan_json_has_the_three_paper_setups_fitting():
    from pathlib import Path

    plan = json.loads((Path(__file__).resolve().parent.parent / "results" / "bench" / "plan.json").read_text())
    setups = {(e["preset"], e["gpus"], e["gpu_memory_gb"]): e for e in plan["setups"]}
    for key in [("sd35_large", 8, 80), ("flux", 8, 80), ("sdxl", 8, 80)]:
        assert setups[key]["fits"], key
    assert all(0.8 <= row["ratio"] <= 1.25 for row in plan["validation"])


@pytest.mark.slow
def test_activation_estimate_matches_measured_cpu_memory():
    from train.plan_validation import validate

    for row in validate():
        assert 0.8 <= row["ratio"] <= 1.25, row
