"""`python -m evaluate.bench_sampling` writes the DESIGN.md `speedup` key from an interleaved run
(the shipped toy teacher; its own folder stands in for a student)."""
import json

import pytest

from evaluate.bench_sampling import main


def test_sampling_bench_reports_speedup_of_medians(tmp_path):
    out = tmp_path / "sampling.json"
    result = main(["--student", "models/toy/teacher", "--rounds", "1", "--images", "2", "--batch-size", "2",
                   "--threads", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    rates = saved["images_per_s"]
    assert saved["speedup"] == pytest.approx(rates["student"] / rates["teacher"])
    assert saved["teacher"]["network_calls_per_image"] == 40 and saved["student"]["network_calls_per_image"] == 4
    assert len(saved["images_per_s_rounds"]["teacher"]) == 1


def test_missing_student_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="no student checkpoint"):
        main(["--student", str(tmp_path / "nope"), "--rounds", "1", "--images", "2", "--out", str(tmp_path / "s.json")])
