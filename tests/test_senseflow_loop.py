"""The SenseFlow loop on a tiny toy teacher: one iteration, and each toggle changes exactly what
it should (ISG, VFM, IDA, TTUR), plus the generator-input construction and -S overrides."""
import pytest
import torch
import yaml

from train.tiny_assets import params_state, tiny_settings, toy_assets
from train.batches import batch_indices
from train.generator_input import backward_simulation, forward_diffusion, generator_input
from train.senseflow import build_run, main, train_step
from train.sharding import unwrap


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    torch.set_num_threads(1)
    return toy_assets(tmp_path_factory.mktemp("toy_assets"))


def batch(run, step):
    s = run.settings
    idx = batch_indices(step, len(run.data), s["batch_size"], s["seed"])
    return torch.stack([run.data[i][0] for i in idx]), [run.data[i][1] for i in idx]


def run_steps(run, steps, start=0):
    return [train_step(run, i, *batch(run, i)) for i in range(start, start + steps)]


class CallRecorder:
    """Forward pre-hook recording (timestep of sample 0, batch size) of every call of a net."""

    def __init__(self, net):
        self.calls = []
        net.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        t = kwargs["timestep"]
        self.calls.append((float(t.reshape(-1)[0]), int(kwargs["hidden_states"].shape[0])))


def is_anchor(t, anchors):
    return bool(torch.isclose(anchors, torch.tensor(t), atol=1e-3).any())


def test_one_iteration_logs_every_term(assets, tmp_path):
    run = build_run(tiny_settings(assets), tmp_path)
    logs = run_steps(run, 1)[0]
    for key in ("loss_dmd", "loss_adv", "loss_isg", "loss_generator", "loss_fake_score", "loss_d_real",
                "loss_d_fake", "grad_norm_generator", "grad_norm_fake_score", "grad_norm_discriminator",
                "lr_generator", "lr_fake_score", "lr_discriminator", "backsim_fraction"):
        assert key in logs and torch.isfinite(torch.tensor(logs[key])), key
    assert logs["loss_generator"] == pytest.approx(logs["loss_dmd"] + logs["loss_adv"] + 0.5 * logs["loss_isg"],
                                                   rel=1e-5)


@pytest.mark.parametrize("isg", [False, True])
def test_isg_toggle_controls_the_extra_teacher_and_midpoint_calls(assets, tmp_path, isg):
    run = build_run(tiny_settings(assets, isg=isg, ttur=1, vfm=False), tmp_path)
    teacher, student = CallRecorder(run.teacher), CallRecorder(unwrap(run.generator))
    logs = run_steps(run, 2)
    anchors = run.anchors
    mid_calls = [t for t, _ in student.calls if not is_anchor(t, anchors)]
    if isg:
        assert len(teacher.calls) == 4  # per generator turn: DMD at a random t + ISG at the anchor
        assert sum(is_anchor(t, anchors) for t, _ in teacher.calls) >= 2
        assert len(mid_calls) == 2  # the generator continues from every t_mid once
        assert all("loss_isg" in log for log in logs)
    else:
        assert len(teacher.calls) == 2  # only the DMD teacher call per generator turn
        assert mid_calls == []
        assert not any("loss_isg" in log for log in logs)


def test_zero_weighted_discriminator_turn_is_logged_not_warned(assets, tmp_path, monkeypatch, capsys):
    """At the first anchor the alpha^2 time weight is 0 for the whole batch: every discriminator
    parameter gets a zero gradient by design. That is logged, not warned about as a bug."""
    import train.senseflow as senseflow

    monkeypatch.setattr(senseflow, "adversarial_time_weight", lambda bb, t, mode: torch.zeros(len(t)))
    run = build_run(tiny_settings(assets), tmp_path / "zero")
    logs = train_step(run, 1, *batch(run, 1))
    assert logs["loss_d_real"] == 0.0 and logs["params_without_grad_discriminator"] == len(run.audited["discriminator"])
    assert "no usable gradient" not in capsys.readouterr().out


def test_vfm_off_builds_no_discriminator_and_loads_nothing(assets, tmp_path):
    settings = tiny_settings(assets, vfm=False, clip=str(tmp_path / "missing_clip"),
                             vfm_backbone=str(tmp_path / "missing_dinov2"))
    run = build_run(settings, tmp_path / "run")
    assert run.discriminator is None and run.clip_text is None and set(run.optimizers) == {"generator", "fake_score"}
    logs = run_steps(run, 1)[0]
    assert not any(k in logs for k in ("loss_adv", "loss_d_real", "loss_d_fake", "grad_norm_discriminator"))
    assert "loss_dmd" in logs and "loss_fake_score" in logs


@pytest.mark.parametrize("ida", [False, True])
def test_ida_pulls_fake_toward_generator_only_after_generator_steps(assets, tmp_path, ida):
    run = build_run(tiny_settings(assets, ida=ida, ttur=2, vfm=False, isg=False), tmp_path)
    fake, gen = run.optimizers["fake_score"][0], run.optimizers["generator"][0]
    seen = {}
    run.optimizers["generator"][1].register_step_post_hook(
        lambda *a: seen.__setitem__("gen_after", {n: p.detach().clone() for n, p in gen.named_parameters()}))
    run.optimizers["fake_score"][1].register_step_pre_hook(
        lambda *a: seen.__setitem__("fake_before_own_step", {n: p.detach().clone() for n, p in fake.named_parameters()}))
    lam = run.settings["ida_lambda"]
    for step in range(3):  # generator turns: 0, 2
        start = {n: p.detach().clone() for n, p in fake.named_parameters()}
        train_step(run, step, *batch(run, step))
        before_own = seen["fake_before_own_step"]
        for n in start:
            if ida and step % 2 == 0:
                assert torch.equal(before_own[n], torch.lerp(start[n], seen["gen_after"][n], 1 - lam)), (step, n)
            else:
                assert torch.equal(before_own[n], start[n]), (step, n)


