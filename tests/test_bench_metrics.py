"""`python -m evaluate.bench_metrics`: our FID feature path and clean-fid's on the same PNG folder and
the same (random, real-architecture) Inception weights give identical features; the JSON carries the
throughput ratio of medians."""
import json

import pytest

from evaluate.bench_metrics import main


def test_bench_metrics_reports_ratio_and_identical_features(tmp_path):
    out = tmp_path / "metrics.json"
    result = main(["--images", "4", "--rounds", "1", "--batch-size", "4", "--threads", "1",
                   "--samples", str(tmp_path / "none"), "--reference", str(tmp_path / "none"), "--out", str(out)])
    saved = json.loads(out.read_text())
    fid = saved["fid_feature_path"]
    assert fid["features_identical"] is True
    assert fid["ratio"] == pytest.approx(fid["images_per_s"]["ours"] / fid["images_per_s"]["clean_fid"])
    assert "skipped" in saved["suite"] and result["threads"] == 1
