"""Intra-segment guidance against a hand computation with the tiny toy teacher/student."""
import copy

import pytest
import torch

from backbones.schedules import shift_sigmas
from backbones.toy import ToyBackbone
from train.isg import isg_distance, isg_loss, isg_segment, sample_isg_midpoint


@pytest.fixture(scope="module")
def bb():
    torch.set_num_threads(1)
    b = ToyBackbone.new(layers=1, heads=2, head_dim=8, text_width=16, text_layers=1, seed=0)
    b.denoiser.eval().requires_grad_(False)
    b.text_encoder.eval().requires_grad_(False)
    return b


@pytest.fixture(scope="module")
def student(bb):
    net = copy.deepcopy(bb.denoiser)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net.requires_grad_(True)


@pytest.fixture(scope="module")
def cond(bb):
    with torch.no_grad():
        return bb.encode_prompts(["a photo of a red circle", "a photo of two squares"])


def test_segments_and_midpoint_ranges(bb):
    anchors = bb.anchor_timesteps(4)  # [1000, 900, 750, 500]
    tau, prev = isg_segment(anchors, 1)
    assert (tau.item(), prev.item()) == (900.0, 750.0)
    assert isg_segment(anchors, 3)[1].item() == 0.0
    tau_b, prev_b = isg_segment(anchors, torch.tensor([0, 3]))
    assert tau_b.tolist() == [1000.0, 500.0] and prev_b.tolist() == [900.0, 0.0]
    with pytest.raises(IndexError):
        isg_segment(anchors, 4)
    # Unshifted timesteps (FLUX/SDXL rule): integers in [prev + m, tau - m].
    mids = torch.stack([sample_isg_midpoint(bb, tau, prev, 20, 1.0, torch.Generator().manual_seed(i)) for i in range(300)])
    assert torch.equal(mids, mids.round()) and mids.min() == 770 and mids.max() == 880
    # Shift 3 (released SD3.5 rule): index axis 750 -> 500 for sigma 0.9 -> 0.75, margin 50 -> k in [550, 700].
    mids = torch.stack([sample_isg_midpoint(bb, tau, prev, 50, 3.0, torch.Generator().manual_seed(i)) for i in range(300)])
    allowed = 1000 * shift_sigmas(torch.arange(550, 701, dtype=torch.float64) / 1000, 3.0).float()
    assert all(torch.isclose(allowed, m).any() for m in mids)
    assert torch.isclose(mids.min(), allowed[0]) and torch.isclose(mids.max(), allowed[-1])
    with pytest.raises(ValueError, match="margin"):
        sample_isg_midpoint(bb, tau, prev, 80, 1.0)


def test_isg_target_and_loss_match_hand_computation(bb, student, cond):
    anchors, idx, cfg = bb.anchor_timesteps(4), 1, 3.0
    uncond = bb.null_conditioning(2)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tau = torch.full((2,), 900.0)
    prev = torch.full((2,), 750.0)
    student_out = bb.model_output(student, x, tau, cond)  # the caller's forward, with grad
    loss, target = isg_loss(bb, bb.denoiser, student, x, student_out, anchors, idx, cond, guidance_scale=cfg,
                            uncond=uncond, margin=50, shift=3.0, generator=torch.Generator().manual_seed(11))

    t_mid = sample_isg_midpoint(bb, tau[0], prev[0], 50, 3.0, torch.Generator().manual_seed(11)).expand(2)
    s = lambda t: bb.sigma(t).view(-1, 1, 1, 1)  # noqa: E731
    with torch.no_grad():
        v_u = bb.model_output(bb.denoiser, x, tau, uncond)
        v_c = bb.model_output(bb.denoiser, x, tau, cond)
        x_mid = x + (s(t_mid) - s(tau)) * (v_u + cfg * (v_c - v_u))
        hand_target = x_mid + (s(prev) - s(t_mid)) * bb.model_output(student, x_mid, t_mid, cond)
    generated = x + (s(prev) - s(tau)) * student_out
    c = 1e-3
    hand_loss = (torch.sqrt((generated - hand_target) ** 2 + c ** 2) - c).mean()

    assert 750 < t_mid[0] < 900
    assert not torch.allclose(x_mid, x, atol=1e-3)
    assert torch.allclose(target, hand_target, atol=1e-5)
    assert torch.allclose(loss, hand_loss, rtol=1e-4, atol=1e-7)
    assert not target.requires_grad

    # Gradient only through the generated path: same parameter grads as the hand loss with the target constant.
    student.zero_grad()
    loss.backward(retain_graph=True)
    got = [p.grad.clone() for p in student.parameters()]
    student.zero_grad()
    hand_loss.backward()
    for a, b in zip(got, (p.grad for p in student.parameters())):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-8)
    assert all(p.grad is None for p in bb.denoiser.parameters())
    student.zero_grad()


def test_gradient_wrt_student_output_is_pseudo_huber_derivative(bb, student, cond):
    anchors = bb.anchor_timesteps(4)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    t_mid = torch.tensor([150.0, 150.0])
    loss, target = isg_loss(bb, bb.denoiser, student, x, out, anchors, 3, cond, t_mid=t_mid)  # last segment: 500 -> 0
    loss.backward()
    generated = x + (0.0 - 0.5) * out.detach()
    d = generated - target
    expected = -0.5 * d / torch.sqrt(d ** 2 + 1e-6) / d.numel()
    assert torch.allclose(out.grad, expected, rtol=1e-4, atol=1e-10)
    l2, _ = isg_loss(bb, bb.denoiser, student, x, out, anchors, 3, cond, t_mid=t_mid, loss_type="l2")
    assert torch.allclose(l2, (d ** 2).mean(), rtol=1e-5)


def test_pseudo_huber_values():
    d = torch.tensor([[0.0, 3.0 ** 0.5], [8.0 ** 0.5, 0.0]])
    assert torch.allclose(isg_distance(d, torch.zeros(2, 2), huber_c=1.0), torch.tensor(0.75))
    one = isg_distance(torch.ones(4), torch.zeros(4))  # released c = 1e-3
    assert torch.allclose(one, torch.tensor((1 + 1e-6) ** 0.5 - 1e-3))
    assert torch.allclose(isg_distance(d, torch.zeros(2, 2), "l2"), torch.tensor(11.0 / 4))
    tiny = isg_distance(torch.full((3,), 1e-5), torch.zeros(3))  # |d| << c: quadratic regime d^2 / 2c
    assert torch.allclose(tiny, torch.tensor(1e-10 / 2e-3), rtol=1e-2)
    with pytest.raises(ValueError):
        isg_distance(d, d, "l1")


def test_per_sample_anchor_indices_equal_shared_index(bb, student, cond):
    anchors = bb.anchor_timesteps(4)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = bb.model_output(student, x, torch.full((2,), 750.0), cond)
        a, ta = isg_loss(bb, bb.denoiser, student, x, out, anchors, 2, cond, generator=torch.Generator().manual_seed(4))
        b, tb = isg_loss(bb, bb.denoiser, student, x, out, anchors, torch.tensor([2, 2]), cond,
                         generator=torch.Generator().manual_seed(4))
    assert torch.equal(ta, tb) and torch.equal(a, b)