def test_ttur_generator_steps_exactly_every_ttur_iterations(assets, tmp_path):
    run = build_run(tiny_settings(assets, ttur=3, vfm=False, isg=False, ida=False), tmp_path)
    changed_gen, changed_fake = [], []
    for step in range(7):
        g0, f0 = params_state(run.generator), params_state(run.fake_score)
        train_step(run, step, *batch(run, step))
        g1, f1 = params_state(run.generator), params_state(run.fake_score)
        changed_gen.append(any(not torch.equal(g0[k], g1[k]) for k in g0))
        changed_fake.append(any(not torch.equal(f0[k], f1[k]) for k in f0))
    assert changed_gen == [True, False, False, True, False, False, True]
    assert all(changed_fake)


def test_generator_input_paths(assets, tmp_path):
    run = build_run(tiny_settings(assets, vfm=False), tmp_path)
    bb, anchors = run.backbone, run.anchors
    images, prompts = batch(run, 0)
    cond = bb.encode_prompts(prompts)
    # backward simulation: pure noise, then the generator's own x0 re-noised to the next anchor
    x = backward_simulation(bb, run.generator, cond, anchors, 2, images, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    ref = torch.randn(images.shape, generator=g)
    with torch.no_grad():
        for k in range(2):
            x0 = bb.predict_x0(run.generator, ref, anchors[k].expand(2), cond)
            ref = bb.add_noise(x0, torch.randn(images.shape, generator=g), anchors[k + 1].expand(2))
    assert torch.equal(x, ref)
    # forward diffusion: the real image noised to each sample's anchor; pure noise at anchor 0
    index = torch.tensor([0, 3])
    x = forward_diffusion(bb, images, anchors, index, torch.Generator().manual_seed(4))
    eps = torch.randn(images.shape, generator=torch.Generator().manual_seed(4))
    assert torch.equal(x[0], eps[0])
    assert torch.allclose(x[1], bb.add_noise(images[1:], eps[1:], anchors[3:4])[0])
    # the coin: backsim_prob 1 -> always backward simulation with a batch-shared anchor
    inp = generator_input(bb, run.generator, images, cond, anchors, 1.0, torch.Generator().manual_seed(0),
                          torch.Generator().manual_seed(0))
    assert inp.backsim and len(set(inp.anchor_index.tolist())) == 1
    inp = generator_input(bb, run.generator, images, cond, anchors, 0.0, torch.Generator().manual_seed(0),
                          torch.Generator().manual_seed(0))
    assert not inp.backsim and torch.equal(inp.t, anchors[inp.anchor_index])


def test_cli_override_reaches_the_loop(assets, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {**assets, "steps": 7, "batch_size": 2, "threads": 1,
                                                "vfm": False, "isg": False, "checkpoint_every": 100,
                                                "sample_every": 0, "sample_prompts": 2}}))
    run = main(["--params", str(params), "--out", str(tmp_path / "run"), "-S", "train.ttur=3"])
    assert run.settings["ttur"] == 3
    gen_opt, fake_opt = run.optimizers["generator"][1], run.optimizers["fake_score"][1]
    assert {int(st["step"]) for st in gen_opt.state.values()} == {3}  # iterations 0, 3, 6
    assert {int(st["step"]) for st in fake_opt.state.values()} == {7}
    assert (tmp_path / "run" / "student" / "transformer" / "config.json").is_file()


def test_generator_can_start_from_an_earlier_student(assets, tmp_path):
    """train.init_student: the paper's 1-step model is fine-tuned from the 4-step one. The generator
    (and only the generator) starts from that student's weights; the fake score from the teacher."""
    from safetensors.torch import load_file

    from train.senseflow import train

    train(tiny_settings(assets, steps=2, vfm=False), tmp_path / "four_step")
    student_dir = tmp_path / "four_step" / "student"
    earlier = load_file(str(student_dir / "transformer" / "diffusion_pytorch_model.safetensors"))
    run = build_run(tiny_settings(assets, num_steps=1, init_student=str(student_dir), vfm=False), tmp_path / "one_step")
    gen, fake = params_state(run.generator), params_state(run.fake_score)
    teacher = params_state(run.teacher)
    assert all(torch.equal(gen[k], earlier[k]) for k in earlier)
    assert any(not torch.equal(gen[k], teacher[k]) for k in teacher)
    assert all(torch.equal(fake[k], teacher[k]) for k in teacher)
    assert run.anchors.tolist() == [1000.0]
    with pytest.raises(Exception, match=r"student to start from does not exist \(train.init_student: "):
        build_run(tiny_settings(assets, init_student=str(tmp_path / "nowhere"), vfm=False), tmp_path / "bad")
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="no .safetensors"):
        build_run(tiny_settings(assets, init_student=str(tmp_path / "empty"), vfm=False), tmp_path / "bad")
