"""Generation and the metric suite on the shipped toy teacher and a distilled-student stand-in:
aligned prompts and seeds, resume, metric values where ToyWorld weights exist and skipped reasons
where real weights are absent, clear errors for bad inputs, and parity of the Inception and LPIPS
paths with the official clean-fid and lpips code on the same (random) weights."""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from evaluate.intervals import load_samples
from evaluate.generate import main as generate_main
from evaluate.metrics import main as metrics_main
from evaluate.sample_folder import SampleFolderError, read_samples
from measures.weights import MissingWeights

SMALL = {"fid_prompts": 12, "diversity_prompts": 2, "diversity_samples": 3, "batch_size": 16, "teacher_steps": 2,
         "student_steps": 2}


@pytest.fixture(scope="module")
def sample_sets(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("samples")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"eval": SMALL, "models": {"toy_clip": "models/toy/clip"}}))
    generate_main(["--params", str(params), "--out", str(root / "teacher")])
    # the teacher's own transformer stands in for a student folder (same diffusers layout)
    generate_main(["--params", str(params), "--student", "models/toy/teacher", "--out", str(root / "student")])
    return root, params


def test_generate_layout_and_aligned_seeds(sample_sets):
    root, _ = sample_sets
    t, s = read_samples(root / "teacher"), read_samples(root / "student")
    assert len(t.rows) == 12 + 2 * 3 and t.key() == s.key()
    assert len(t.group("fid")) == 12 and len(t.group("diversity")) == 6
    assert (root / "teacher" / "13" / "2.png").is_file()
    assert s.rows[0]["steps"] == 2 and s.rows[0]["sampler"] == "stochastic" and t.rows[0]["sampler"] == "euler"
    assert len({r["seed"] for r in t.rows}) == len(t.rows)


def test_generate_student_sampler_override_for_the_euler_rows(sample_sets, tmp_path):
    """`--student-sampler euler` (dvc.yaml generate_euler) samples the student with Euler on the same
    prompts and seeds; the teacher has no such choice."""
    from configs.cli import CommandLineError

    root, params = sample_sets
    generate_main(["--params", str(params), "--student", "models/toy/teacher", "--student-sampler", "euler",
                   "--out", str(tmp_path / "euler")])
    e, s = read_samples(tmp_path / "euler"), read_samples(root / "student")
    assert e.key() == s.key() and {r["sampler"] for r in e.rows} == {"euler"} and e.rows[0]["steps"] == 2
    with pytest.raises(CommandLineError, match="--student-sampler needs --student"):
        generate_main(["--params", str(params), "--student-sampler", "euler", "--out", str(tmp_path / "t")])


def test_generate_resumes_and_restarts_on_other_settings(sample_sets, tmp_path):
    root, params = sample_sets
    out = tmp_path / "t"
    generate_main(["--params", str(params), "--out", str(out)])
    (out / "3" / "0.png").unlink()
    stamp = (out / "4" / "0.png").stat().st_mtime_ns
    generate_main(["--params", str(params), "--out", str(out)])
    assert (out / "3" / "0.png").is_file() and (out / "4" / "0.png").stat().st_mtime_ns == stamp
    other = tmp_path / "p.yaml"
    other.write_text(yaml.safe_dump({"eval": {**SMALL, "teacher_steps": 3}}))
    generate_main(["--params", str(other), "--out", str(out)])
    assert read_samples(out).rows[0]["steps"] == 3 and (out / "4" / "0.png").stat().st_mtime_ns != stamp
    assert len(list((tmp_path / "t.superseded").glob("*/4/0.png"))) == 1  # the earlier images moved aside, kept


def test_metrics_toy_values_and_skipped_reasons(sample_sets, tmp_path):
    root, params = sample_sets
    result = metrics_main(["--params", str(params), "--samples", str(root / "student"),
                           "--reference", str(root / "teacher"), "--out", str(tmp_path / "m")])
    values = json.loads((tmp_path / "m" / "metrics.json").read_text())
    meta = json.loads((tmp_path / "m" / "metrics.meta.json").read_text())
    assert values.pop("flags") == {} and values == result["values"]  # nothing Inception-based ran: no flags
    for name in ("fd_t_toyworld", "clip_score", "clip_diversity"):
        assert isinstance(values[name], float) and np.isfinite(values[name])
    assert 0 <= values["clip_score"] <= 1 and values["fd_t_toyworld"] >= 0  # cosine: the paper's scale
    for name in ("fid_t", "patch_fid_t", "kid_t", "fd_t_dinov2", "lpips_diversity", "hpsv2", "pickscore", "imagereward", "aesv2"):
        assert values[name] is None and meta["skipped"][name]
    assert "models.inception" in meta["skipped"]["fid_t"]
    assert meta["n_images"]["fd_t_toyworld"] == 12 and meta["n_images"]["clip_diversity"] == 6
    assert "toy CLIP" in meta["features"]["clip_score"] and "cosine scale" in meta["features"]["clip_score"]
    assert meta["clip_score_scale"] == "cosine"
    samples = load_samples(tmp_path / "m" / "per_prompt.npz")  # what each value was computed from
    for name in ("fd_t_toyworld", "clip_score", "clip_diversity"):
        assert samples[name].value() == pytest.approx(values[name])
        lo, hi = meta["intervals"][name]
        assert lo <= values[name] <= hi
    assert meta["bootstrap"]["draws"] == 200 and meta["bootstrap"]["unit"] == "prompt"


