"""Toy teacher stage: a tiny end-to-end run through the CLI, exact resume, clear input errors."""
import json

import pytest
import torch

from backbones.toy import ToyBackbone
from toyworld.dataset import write_toy_dataset
from toyworld.grammar import TASKS
from train import teacher
from protocols.dataset_json import DatasetError

TINY = {"layers": 1, "heads": 2, "head_dim": 8, "text_width": 16, "text_layers": 1, "batch_size": 4,
        "warmup": 100, "threads": 1, "text_encoder": "bert"}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny toy-CLIP folder (CLIPModel + ToyWorld's tokenizer), as the encoders stage writes it."""
    from transformers import CLIPModel

    from toyworld.encoders import build_tokenizer, clip_config

    root = tmp_path_factory.mktemp("clip")
    tok = build_tokenizer()
    torch.manual_seed(0)
    CLIPModel(clip_config(len(tok), width=16, layers=1, heads=2, projection_dim=8)).save_pretrained(root)
    tok.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "train", 16, seed=0, task_weights=dict.fromkeys(TASKS, 1.0))


def _params(**kw):
    return {**teacher.DEFAULTS, **TINY, **kw}


def test_cli_trains_saves_and_grades(tmp_path, dataset):
    params = tmp_path / "params.yaml"
    params.write_text("teacher:\n  layers: 1\n  heads: 2\n  head_dim: 8\n  text_width: 16\n  text_layers: 1\n"
                      "  text_encoder: bert\n"
                      "  steps: 2\n  batch_size: 4\n  threads: 1\n"
                      "  eval: {prompts_per_task: 2, images_per_prompt: 1, sample_steps: 2, few_steps: [1]}\n")
    teacher.main(["--params", str(params), "--data", str(dataset), "--out", str(tmp_path / "teacher"),
                  "--work", str(tmp_path / "work"), "--results", str(tmp_path / "res")])
    bb = ToyBackbone.load(tmp_path / "teacher")
    assert bb.shift == 3.0 and isinstance(bb.denoiser, torch.nn.Module)
    report = json.loads((tmp_path / "res" / "metrics.json").read_text())
    assert set(report["default"]["tasks"]) == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
    assert "euler_1" in report and (tmp_path / "res" / "samples" / "default.png").is_file()


def interrupted(monkeypatch, at: int, *args) -> None:
    """train_teacher(*args) killed when it reaches step `at` (after the checkpoints before it)."""
    real = teacher.lr_at

    def killed(step, p):
        if step == at:
            raise KeyboardInterrupt
        return real(step, p)

    monkeypatch.setattr(teacher, "lr_at", killed)
    with pytest.raises(KeyboardInterrupt):
        teacher.train_teacher(*args)
    monkeypatch.setattr(teacher, "lr_at", real)


def test_resume_continues_exactly(tmp_path, dataset, monkeypatch):
    straight = teacher.train_teacher(_params(steps=3), dataset, tmp_path / "a", tmp_path / "wa")
    # a run killed at its third step (checkpoints after steps 1 and 2), then started again: resumes at 2
    interrupted(monkeypatch, 2, _params(steps=3, checkpoint_every=1), dataset, tmp_path / "b", tmp_path / "wb")
    assert json.loads((tmp_path / "wb" / "checkpoint" / "state.json").read_text())["step"] == 2
    resumed = teacher.train_teacher(_params(steps=3, checkpoint_every=1), dataset, tmp_path / "b", tmp_path / "wb")
    assert not (tmp_path / "wb" / "superseded").exists()
    for (k, p), (_, q) in zip(straight.denoiser.state_dict().items(), resumed.denoiser.state_dict().items()):
        assert torch.equal(p, q), k


def test_a_checkpoint_of_other_params_is_moved_aside_not_resumed(tmp_path, dataset):
    """A stale checkpoint (other teacher params, e.g. another text encoder or lr) is never continued: it is
    moved to work/superseded/<time>/ with the reason, and the run starts over exactly as a fresh one."""
    straight = teacher.train_teacher(_params(steps=2), dataset, tmp_path / "a", tmp_path / "wa")
    teacher.train_teacher(_params(steps=2, checkpoint_every=1, lr=1e-3), dataset, tmp_path / "b", tmp_path / "wb")
    before = json.loads((tmp_path / "wb" / "checkpoint" / "state.json").read_text())
    assert before["settings"]["lr"] == 1e-3
    again = teacher.train_teacher(_params(steps=2), dataset, tmp_path / "b", tmp_path / "wb")
    moved = list((tmp_path / "wb" / "superseded").iterdir())
    assert len(moved) == 1 and (moved[0] / "checkpoint" / "state.json").is_file()
    assert "teacher.lr: 0.001 -> 0.002" in (moved[0] / "why.txt").read_text()
    assert before["data"].startswith("16 pairs")
    for (k, p), (_, q) in zip(straight.denoiser.state_dict().items(), again.denoiser.state_dict().items()):
        assert torch.equal(p, q), k


