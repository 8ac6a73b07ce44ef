"""`python -m train.bench_overhead` writes the DESIGN.md overhead keys from an interleaved run
(tiny sizes here: a small random toy teacher and the tiny sdxl config, one round)."""
import json

import pytest
import yaml

from configs.cli import CommandLineError
from train.bench_overhead import main


def test_overhead_json_has_the_fixed_keys(tmp_path):
    params = tmp_path / "params.yaml"
    missing = str(tmp_path / "missing")
    params.write_text(yaml.safe_dump({
        "teacher": {"layers": 1, "heads": 2, "head_dim": 8, "text_width": 16, "text_layers": 1},
        "train": {"teacher": missing, "clip": missing, "vfm_backbone": missing, "dataset": missing,
                  "batch_size": 2, "threads": 1}}))
    out = tmp_path / "overhead.json"
    result = main(["--params", str(params), "--families", "toy,sdxl", "--min-rounds", "2", "--max-rounds", "2", "--cycles", "1",
                   "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["reference_family"] == "toy" and set(saved["families"]) == {"toy", "sdxl"}
    for fam in saved["families"].values():
        assert set(fam["s_per_iter"]) == {"base", "isg", "ida"} and all(v > 0 for v in fam["s_per_iter"].values())
        rounds = fam["rounds_s_per_iter"]
        per_round = [i / b - 1 for i, b in zip(rounds["isg"], rounds["base"])]
        assert fam["rounds"] == 2 and fam["isg_overhead"] == pytest.approx(sum(per_round) / 2)
        iv = fam["isg_overhead_interval"]
        assert iv["lo"] <= fam["isg_overhead"] <= iv["hi"] and iv["rounds"] == 2
        assert set(fam["ida_overhead_generator_turn"]) == {"mean", "lo", "hi", "width", "rounds"}
    assert saved["isg_overhead"] == saved["families"]["toy"]["isg_overhead"]
    assert saved["ida_overhead"] == result["ida_overhead"]
    assert "random teacher of the configured size" in saved["families"]["toy"]["assets"]


def test_unknown_family_is_a_usage_error(tmp_path):
    with pytest.raises(CommandLineError, match=r"unknown families \['nope'\]"):
        main(["--families", "toy,nope", "--out", str(tmp_path / "o.json")])
