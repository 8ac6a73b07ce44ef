"""`python -m train.bench_loop`: before/after built from one seed give bitwise the same weights, and the
file carries the speed ratio and the limit ratio (tiny sizes: a small random toy teacher and the tiny
sdxl config, one round)."""
import json

import yaml

from train.bench_loop import main


def test_loop_benchmark_same_results_and_keys(tmp_path):
    params = tmp_path / "params.yaml"
    missing = str(tmp_path / "missing")
    params.write_text(yaml.safe_dump({
        "teacher": {"layers": 1, "heads": 2, "head_dim": 8, "text_width": 16, "text_layers": 1},
        "train": {"teacher": missing, "clip": missing, "vfm_backbone": missing, "dataset": missing,
                  "batch_size": 2, "threads": 1}}))
    out = tmp_path / "loop.json"
    main(["--params", str(params), "--families", "toy,sdxl", "--cycles", "1", "--rounds", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert set(saved["families"]) == {"toy", "sdxl"}
    for fam in saved["families"].values():
        assert fam["same_results"] and fam["max_abs_weight_diff"] == 0.0
        assert fam["speedup"] > 0 and fam["limit_ratio"] >= 1.0
        assert fam["passes_calls_per_iter"]["backward"] > 0
        assert fam["passes_calls_per_iter"]["text encoders"] == 1.0