def test_a_checkpoint_that_does_not_record_its_run_is_moved_aside(tmp_path, dataset):
    """A checkpoint of an older version (state.json with only step and rng) cannot be shown to be this
    run: it is moved aside and training starts over, as with any other run's checkpoint (continuing
    one once trained the last 500 steps of a teacher on data it had not started on)."""
    teacher.train_teacher(_params(steps=2, checkpoint_every=1), dataset, tmp_path / "t", tmp_path / "w")
    state_json = tmp_path / "w" / "checkpoint" / "state.json"
    state = json.loads(state_json.read_text())
    state_json.write_text(json.dumps({"step": state["step"], "rng": state["rng"]}))
    fresh = teacher.train_teacher(_params(steps=2), dataset, tmp_path / "f", tmp_path / "wf")
    again = teacher.train_teacher(_params(steps=2, checkpoint_every=1), dataset, tmp_path / "t", tmp_path / "w")
    (moved,) = list((tmp_path / "w" / "superseded").iterdir())
    assert "does not record its params and data" in (moved / "why.txt").read_text()
    for (k, p), (_, q) in zip(fresh.denoiser.state_dict().items(), again.denoiser.state_dict().items()):
        assert torch.equal(p, q), k


def test_a_checkpoint_from_other_text_encoder_weights_is_moved_aside(tmp_path, dataset, tiny_clip):
    """Retraining the toy CLIP (same folder, other weights) makes a teacher checkpoint another run."""
    import shutil

    from transformers import CLIPModel

    clip = tmp_path / "clip"
    shutil.copytree(tiny_clip, clip)
    base = _params(steps=2, checkpoint_every=1, text_encoder="toy_clip", text_encoder_init=str(clip))
    teacher.train_teacher(base, dataset, tmp_path / "t", tmp_path / "w")
    torch.manual_seed(1)
    CLIPModel(CLIPModel.from_pretrained(clip).config).save_pretrained(clip)  # a retrained tower, same path
    teacher.train_teacher(base, dataset, tmp_path / "t", tmp_path / "w")
    (moved,) = list((tmp_path / "w" / "superseded").iterdir())
    assert "text encoder start weights" in (moved / "why.txt").read_text()


def test_bad_dataset_fails_before_any_model_is_built(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        teacher.train_teacher(_params(steps=1), tmp_path / "nope.json", tmp_path / "o", tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_toy_clip_text_encoder_starts_from_the_tower_and_fine_tunes_at_its_own_rate(tmp_path, dataset, tiny_clip,
                                                                                     monkeypatch):
    from transformers import CLIPTextModel

    tower = CLIPTextModel.from_pretrained(tiny_clip).eval()
    ids = ToyBackbone.new(layers=1, heads=2, head_dim=8, text_encoder="toy_clip", text_init=tiny_clip)
    assert all(torch.equal(a, b) for a, b in zip(ids.text_encoder.state_dict().values(), tower.state_dict().values()))
    base = _params(steps=3, text_encoder="toy_clip", text_encoder_init=str(tiny_clip), warmup=1)
    frozen = teacher.train_teacher({**base, "text_lr_scale": 0.0}, dataset, tmp_path / "f", tmp_path / "wf")
    tuned = teacher.train_teacher(base, dataset, tmp_path / "t", tmp_path / "wt")
    unchanged = [torch.equal(a, b) for a, b in zip(frozen.text_encoder.state_dict().values(), tower.state_dict().values())]
    moved = [torch.equal(a, b) for a, b in zip(tuned.text_encoder.state_dict().values(), tower.state_dict().values())]
    assert all(unchanged) and not all(moved)
    assert not all(torch.equal(a, b) for a, b in zip(frozen.denoiser.state_dict().values(), ids.denoiser.state_dict().values()))
    # two parameter groups (denoiser, text encoder) resume exactly
    interrupted(monkeypatch, 2, {**base, "checkpoint_every": 1}, dataset, tmp_path / "r", tmp_path / "wr")
    resumed = teacher.train_teacher({**base, "checkpoint_every": 1}, dataset, tmp_path / "r", tmp_path / "wr")
    assert not (tmp_path / "wr" / "superseded").exists()
    for a, b in zip(tuned.text_encoder.state_dict().values(), resumed.text_encoder.state_dict().values()):
        assert torch.equal(a, b)


def test_toy_clip_text_encoder_without_its_folder_is_a_clear_error(tmp_path, dataset):
    from backbones.base import BackboneError

    with pytest.raises(BackboneError, match="teacher.text_encoder_init"):
        teacher.train_teacher(_params(steps=1, text_encoder="toy_clip", text_encoder_init=str(tmp_path / "no_clip")),
                              dataset, tmp_path / "o", tmp_path / "w")
