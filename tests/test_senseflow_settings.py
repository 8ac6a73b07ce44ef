"""`train` params: presets carry the released per-family values, precedence, overrides, errors."""
import re
from pathlib import Path

import pytest
import yaml

from configs.params import ParamsError
from train.settings import DEFAULTS, PRESET_DIR, PROVENANCE, load_preset, load_settings, parse_overrides, resolve

ROOT = Path(__file__).resolve().parent.parent


def test_every_preset_is_complete_and_valid():
    names = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    assert names == ["flux", "sd35_large", "sd35_medium", "sdxl", "toy"]
    for name in names:
        preset = load_preset(name)
        assert set(preset) <= set(DEFAULTS)
        resolved = resolve({"preset": name, "family": preset["family"], "teacher": "t", "dataset": "d",
                            "clip": "c", "vfm_backbone": "v"})
        assert resolved["backsim_prob"] == 0.5


@pytest.mark.parametrize("name, expected", [
    ("sd35_medium", dict(family="sd3", ttur=10, ida=True, ida_lambda=0.98, real_guidance=[2.0, 8.0], isg_weight=0.5,
                         isg_guidance=[2.0, 4.0], isg_margin=50, adv_weight=0.1, lr_generator=1e-6, dmd_t_shift=3.0)),
    ("sd35_large", dict(family="sd3", ttur=5, ida=True, ida_lambda=0.97, real_guidance=[3.0, 10.0], isg_weight=1.0,
                        isg_guidance=5.0, isg_margin=50, adv_weight=0.1, lr_generator=1e-6)),
    ("flux", dict(family="flux", ttur=5, ida=True, ida_lambda=0.97, real_guidance=[1.0, 8.0], isg_weight=1.0,
                  isg_guidance=[1.0, 8.0], isg_margin=20, adv_weight=2.0, adv_time_weight="one_minus_sigma_sq",
                  dmd_t_sampling="training", lr_generator=1e-5, warmup_steps=500, warmup_start=0.5)),
    ("sdxl", dict(family="sdxl", ttur=5, ida=False, real_guidance=8.0, isg_weight=0.2, isg_guidance=[3.0, 15.0],
                  isg_margin=20, adv_weight=0.5, adv_time_weight="sqrt_alphabar", lr_generator=1e-6)),
])
def test_presets_hold_the_released_values(name, expected):
    preset = load_preset(name)
    for key, value in expected.items():
        assert preset[key] == value, (name, key)
    assert preset["isg_loss"] == "pseudo_huber" and preset["grad_clip"] == 1.0 and preset["weight_decay"] == 0.0
    assert preset["betas"] == [0.9, 0.999] and preset["num_steps"] == 4


def test_precedence_defaults_preset_explicit_variant_override(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "train": {"preset": "flux", "family": "flux", "teacher": "t", "dataset": "d", "clip": "c",
                  "vfm_backbone": "v", "adv_weight": 0.7, "ida_lambda": None},
        "variants": {"wo_isg": {"isg": False, "adv_weight": 0.3}}}))
    s = load_settings(params)
    assert s["ttur"] == 5 and s["real_guidance"] == [1.0, 8.0]  # preset
    assert s["adv_weight"] == 0.7  # explicit beats preset
    assert s["ida_lambda"] == 0.97  # null falls through to the preset
    assert s["eps"] == DEFAULTS["eps"]
    s = load_settings(params, "wo_isg", ["train.adv_weight=0.2", "ttur=3"])
    assert (s["isg"], s["adv_weight"], s["ttur"]) == (False, 0.2, 3)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ParamsError, match=r"train.idaa\): unknown key \(did you mean 'ida'\?\)"):
        resolve({"idaa": True})
    with pytest.raises(ParamsError, match=r"\(-S: train.bogus\): unknown key"):
        parse_overrides(["train.bogus=1"])
    assert parse_overrides(["train.lr_generator=1e-4"])["lr_generator"] == 1e-4  # YAML reads 1e-4 as text
    with pytest.raises(ParamsError, match=r"train.steps\): need an integer >= 1, got 'abc'"):
        parse_overrides(["steps=abc"])
    with pytest.raises(ParamsError, match="does not match preset"):
        resolve({"family": "toy", "preset": "flux", "teacher": "t", "dataset": "d"})
    with pytest.raises(ParamsError, match="no file"):
        resolve({"preset": "nope"})
    with pytest.raises(ParamsError, match="real_guidance"):
        resolve({"real_guidance": [5, 2]})
    with pytest.raises(ParamsError, match=r"train.teacher\): not set"):
        resolve({"preset": "sdxl", "family": "sdxl", "dataset": "d", "clip": "c", "vfm_backbone": "v"})
    with pytest.raises(ParamsError, match="variant"):
        p = tmp_path / "p.yaml"
        p.write_text("train: {}\n")
        load_settings(p, "missing")


def test_params_yaml_train_section_has_the_fixed_toggles():
    text = (ROOT / "params.yaml").read_text()
    section = text.split("\ntrain:", 1)[1]
    for key in ("ida", "isg", "vfm", "ttur", "ida_lambda", "adv_weight", "family", "preset", "teacher", "dataset",
                "launch"):
        assert re.search(rf"^  {key}: ", section, re.M), key
    s = load_settings(ROOT / "params.yaml")
    assert s["family"] == "toy" and s["ida"] and s["isg"] and s["vfm"]
    for name in yaml.safe_load(text)["variants"]:
        load_settings(ROOT / "params.yaml", name)


@pytest.mark.parametrize("name", ["toy", "sd35_medium", "sd35_large", "flux", "sdxl"])
def test_params_yaml_resolves_every_preset_exactly(tmp_path, name):
    """README's real-family recipe: change only family, preset and the paths in params.yaml, and every
    value is the preset's (the released one); only the paths are reported as differing from it."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    preset = load_preset(name)
    paths = {} if name == "toy" else {"teacher": "/w/teacher", "dataset": "/d/dataset.json", "clip": "/w/clip",
                                      "vfm_backbone": "/w/dinov2"}
    params["train"].update(family=preset["family"], preset=name, **paths)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    s = load_settings(tmp_path / "params.yaml")
    expected = {**DEFAULTS, **preset, **paths, "preset": name}
    assert {k: s[k] for k in expected} == expected
    assert set(s[PROVENANCE]) == set(paths)
    assert all(where == {"value": paths[k], "preset": preset.get(k), "by": "params.yaml train"}
               for k, where in s[PROVENANCE].items())


def test_provenance_names_where_each_difference_came_from(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {"ttur": 7}, "variants": {"wo_ida": {"ida": False}}}))
    s = load_settings(params, "wo_ida", ["train.adv_weight=0.5"])
    assert s[PROVENANCE] == {"ttur": {"value": 7, "preset": 5, "by": "params.yaml train"},
                             "ida": {"value": False, "preset": True, "by": "variant"},
                             "adv_weight": {"value": 0.5, "preset": 0.1, "by": "-S"}}