def test_fd_of_a_set_with_itself_is_zero(sample_sets, tmp_path):
    root, params = sample_sets
    metrics_main(["--params", str(params), "--samples", str(root / "teacher"), "--reference", str(root / "teacher"),
                  "--out", str(tmp_path / "m")])
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["fd_t_toyworld"] == pytest.approx(0, abs=1e-3)


def test_real_family_missing_weights_stop_before_work(sample_sets, tmp_path):
    root, params = sample_sets
    with pytest.raises(MissingWeights, match="models.inception"):
        metrics_main(["--params", str(params), "--family", "sd3", "--samples", str(root / "student"),
                      "--reference", str(root / "teacher"), "--out", str(tmp_path / "m")])
    assert not (tmp_path / "m").exists()


def test_bad_sample_folders(sample_sets, tmp_path):
    root, params = sample_sets
    with pytest.raises(SampleFolderError, match="does not exist"):
        read_samples(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SampleFolderError, match="no samples.jsonl"):
        read_samples(tmp_path / "empty")
    (tmp_path / "empty" / "samples.jsonl").write_text("")
    with pytest.raises(SampleFolderError, match="empty"):
        read_samples(tmp_path / "empty")
    import shutil
    shutil.copytree(root / "student", tmp_path / "mixed")
    Image.new("RGB", (16, 16)).save(tmp_path / "mixed" / "1" / "0.png")
    with pytest.raises(SampleFolderError, match="mixed image sizes"):
        read_samples(tmp_path / "mixed").load()
    with pytest.raises(SampleFolderError, match=r"image of another size \(.*mixed/1/0.png\)"):
        read_samples(tmp_path / "mixed").verify()  # what the metrics stage runs before any model loads
    (tmp_path / "mixed" / "1" / "0.png").write_bytes(b"not a png")
    with pytest.raises(SampleFolderError, match="unreadable"):
        read_samples(tmp_path / "mixed").load()
    with pytest.raises(SampleFolderError, match=r"unreadable image \(.*mixed/1/0.png\)"):
        read_samples(tmp_path / "mixed").verify()
    shutil.copytree(root / "student", tmp_path / "short")
    lines = (tmp_path / "short" / "samples.jsonl").read_text().splitlines()
    (tmp_path / "short" / "samples.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(SampleFolderError, match="same prompts and seeds"):
        metrics_main(["--params", str(params), "--samples", str(tmp_path / "short"),
                      "--reference", str(root / "teacher"), "--out", str(tmp_path / "m")])


def test_student_folder_in_wrong_format(sample_sets, tmp_path):
    _, params = sample_sets
    (tmp_path / "student").mkdir()
    with pytest.raises(Exception, match="no student checkpoint"):
        generate_main(["--params", str(params), "--student", str(tmp_path / "student"), "--out", str(tmp_path / "o")])


# ---- parity with the official packages on the same random weights ----------------------------------
class _Layers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2048, 8, stride=8)

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 1)


class _RandomInception(torch.nn.Module):
    """Same TorchScript interface as inception-2015-12-05.pt (`.layers`, forward(x, return_features))."""

    def __init__(self):
        super().__init__()
        self.layers = _Layers()

    def forward(self, x, return_features: bool = False):
        return self.layers(x)


def test_inception_path_matches_clean_fid(tmp_path):
    from cleanfid import fid as cf
    from cleanfid.inception_torchscript import InceptionV3W

    from measures.frechet import InceptionFeatures, feature_stats

    torch.manual_seed(0)
    weights = tmp_path / "w" / "inception-2015-12-05.pt"
    weights.parent.mkdir()
    torch.jit.script(_RandomInception()).save(str(weights))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 32, 40, 3), dtype=np.uint8)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i}.png")
    official_model = InceptionV3W(str(weights.parent), download=False).eval()
    official = cf.get_folder_features(str(folder), lambda x: official_model(x), num_workers=0, batch_size=2,
                                      device=torch.device("cpu"), mode="clean", verbose=False)
    ours = InceptionFeatures({"inception": str(weights)})(images, batch_size=3)
    order = sorted(range(5), key=lambda i: str(folder / f"{i}.png"))  # clean-fid sorts the file names
    np.testing.assert_allclose(ours[order], official, rtol=1e-5, atol=1e-5)
    mu, sigma = feature_stats(official)
    np.testing.assert_allclose(mu, np.mean(official, axis=0))
    np.testing.assert_allclose(sigma, np.cov(official, rowvar=False))


