"""Provenance with every number: the metrics stage records N, the prompt set's hash, the samplers and
guidance of student and teacher, every model file's sha256 and the package versions; the report
collects the records (results/provenance.json, `provenance` ids in summary.csv) and the dashboard
lists them."""
import hashlib
import json

import pytest
import yaml

from dashboards import results as R
from dashboards.report import main as report_main
from protocols.provenance import file_sha256, model_hashes, prompt_set_hash, provenance
from tests.test_metrics_stage import sample_sets  # noqa: F401  (the module-scoped generated sample folders)
from evaluate.metrics import main as metrics_main


def test_metrics_stage_records_what_its_numbers_rest_on(sample_sets, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("SENSEFLOW_CACHE", str(tmp_path / "cache"))
    root, params = sample_sets
    cfg = yaml.safe_load(params.read_text())
    cfg["eval"].update(metrics=["clip_score"], bootstrap=0)
    cfg["train"] = {"teacher": "models/toy/teacher"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(cfg))
    result = metrics_main(["--params", str(tmp_path / "params.yaml"), "--samples", str(root / "student"),
                           "--reference", str(root / "teacher"), "--out", str(tmp_path / "m")])
    record = result["meta"]["provenance"]
    assert record["n_images"] == {"clip_score": 12}
    prompts = [json.loads(line)["prompt"] for line in (root / "student" / "samples.jsonl").read_text().splitlines()
               if json.loads(line)["group"] == "fid"]
    assert record["prompt_set"] == {"n": 12, "sha256": prompt_set_hash(prompts)}
    assert (record["student"]["steps"], record["teacher"]["steps"], record["teacher"]["guidance_scale"]) == (2, 2, 2.0)
    clip_config = "models/toy/clip/config.json"
    assert record["models"]["toy_clip"]["files"]["config.json"] == hashlib.sha256(open(clip_config, "rb").read()).hexdigest()
    assert "transformer/config.json" in record["models"]["teacher"]["files"]
    assert record["packages"]["torch"] and len(record["id"]) == 12
    assert (tmp_path / "cache" / "sha256.json").is_file()  # hashed once, then read from the cache


def test_sha256_cache_is_keyed_by_size_and_mtime(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    cache = {}
    assert file_sha256(f, cache) == hashlib.sha256(b"abc").hexdigest() and len(cache) == 1
    f.write_bytes(b"abcd")  # new size: a new key, hashed again
    assert file_sha256(f, cache) == hashlib.sha256(b"abcd").hexdigest() and len(cache) == 2
    assert model_hashes({"gone": str(tmp_path / "none")}) == {"gone": {"path": str(tmp_path / "none"), "missing": True}}
    a, b = provenance(x=1), provenance(x=2)
    assert a["id"] != b["id"] and provenance(x=1)["id"] == a["id"]


def test_report_and_dashboard_carry_the_records(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 0, "train": {"family": "toy", "preset": "toy"}, "variants": {"full": {}},
                                      "eval": {"bootstrap": 0}}))
    res = tmp_path / "results"
    record = provenance(n_images={"clip_score": 10}, prompt_set={"n": 10, "sha256": "ab" * 32},
                        student={"sampler": "stochastic", "steps": 4, "guidance_scale": 1.0},
                        teacher={"sampler": "euler", "steps": 20, "guidance_scale": 2.0},
                        features={"clip_score": "toy CLIP"}, protocol="custom", subset={},
                        models={"toy_clip": {"path": "m", "files": {"config.json": "cd" * 32}}})
    (res / "metrics" / "full-0").mkdir(parents=True)
    (res / "metrics" / "full-0" / "metrics.json").write_text(json.dumps({"clip_score": 0.3}))
    (res / "metrics" / "full-0" / "metrics.meta.json").write_text(json.dumps({"provenance": record}))
    (res / "geneval" / "full-0").mkdir(parents=True)
    (res / "geneval" / "full-0" / "summary.json").write_text(json.dumps({"geneval_overall": 0.5, "provenance_id": "x1"}))
    (res / "geneval" / "full-0" / "provenance.json").write_text(json.dumps({"id": "x1", "detector": "oracle"}))
    report_main(["--params", str(params), "--results", str(res), "--out", str(res)])
    import pandas as pd

    table = pd.read_csv(res / "summary.csv")
    mine = table[table.variant == "full"].set_index("metric")
    assert mine.loc["clip_score", "provenance"] == record["id"] and mine.loc["geneval_overall", "provenance"] == "x1"
    saved = json.loads((res / "provenance.json").read_text())
    assert saved["full-0"]["metrics"]["id"] == record["id"] and saved["full-0"]["geneval"]["detector"] == "oracle"
    view = R.provenance_table(R.Locations(res, tmp_path / "runs", params))
    row = view[view.stage == "metrics"].iloc[0]
    assert row["prompt set"] == "10 prompts, sha256 abababababab"
    assert row["sampling"] == "stochastic 4 steps, CFG 1.0" and row["teacher reference"] == "euler 20 steps, CFG 2.0"
    assert row["models (sha256)"] == "toy_clip: config.json cdcdcdcdcdcd" and "torch" in row["packages"]
    with pytest.raises(KeyError):
        view.set_index("stage").loc["compbench"]


def test_a_multi_seed_row_keeps_every_seeds_warning_and_record(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seeds": [0, 1], "train": {"family": "toy", "preset": "toy"},
                                      "variants": {"full": {}}, "eval": {"bootstrap": 0}}))
    res = tmp_path / "results"
    for seed, subset in ((0, {}), (1, {"fid_prompts": 50})):
        folder = res / "metrics" / f"full-{seed}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"clip_score": 0.3 + seed / 100}))
        (folder / "metrics.meta.json").write_text(json.dumps({"subset": subset, "provenance": {"id": f"p{seed}"}}))
    report_main(["--params", str(params), "--results", str(res), "--out", str(tmp_path / "out")])
    import pandas as pd

    row = pd.read_csv(tmp_path / "out" / "summary.csv").set_index(["variant", "metric"]).loc[("full", "clip_score")]
    assert row.protocol_warning == "subset: fid_prompts=50" and row.provenance == "p0; p1"
