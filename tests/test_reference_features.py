"""The `reference` stage: teacher (and real-image) features computed once, reused by the metrics stage
only when their key matches what produced them, with the same values as computing them in place;
`fid` against real images (a folder, or COCO-5K's coco5k.jsonl)."""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from evaluate.metrics import main as metrics_main
from evaluate.reference_features import RealImagesError, main as reference_main, real_images
from measures.frechet import InceptionFeatures, fd
from evaluate.sample_folder import read_samples
from tests.test_metrics_stage import _RandomInception, sample_sets  # noqa: F401


def params_with(tmp_path, base, **eval_values):
    cfg = yaml.safe_load(base.read_text())
    cfg["eval"].update(bootstrap=0, **eval_values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


def test_reference_features_are_reused_only_when_their_key_matches(sample_sets, tmp_path):  # noqa: F811
    root, base = sample_sets
    params, _ = params_with(tmp_path, base, metrics=["fd_t_toyworld"])
    index = reference_main(["--params", str(params), "--reference", str(root / "teacher"), "--out", str(tmp_path / "ref")])
    assert list(index["files"]) == ["teacher-toy_clip"] and index["files"]["teacher-toy_clip"]["n"] == 12
    args = ["--params", str(params), "--samples", str(root / "student"), "--reference", str(root / "teacher")]
    plain = metrics_main(args + ["--out", str(tmp_path / "a")])
    reused = metrics_main(args + ["--out", str(tmp_path / "b"), "--reference-features", str(tmp_path / "ref")])
    assert reused["meta"]["reference_features"] == {"teacher-toy_clip": "reference stage file"}
    assert plain["meta"]["reference_features"] == {"teacher-toy_clip": "computed by this stage"}
    assert reused["values"]["fd_t_toyworld"] == pytest.approx(plain["values"]["fd_t_toyworld"], rel=1e-6)
    # a file made for other teacher samples is not used
    (tmp_path / "teacher2").mkdir()
    for item in (root / "teacher").iterdir():
        (tmp_path / "teacher2" / item.name).symlink_to(item)
    (tmp_path / "teacher2" / "generation.json").unlink()
    record = json.loads((root / "teacher" / "generation.json").read_text())
    (tmp_path / "teacher2" / "generation.json").write_text(json.dumps({**record, "note": "other"}))
    other = metrics_main(["--params", str(params), "--samples", str(root / "student"), "--reference",
                          str(tmp_path / "teacher2"), "--out", str(tmp_path / "c"), "--reference-features",
                          str(tmp_path / "ref")])
    assert other["meta"]["reference_features"] == {"teacher-toy_clip": "computed by this stage"}


def test_fid_against_real_images(sample_sets, tmp_path):  # noqa: F811
    root, base = sample_sets
    torch.manual_seed(0)
    weights = tmp_path / "w" / "inception-2015-12-05.pt"
    weights.parent.mkdir()
    torch.jit.script(_RandomInception()).save(str(weights))
    real = tmp_path / "real"
    real.mkdir()
    rng = np.random.default_rng(1)
    for i in range(14):  # more real images than generated ones: the first 12 are used
        Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(real / f"{i:03d}.png")
    params, cfg = params_with(tmp_path, base, metrics=["fid"], real_images=str(real))
    cfg["models"]["inception"] = str(weights)
    params.write_text(yaml.safe_dump(cfg))
    index = reference_main(["--params", str(params), "--reference", str(root / "teacher"), "--out", str(tmp_path / "ref")])
    assert list(index["files"]) == ["real-inception"]
    result = metrics_main(["--params", str(params), "--samples", str(root / "student"), "--reference",
                           str(root / "teacher"), "--out", str(tmp_path / "m"), "--reference-features",
                           str(tmp_path / "ref")])
    assert result["meta"]["reference_features"] == {"real-inception": "reference stage file"}
    extractor = InceptionFeatures({"inception": str(weights)})
    student = read_samples(root / "student")
    paths, _ = real_images(real, 12)
    expected = fd(extractor(student.load(student.group("fid"))),
                  extractor([np.asarray(Image.open(p).convert("RGB")) for p in paths]))
    assert result["values"]["fid"] == pytest.approx(expected, rel=1e-5)
    assert "not comparable with published: N = 12" in json.loads((tmp_path / "m" / "metrics.json").read_text())["flags"]["fid"]
    with pytest.raises(RealImagesError, match="has 14 images, the evaluation 20"):
        real_images(real, 20)


def test_fid_without_real_images_is_skipped_with_the_reason(sample_sets, tmp_path):  # noqa: F811
    root, base = sample_sets
    params, cfg = params_with(tmp_path, base, metrics=["fid"])
    result = metrics_main(["--params", str(params), "--samples", str(root / "student"), "--reference",
                           str(root / "teacher"), "--out", str(tmp_path / "m")])
    assert result["values"]["fid"] is None and "models.inception" in result["meta"]["skipped"]["fid"]