def test_lpips_path_matches_the_lpips_package(tmp_path, monkeypatch):
    import lpips
    import torchvision

    from evaluate.diversity import LpipsDiversity

    torch.manual_seed(0)
    state = torchvision.models.alexnet().state_dict()
    # the official path: lpips builds torchvision's pretrained AlexNet, which reads the hub cache
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    official = lpips.LPIPS(net="alex", verbose=False).eval()
    ours = LpipsDiversity({"lpips_alexnet": str(cache / "alexnet-owt-7be5be79.pth")})
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        expected = np.mean([float(official(x[i:i + 1], x[j:j + 1])) for i, j in ((0, 1), (0, 2), (1, 2))])
    assert ours.prompt_diversity(images) == pytest.approx(expected, abs=1e-5)


def test_clip_score_scales_differ_by_exactly_100(sample_sets, tmp_path):
    root, params = sample_sets
    other = tmp_path / "params.yaml"
    cfg = yaml.safe_load(params.read_text())
    cfg["eval"].update(metrics=["clip_score"], clip_score_scale="torchmetrics", bootstrap=0)
    other.write_text(yaml.safe_dump(cfg))
    cosine = metrics_main(["--params", str(params), "--samples", str(root / "student"),
                           "--reference", str(root / "teacher"), "--out", str(tmp_path / "c")])["values"]
    scaled = metrics_main(["--params", str(other), "--samples", str(root / "student"),
                           "--reference", str(root / "teacher"), "--out", str(tmp_path / "t")])
    assert scaled["values"]["clip_score"] == pytest.approx(100 * cosine["clip_score"], rel=1e-12)
    assert "torchmetrics scale (100 x cosine)" in scaled["meta"]["features"]["clip_score"]


def test_inception_metrics_below_2048_images_are_flagged_and_kid_is_clean_fids(sample_sets, tmp_path):
    """FID-T and KID on 12 images through the stage (random Inception TorchScript): both flagged "not
    comparable with published" in metrics.json; KID equals clean-fid's kernel_distance under the same
    seed; the Inception features are shared (one extraction per side)."""
    from cleanfid import fid as cf

    from measures import frechet

    root, params = sample_sets
    torch.manual_seed(0)
    weights = tmp_path / "w" / "inception-2015-12-05.pt"
    weights.parent.mkdir()
    torch.jit.script(_RandomInception()).save(str(weights))
    cfg = yaml.safe_load(params.read_text())
    cfg["eval"].update(metrics=["fid_t", "kid_t"], bootstrap=0)
    cfg["models"]["inception"] = str(weights)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(cfg))
    calls = []
    original = frechet.InceptionFeatures.__call__

    def counted(self, images, batch_size=64):
        calls.append(len(images))
        return original(self, images, batch_size)

    frechet.InceptionFeatures.__call__ = counted
    try:
        result = metrics_main(["--params", str(tmp_path / "params.yaml"), "--samples", str(root / "student"),
                               "--reference", str(root / "teacher"), "--out", str(tmp_path / "m")])
    finally:
        frechet.InceptionFeatures.__call__ = original
    assert calls == [12, 12]  # student and teacher once, for both metrics
    flags = json.loads((tmp_path / "m" / "metrics.json").read_text())["flags"]
    assert set(flags) == {"fid_t", "kid_t"} and all("not comparable with published: N = 12 < 2048" in f
                                                     for f in flags.values())
    samples_s = frechet.InceptionFeatures({"inception": str(weights)})(read_samples(root / "student").load(
        read_samples(root / "student").group("fid")))
    samples_t = frechet.InceptionFeatures({"inception": str(weights)})(read_samples(root / "teacher").load(
        read_samples(root / "teacher").group("fid")))
    np.random.seed(0)
    assert result["values"]["kid_t"] == pytest.approx(cf.kernel_distance(samples_s, samples_t), rel=1e-6)


def test_frechet_imaginary_component_is_a_clear_error(monkeypatch):
    from measures import frechet

    def failing(*args, **kwargs):
        raise ValueError("Imaginary component 0.31")

    monkeypatch.setattr(frechet, "frechet_distance", failing)
    rng = np.random.default_rng(0)
    with pytest.raises(frechet.FrechetError, match=r"N = 12 images of 64-d features; N < 64 .*eval.fid_prompts"):
        frechet.fd(rng.normal(size=(12, 64)), rng.normal(size=(12, 64)))
    assert issubclass(frechet.FrechetError, ValueError)
