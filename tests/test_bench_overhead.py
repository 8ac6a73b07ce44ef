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
    result = main(["--params", str(params), "--families", "toy,sdxl", "--min-rounds", "3", "--max-rounds", "3",
                   "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["reference_family"] == "toy" and set(saved["families"]) == {"toy", "sdxl"}
    for fam in saved["families"].values():
        assert set(fam["s_per_iter"]) == {"base", "isg", "ida"} and all(v > 0 for v in fam["s_per_iter"].values())
        rounds = fam["rounds_s"]
        assert fam["rounds"] == len(rounds) == 3
        for r in rounds:  # one TTUR cycle per round, one generator turn in it
            assert len(r["base"]) == len(r["isg"]) == len(r["generator"]) == fam["ttur"] and sum(r["generator"]) == 1
        added = sum(t - b for r in rounds for t, b, g in zip(r["isg"], r["base"], r["generator"]) if g)
        assert fam["isg_overhead"] == pytest.approx(added / sum(sum(r["base"]) for r in rounds), abs=1e-4)
        iv = fam["isg_overhead_interval"]
        assert iv["lo"] <= fam["isg_overhead"] <= iv["hi"] and iv["rounds"] == 3
        assert set(fam["ida_overhead_generator_turn"]) == {"mean", "lo", "hi", "width", "rounds"}
        assert set(fam["ida_other_iterations"]) == {"mean", "lo", "hi", "width", "rounds"}
        every = sum(t - b for r in rounds for t, b in zip(r["isg"], r["base"]))
        assert fam["isg_overhead_all_iterations"]["mean"] == pytest.approx(every / sum(sum(r["base"]) for r in rounds),
                                                                           abs=1e-4)  # rounded to 1e-6 s in the file
        assert set(fam["other_iterations_contain_zero"]) == {"isg", "ida"}
    assert saved["isg_overhead"] == saved["families"]["toy"]["isg_overhead"]
    assert saved["ida_overhead"] == result["ida_overhead"]
    assert "random teacher of the configured size" in saved["families"]["toy"]["assets"]


def test_unknown_family_is_a_usage_error(tmp_path):
    with pytest.raises(CommandLineError, match=r"unknown families \['nope'\]"):
        main(["--families", "toy,nope", "--out", str(tmp_path / "o.json")])


def test_overhead_is_the_paired_cost_on_generator_turns():
    """A component that adds 0.1 s to every generator turn of a 1 s-per-iteration loop (TTUR 5) costs
    2 % per iteration and 10 % per turn, whatever the timing noise on the other iterations; that noise
    shows in `*_other_iterations`, around 0, and the interval narrows with more rounds."""
    import numpy as np

    from train.bench_overhead import overhead_estimates

    rng = np.random.default_rng(0)

    def cycles(n):
        out = []
        for _ in range(n):
            drift = rng.uniform(0.7, 1.3)  # the machine's speed changes from cycle to cycle
            base = list(drift * (1 + 0.01 * rng.standard_normal(5)))
            isg = [b + (0.1 * drift if k == 0 else 0.0) + 0.01 * rng.standard_normal() for k, b in enumerate(base)]
            out.append({"base": base, "isg": isg, "ida": list(base), "generator": [True, False, False, False, False]})
        return out

    few, many = overhead_estimates(cycles(20)), overhead_estimates(cycles(400))
    for est in (few, many):
        assert est["isg_iteration"]["lo"] < 0.02 < est["isg_iteration"]["hi"]
        assert est["isg_generator_turn"]["lo"] < 0.10 < est["isg_generator_turn"]["hi"]
        assert est["isg_other_iterations"]["lo"] < 0 < est["isg_other_iterations"]["hi"]
        assert est["ida_iteration"]["mean"] == 0.0
    assert many["isg_iteration"]["width"] < few["isg_iteration"]["width"] / 2


def test_update_re_measures_the_named_families_and_keeps_the_others(tmp_path):
    out = tmp_path / "overhead.json"
    main(["--families", "sdxl", "--min-rounds", "2", "--max-rounds", "2", "--out", str(out)])
    earlier = json.loads(out.read_text())
    threads = earlier["families"]["sdxl"]["torch_threads"]
    earlier["families"] = {"sdxl": {**earlier["families"]["sdxl"], "marker": "old"},
                           "toy": {"isg_overhead": 0.5, "ida_overhead": 0.25, "marker": "kept", "torch_threads": threads}}
    earlier["skipped"] = {"flux": "earlier reason"}
    out.write_text(json.dumps(earlier))
    main(["--families", "sdxl", "--min-rounds", "2", "--max-rounds", "2", "--out", str(out), "--update"])
    saved = json.loads(out.read_text())
    assert list(saved["families"]) == ["sdxl", "toy"]  # the earlier order, the re-measured one in its place
    assert saved["families"]["toy"]["marker"] == "kept" and "marker" not in saved["families"]["sdxl"]
    assert saved["skipped"] == {"flux": "earlier reason"}
    assert saved["reference_family"] == "toy" and saved["isg_overhead"] == 0.5 and saved["ida_overhead"] == 0.25

    for change, match in (({"torch_threads": threads + 1}, "another torch thread count"),
                          ({"method": "blocks"}, "another method")):  # measured otherwise: never mixed
        other = {**earlier, **({"method": change["method"]} if "method" in change else {}),
                 "families": {**earlier["families"], "toy": {**earlier["families"]["toy"], **change}}}
        out.write_text(json.dumps(other))
        with pytest.raises(CommandLineError, match=match):
            main(["--families", "sdxl", "--out", str(out), "--update"])
        assert json.loads(out.read_text()) == other
