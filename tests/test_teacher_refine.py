"""Toy teacher refinement stage: continues a pretrained teacher with prompt families re-weighted."""
import json

import pytest
import torch

from backbones.toy import ToyBackbone
from toyworld.dataset import read_tags, write_toy_dataset
from toyworld.grammar import TASKS
from configs.params import ParamsError
from train import teacher, teacher_refine

TINY = {"layers": 1, "heads": 2, "head_dim": 8, "text_width": 16, "text_layers": 1, "batch_size": 4,
        "warmup": 100, "threads": 1, "text_encoder": "bert"}
PARAMS = ("teacher:\n  layers: 1\n  heads: 2\n  head_dim: 8\n  text_width: 16\n  text_layers: 1\n"
          "  text_encoder: bert\n  steps: 2\n  batch_size: 4\n  threads: 1\n"
          "  eval: {prompts_per_task: 2, images_per_prompt: 1, sample_steps: 2, few_steps: [1]}\n"
          "teacher_refine:\n  steps: 3\n  lr: 1.0e-3\n  warmup: 1\n  family_weights: {position: 5.0, colors: 0.0}\n")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "train", 24, seed=0, task_weights=dict.fromkeys(TASKS, 1.0))


@pytest.fixture(scope="module")
def base(tmp_path_factory, dataset):
    root = tmp_path_factory.mktemp("base")
    teacher.train_teacher({**teacher.DEFAULTS, **TINY, "steps": 2}, dataset, root / "teacher", root / "work")
    return root / "teacher"


def _weights(path):
    """The saved weights (BERT's pooler is unused, not saved, and initialised afresh on every load)."""
    bb = ToyBackbone.load(path)
    return {**{f"t.{k}": v for k, v in bb.denoiser.state_dict().items()},
            **{f"x.{k}": v for k, v in bb.text_encoder.state_dict().items() if not k.startswith("pooler.")}}


def test_cli_continues_the_base_and_grades(tmp_path, dataset, base):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    before = _weights(base)
    teacher_refine.main(["--params", str(params), "--base", str(base), "--data", str(dataset),
                         "--out", str(tmp_path / "refined"), "--work", str(tmp_path / "work"),
                         "--results", str(tmp_path / "res")])
    after = _weights(tmp_path / "refined")
    assert all(torch.equal(v, _weights(base)[k]) for k, v in before.items())  # the base is not touched
    assert any(not torch.equal(v, before[k]) for k, v in after.items())  # training moved the weights
    report = json.loads((tmp_path / "res" / "metrics.json").read_text())
    assert report["refine_steps"] == 3 and report["pretraining_steps"] == 2
    assert report["refine_family_weights"] == {"position": 5.0, "colors": 0.0}
    assert "default" in report and (tmp_path / "res" / "samples" / "default.png").is_file()


def test_training_from_a_base_starts_at_its_weights(tmp_path, dataset, base):
    """Raw and EMA weights begin at the base's: a step at a vanishing learning rate leaves them there,
    a real step moves them."""
    p = {**teacher.DEFAULTS, **TINY, "steps": 1, "lr": 1e-3, "warmup": 1, "ema": 0.0}
    one = teacher.train_teacher(p, dataset, tmp_path / "one", tmp_path / "w1", init=base)
    zero_lr = teacher.train_teacher({**p, "lr": 1e-30}, dataset, tmp_path / "zero", tmp_path / "w0", init=base)
    b = _weights(base)
    assert all(torch.allclose(v, b[k], atol=1e-20) for k, v in _weights(tmp_path / "zero").items())
    assert any(not torch.equal(v, b[k]) for k, v in _weights(tmp_path / "one").items())
    assert one.shift == ToyBackbone.load(base).shift


def test_family_weights_decide_which_pairs_are_drawn(dataset):
    tags = read_tags(dataset.parent)
    keys = sorted(tags)
    family = tags[keys[0]]
    w = teacher.family_sampling_weights(keys, tags, {t: 0.0 for t in TASKS if t != family})
    drawn = torch.multinomial(w, 200, replacement=True, generator=torch.Generator().manual_seed(0))
    assert {tags[keys[i]] for i in drawn.tolist()} == {family} and len(set(tags.values())) > 1
    assert torch.equal(teacher.family_sampling_weights(keys, tags, {}), torch.ones(len(keys), dtype=torch.float64))
    with pytest.raises(ParamsError, match="weight 0"):
        teacher.family_sampling_weights(keys, tags, dict.fromkeys(TASKS, 0.0))


def test_a_checkpoint_continuing_other_base_weights_is_moved_aside(tmp_path, dataset, base):
    import shutil

    other = tmp_path / "base2"
    shutil.copytree(base, other)
    p = {**teacher.DEFAULTS, **TINY, "steps": 2, "checkpoint_every": 1}
    teacher.train_teacher({**p, "steps": 3}, dataset, tmp_path / "r", tmp_path / "w", init=other)
    bb = ToyBackbone.load(other)
    with torch.no_grad():
        next(bb.denoiser.parameters()).add_(1.0)
    shutil.rmtree(other)
    bb.save(other)  # the base retrained: same folder, other weights
    teacher.train_teacher({**p, "steps": 3}, dataset, tmp_path / "r", tmp_path / "w", init=other)
    (moved,) = list((tmp_path / "w" / "superseded").iterdir())
    assert "start weights" in (moved / "why.txt").read_text()


def test_refusing_to_overwrite_the_base_and_a_missing_base(tmp_path, base):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    with pytest.raises(ValueError, match="overwrite the one it starts from"):
        teacher_refine.main(["--params", str(params), "--base", str(base), "--out", str(base),
                             "--work", str(tmp_path / "w"), "--results", str(tmp_path / "r")])
    with pytest.raises(FileNotFoundError, match="dvc repro teacher"):
        teacher_refine.main(["--params", str(params), "--base", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
                             "--work", str(tmp_path / "w"), "--results", str(tmp_path / "r")])
