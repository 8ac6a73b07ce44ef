"""Checkpoints of the SenseFlow loop: layout (student drops into the teacher folder), atomic writes
and pruning, bit-for-bit resume after a crash, and a NaN loss stopping the run."""
import json
import shutil

import pytest
import torch
from diffusers import SD3Transformer2DModel

import train.senseflow as senseflow
from backbones.toy import ToyBackbone
from train.tiny_assets import params_state, tiny_settings, toy_assets
from train.checkpoint import list_checkpoints, load_optimizer, load_run_checkpoint, save_optimizer
from train.run_folder import SettingsChangedError
from train.sharding import unwrap
from train.senseflow import NonFiniteLossError, build_run, train


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    torch.set_num_threads(1)
    return toy_assets(tmp_path_factory.mktemp("toy_assets"))


def full_state(run) -> dict[str, torch.Tensor]:
    """Every trained tensor of a run, flattened (generator, fake, EMA, heads, optimizer moments)."""
    out = {f"gen.{k}": v for k, v in params_state(run.generator).items()}
    out.update({f"fake.{k}": v for k, v in params_state(run.fake_score).items()})
    if run.ema is not None:
        out.update({f"ema.{k}": v for k, v in params_state(run.ema).items()})
    if run.discriminator is not None:
        out.update({f"heads.{k}": v for k, v in params_state(senseflow.unwrap(run.discriminator).heads).items()})
    for name, (module, opt) in run.optimizers.items():
        names = {id(p): n for n, p in module.named_parameters()}
        for p, st in opt.state.items():
            for k, v in st.items():
                out[f"opt.{name}.{names[id(p)]}.{k}"] = v.detach().clone()
    return out


def test_resume_after_crash_is_bit_identical(assets, tmp_path, monkeypatch):
    settings = tiny_settings(assets, steps=6, ttur=2, ema=0.5)
    straight = full_state(train(settings, tmp_path / "straight"))

    real_step = senseflow.train_step

    def crash_at_3(run, step, *a):
        if step == 3:
            raise KeyboardInterrupt("simulated kill")
        return real_step(run, step, *a)

    monkeypatch.setattr(senseflow, "train_step", crash_at_3)
    with pytest.raises(KeyboardInterrupt):
        train(settings, tmp_path / "resumed")
    assert [s for s, _ in list_checkpoints(tmp_path / "resumed")] == [2]
    monkeypatch.setattr(senseflow, "train_step", real_step)
    resumed_run = train(settings, tmp_path / "resumed", resume="require")
    resumed = full_state(resumed_run)

    assert straight.keys() == resumed.keys()
    different = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert different == []
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text())["resumed_from"] == 2


def checkpoint_files(out) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_run_of_other_settings_is_never_deleted(assets, tmp_path, capsys):
    """A checkpoint of other settings: the default start refuses before loading anything, naming the
    changed key and the two ways on; --on-change supersede (the DVC stage) and --fresh move the run
    aside to <out>.superseded/<time>/ and start over; a longer run of the same settings continues."""
    out = tmp_path / "run"
    train(tiny_settings(assets, steps=2, ttur=2), out)
    train(tiny_settings(assets, steps=4, ttur=2), out)  # same trajectory, longer: continues
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == 2
    before = checkpoint_files(out / "checkpoints")
    for mode in ("auto", "require"):
        with pytest.raises(SettingsChangedError, match=r"ttur: 2 -> 1.*--out.*--fresh"):
            train(tiny_settings(assets, steps=4, ttur=1), out, resume=mode)
    assert checkpoint_files(out / "checkpoints") == before

    [earlier] = list((tmp_path / "run.superseded").iterdir())  # the step-2 student, kept when step 4 was exported
    assert json.loads((earlier / "summary.json").read_text())["steps"] == 2 and (earlier / "student").is_dir()
    train(tiny_settings(assets, steps=2, ttur=1), out, resume="supersede")
    assert "moved the previous run" in capsys.readouterr().out
    [aside] = [p for p in (tmp_path / "run.superseded").iterdir() if p != earlier]
    assert checkpoint_files(aside / "checkpoints") == before  # the old run, intact and readable
    assert (aside / "student").is_dir() and (aside / "summary.json").is_file()
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == 0
    assert [s for s, _ in list_checkpoints(out)] == [2]

    train(tiny_settings(assets, steps=2, ttur=1), out, resume="fresh")
    assert len(list((tmp_path / "run.superseded").iterdir())) == 3


def test_damaged_checkpoints_fall_back_to_the_previous_intact_one(assets, tmp_path, capsys):
    settings = tiny_settings(assets, steps=6, ttur=2, keep_checkpoints=3)
    straight = full_state(train(settings, tmp_path / "straight"))
    out = tmp_path / "run"
    train({**settings, "steps": 4}, out)
    weights = out / "checkpoints" / "step_4" / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated by a full disk
    resumed = full_state(train(settings, out))
    assert "falling back to the previous checkpoint" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == 2
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    # an unreadable state.json in the newest checkpoint: skipped with a warning, the one before is used
    (out / "checkpoints" / "step_6" / "state.json").write_text("{not json")
    train({**settings, "steps": 8}, out)
    assert "unreadable state.json" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == 4
    assert (out / "checkpoints" / "step_6").is_dir()  # kept: never deleted by a start


def test_fewer_steps_than_existing_checkpoints_keeps_them(assets, tmp_path):
    out = tmp_path / "run"
    settings = tiny_settings(assets, steps=6, ttur=2, keep_checkpoints=2)
    train(settings, out)
    assert [s for s, _ in list_checkpoints(out)] == [4, 6]
    train({**settings, "steps": 2}, out)  # nothing at or before step 2 is left: the old run moves aside
    [aside] = list((tmp_path / "run.superseded").iterdir())
    assert [s for s, _ in list_checkpoints(aside)] == [4, 6]  # kept, readable
    assert [s for s, _ in list_checkpoints(out)] == [2]
    exported = (out / "student" / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert exported == (out / "checkpoints" / "step_2" / "transformer" /
                        "diffusion_pytorch_model.safetensors").read_bytes()
    train({**settings, "steps": 4}, out)  # continues from its own step 2
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == 2


def test_shortened_run_exports_the_student_of_its_own_last_step(assets, tmp_path):
    out = tmp_path / "run"
    settings = tiny_settings(assets, steps=4, ttur=2)
    train(settings, out)
    assert [s for s, _ in list_checkpoints(out)] == [2, 4]
    train({**settings, "steps": 2}, out)  # e.g. `dvc exp run -S train.steps=2` on a persisted run dir
    exported = (out / "student" / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    at_2 = (out / "checkpoints" / "step_2" / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert exported == at_2
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    [aside] = list((tmp_path / "run.superseded").iterdir())  # the longer run's student is kept, not overwritten
    assert json.loads((aside / "summary.json").read_text())["steps"] == 4 and (aside / "student").is_dir()
    assert [s for s, _ in list_checkpoints(out)] == [2, 4]


def test_checkpoint_layout_student_drops_into_teacher_folder(assets, tmp_path):
    settings = tiny_settings(assets, steps=6, keep_checkpoints=2)
    run = train(settings, tmp_path / "run")
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_4", "step_6"]  # pruned, no temp dirs left
    ckpt = root / "step_6"
    assert {p.name for p in ckpt.iterdir()} == {
        "transformer", "fake_score.safetensors", "discriminator_heads.safetensors", "optimizer_generator.safetensors",
        "optimizer_fake_score.safetensors", "optimizer_discriminator.safetensors", "state.json"}
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 6 and state["world_size"] == 1
    assert set(state["rng"][0]) == {"python", "numpy", "torch", "cuda", "generators"}

    student = SD3Transformer2DModel.from_pretrained(ckpt / "transformer")
    gen = params_state(run.generator)
    assert all(torch.equal(v, gen[k]) for k, v in student.state_dict().items())
    # drop the exported student into a copy of the teacher folder: the family loads it as its denoiser
    teacher_copy = tmp_path / "teacher_with_student"
    shutil.copytree(assets["teacher"], teacher_copy)
    shutil.rmtree(teacher_copy / "transformer")
    shutil.copytree(tmp_path / "run" / "student" / "transformer", teacher_copy / "transformer")
    loaded = ToyBackbone.load(teacher_copy)
    assert all(torch.equal(v, gen[k]) for k, v in loaded.denoiser.state_dict().items())


def test_optimizer_state_roundtrip_through_safetensors(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.8, 0.9))
    net(torch.randn(5, 3)).sum().backward()
    opt.step()
    from train.sharding import full_optimizer_state, load_full_optimizer_state

    saved = full_optimizer_state(net, opt)
    save_optimizer(tmp_path / "opt.safetensors", saved)
    loaded = load_optimizer(tmp_path / "opt.safetensors")
    assert loaded["param_groups"][0]["betas"] == (0.8, 0.9)
    for name, st in saved["state"].items():
        for k, v in st.items():
            assert torch.equal(loaded["state"][name][k], v)
    net.zero_grad(set_to_none=True)
    fresh = torch.optim.AdamW(net.parameters(), lr=1e-3)
    load_full_optimizer_state(net, fresh, loaded)
    assert tuple(fresh.param_groups[0]["betas"]) == (0.8, 0.9)
    for p in net.parameters():
        assert all(torch.equal(fresh.state[p][k], opt.state[p][k]) for k in opt.state[p])


def test_nan_loss_stops_with_last_checkpoint_intact(assets, tmp_path, monkeypatch):
    settings = tiny_settings(assets, steps=6, ttur=2)
    calls = {"n": 0}
    real_dmd_loss = senseflow.dmd_loss

    def nan_on_second_generator_turn(*a, **kw):
        loss, logs = real_dmd_loss(*a, **kw)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 2 else loss), logs

    monkeypatch.setattr(senseflow, "dmd_loss", nan_on_second_generator_turn)
    with pytest.raises(NonFiniteLossError, match=r"loss_dmd.*iteration 2.*step_2"):
        train(settings, tmp_path / "run")
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [2]
    assert not (tmp_path / "run" / "student").exists()
    monkeypatch.setattr(senseflow, "dmd_loss", real_dmd_loss)
    run = build_run(settings, tmp_path / "probe")
    assert load_run_checkpoint(run, tmp_path / "run" / "checkpoints" / "step_2") == 2
    assert all(torch.isfinite(p).all() for p in run.generator.parameters())
    # the message's advice, as written: lower the learning rates and rerun -> resumes from step_2
    lower = tiny_settings(assets, steps=6, ttur=2, lr_generator=5e-5, lr_fake=5e-5, lr_discriminator=5e-5)
    train(lower, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["resumed_from"] == 2 and summary["resumed_with_changes"]["lr_generator"] == [1e-4, 5e-5]


def test_non_finite_gradient_norm_stops_before_the_step(assets, tmp_path, monkeypatch):
    settings = tiny_settings(assets, steps=4, ttur=2)
    real_build = senseflow.build_run

    def with_overflowing_gradient(*a, **kw):  # the losses stay finite; one gradient overflows
        run = real_build(*a, **kw)
        param = next(unwrap(run.generator).parameters())
        param.register_hook(lambda g: torch.full_like(g, float("inf")))
        return run

    monkeypatch.setattr(senseflow, "build_run", with_overflowing_gradient)
    with pytest.raises(NonFiniteLossError, match=r"non-finite gradient norm of the generator .* iteration 0"):
        train(settings, tmp_path / "run")
    assert list_checkpoints(tmp_path / "run") == []


def test_only_run_folders_are_ever_moved_and_world_size_changes_are_caught(assets, tmp_path):
    from train.run_folder import plan_start

    settings = tiny_settings(assets, steps=2)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "notes.txt").write_text("mine")
    with pytest.raises(SettingsChangedError, match="does not look like a run folder"):
        train(settings, mixed)
    assert sorted(p.name for p in mixed.iterdir()) == ["notes.txt"]  # nothing moved or written

    out = tmp_path / "run"
    train(settings, out)
    with pytest.raises(SettingsChangedError, match=r"world_size: 1 -> 8"):  # e.g. -S 'train.launch=torchrun ...'
        plan_start(out, settings, "auto", world_size=8)
    assert plan_start(out, settings, "supersede", world_size=8).action == "supersede"  # the DVC stage moves it aside
    assert plan_start(out, settings, "auto", world_size=1).action == "resume"


def test_a_retrained_teacher_at_the_same_path_is_not_resumed_from(assets, tmp_path, monkeypatch):
    """`dvc repro -f teacher_refine` rewrites models/toy/teacher in place: the settings are unchanged, the weights
    are not, and a finished distillation of the old teacher must not pass for one of the new."""

    monkeypatch.setenv("SENSEFLOW_CACHE", str(tmp_path / "cache"))
    teacher = tmp_path / "teacher"
    shutil.copytree(assets["teacher"], teacher)
    settings = tiny_settings({**assets, "teacher": str(teacher)}, steps=2)
    out = tmp_path / "run"
    train(settings, out)
    assert train(settings, out).last_checkpoint is not None  # same teacher: resumes (nothing left to do)
    bb = ToyBackbone.load(teacher)
    with torch.no_grad():
        next(bb.denoiser.parameters()).add_(0.01)
    bb.save(teacher)  # retrained in place
    with pytest.raises(SettingsChangedError, match="teacher weights"):
        train(settings, out)
    run = train(settings, out, resume="supersede")
    assert any(p.name.startswith("run.superseded") for p in tmp_path.iterdir())
    assert run.teacher_weights is not None
