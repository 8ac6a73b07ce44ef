"""VFM discriminator on a tiny random Dinov2Model; DiffAugment; hinge losses; time weights."""
import json

import pytest
import torch
from transformers import Dinov2Model

import train.vfm_discriminator as vfm
from backbones.toy import ToyBackbone
from toyworld.encoders import dinov2_config
from train.diffaug import diff_augment, rand_cutout, rand_translation
from train.vfm_discriminator import (VFMDiscriminator, VFMDiscriminatorError, adversarial_time_weight, d_hinge_loss,
                                     default_feature_layers, g_hinge_loss)

TEXT_DIM = 16


def tiny_dinov2(seed=0):
    torch.manual_seed(seed)
    return Dinov2Model(dinov2_config(width=32, layers=4, heads=2))  # 32x32 images, patch 4 -> 8x8 tokens


@pytest.fixture(scope="module")
def disc():
    torch.set_num_threads(1)
    torch.manual_seed(1)
    return VFMDiscriminator(tiny_dinov2(), TEXT_DIM, downsample=1)


def inputs(seed=0, b=2, size=32):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(b, 3, size, size, generator=g) * 2 - 1
    ref = torch.rand(b, 3, size, size, generator=g) * 2 - 1
    return img, torch.randn(b, TEXT_DIM, generator=g), ref


def test_default_levels_follow_released_hooks():
    assert default_feature_layers(24) == [0, 3, 6, 9, 11, 15, 20, 24]
    assert default_feature_layers(12) == [0, 2, 3, 5, 6, 8, 10, 12]
    assert default_feature_layers(4) == [0, 1, 2, 3, 4]


def test_output_shape_and_frozen_backbone(disc):
    img, text, ref = inputs()
    logits = disc(img, text, ref, generator=torch.Generator().manual_seed(0))
    assert logits.shape == (2, 5 * 4 * 4)  # 5 levels x (8x8 tokens halved once)
    disc3 = VFMDiscriminator(tiny_dinov2(), TEXT_DIM, feature_layers=[0, 4], downsample=3)
    assert disc3(img, text, ref).shape == (2, 2 * 1 * 1)
    grouped = VFMDiscriminator(tiny_dinov2(), TEXT_DIM, feature_layers=[4], downsample=2, norm="group")
    assert grouped(img, text, ref).shape == (2, 2 * 2)
    with pytest.raises(VFMDiscriminatorError, match="out of range"):
        VFMDiscriminator(tiny_dinov2(), TEXT_DIM, feature_layers=[5])
    disc.train()
    assert not disc.backbone.training and all(h.training for h in disc.heads)
    assert all(not p.requires_grad for p in disc.backbone.parameters())
    assert set(map(id, disc.trainable_parameters())) == set(map(id, disc.heads.parameters()))


def test_gradients_reach_heads_and_image_but_not_backbone(disc):
    disc.zero_grad()
    img, text, ref = inputs(1)
    img.requires_grad_(True)
    loss = g_hinge_loss(disc(img, text, ref, generator=torch.Generator().manual_seed(0)), torch.tensor([0.5, 1.0]))
    loss.backward()
    assert img.grad is not None and img.grad.abs().sum() > 0  # the generator's adversarial signal
    assert all(p.grad is None for p in disc.backbone.parameters())
    grads = [p.grad for p in disc.heads.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    disc.zero_grad()


def test_diffaugment_only_on_judged_image(disc, monkeypatch):
    img, text, ref = inputs(2)
    seen = []
    real_augment = vfm.diff_augment
    monkeypatch.setattr(vfm, "diff_augment", lambda x, *a, **k: seen.append(x) or real_augment(x, *a, **k))
    captured = {"main": [], "ref": []}
    head = disc.heads[2]
    hooks = [head.main.register_forward_pre_hook(lambda m, a: captured["main"].append(a[0].detach())),
             head.refmapper.register_forward_pre_hook(lambda m, a: captured["ref"].append(a[0].detach()))]
    disc.eval()  # no spectral-norm power iteration, so repeated calls are comparable
    try:
        a = disc(img, text, ref, generator=torch.Generator().manual_seed(0))
        b = disc(img, text, ref, generator=torch.Generator().manual_seed(1))
        c = disc(img, text, ref, generator=torch.Generator().manual_seed(0))
    finally:
        for h in hooks:
            h.remove()
        disc.train()
    assert len(seen) == 3 and all(x is img for x in seen)  # only the judged image is augmented
    ref_feats = disc.reference_features(ref)[2]
    assert all(torch.equal(r, ref_feats) for r in captured["ref"])  # reference: same, un-augmented
    assert not torch.equal(captured["main"][0], captured["main"][1])  # judged image: seed-dependent
    assert torch.equal(captured["main"][0], captured["main"][2])
    assert torch.equal(a, c) and not torch.equal(a, b)
    with torch.no_grad():  # precomputed reference features give the same logits
        disc.eval()
        d = disc(img, text, ref_features=disc.reference_features(ref), generator=torch.Generator().manual_seed(0))
        disc.train()
    assert torch.equal(a, d)


def test_non_multiple_size_is_resized_and_missing_reference_raises(disc):
    img, text, ref = inputs(3, size=34)
    assert disc(img, text, ref).shape == (2, 80)  # 34 -> 32 (8 patches of 4)
    with pytest.raises(VFMDiscriminatorError, match="ref"):
        disc(img, text)


def test_from_pretrained_reads_processor_stats_and_names_missing_folder(tmp_path):
    tiny_dinov2().save_pretrained(tmp_path / "dinov2")
    (tmp_path / "dinov2" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))
    d = VFMDiscriminator.from_pretrained(tmp_path / "dinov2", TEXT_DIM, downsample=3)
    assert d.image_mean.flatten().tolist() == [0.5] * 3 and d.image_std.flatten().tolist() == [0.25] * 3
    with pytest.raises(VFMDiscriminatorError, match="models.dinov2"):
        VFMDiscriminator.from_pretrained(tmp_path / "nope", TEXT_DIM)


def test_hinge_losses_hand_values():
    real = torch.tensor([[2.0, 0.5], [-1.0, 0.0]])
    fake = torch.tensor([[-2.0, 0.0], [1.0, 3.0]])
    w = torch.tensor([1.0, 0.5])
    # real: relu(1-r) means (0.25, 1.5); fake: relu(1+f) means (0.5, 3.0) -> (0.75, 4.5) * w -> mean 1.5
    assert torch.allclose(d_hinge_loss(real, fake, w), torch.tensor(1.5))
    assert torch.allclose(d_hinge_loss(real, None, w) + d_hinge_loss(None, fake, w), torch.tensor(1.5))
    assert torch.allclose(d_hinge_loss(real, fake), torch.tensor((0.75 + 4.5) / 2))
    # generator: -mean(f) = (1, -2) * w = (1, -1) -> 0
    assert torch.allclose(g_hinge_loss(fake, w), torch.tensor(0.0))
    assert torch.allclose(g_hinge_loss(fake), torch.tensor(-0.5))


def test_adversarial_time_weights():
    bb = ToyBackbone.new(layers=1, heads=2, head_dim=8, text_width=16, text_layers=1, seed=0)
    t = bb.anchor_timesteps(4)  # sigma 1, 0.9, 0.75, 0.5
    assert torch.allclose(adversarial_time_weight(bb, t), torch.tensor([0.0, 0.01, 0.0625, 0.25]))
    assert torch.allclose(adversarial_time_weight(bb, t, "one_minus_sigma_sq"), torch.tensor([0.0, 0.01, 0.0625, 0.25]))
    assert torch.allclose(adversarial_time_weight(bb, t, "sqrt_alphabar"), torch.tensor([0.0, 0.1, 0.25, 0.5]))
    with pytest.raises(VFMDiscriminatorError):
        adversarial_time_weight(bb, t, "sigma")


def test_diffaugment_ops():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    x.requires_grad_(True)
    a = diff_augment(x, generator=torch.Generator().manual_seed(0))
    b = diff_augment(x, generator=torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(diff_augment(x, ""), x)
    with pytest.raises(ValueError):
        diff_augment(x, "color,zoom")
    ones = torch.ones(64, 1, 16, 16)
    moved = rand_translation(ones, generator=torch.Generator().manual_seed(1))  # shift <= 2 px, zero fill
    rows_kept = moved.sum(dim=3).gt(0).sum(dim=2).flatten()
    assert rows_kept.min() >= 14 and (moved == 0).any() and set(moved.unique().tolist()) <= {0.0, 1.0}
    cut = rand_cutout(ones, generator=torch.Generator().manual_seed(2))  # 3x3 square (0.2 * 16 -> 3)
    holes = (cut == 0).flatten(1).sum(1)
    assert holes.max() == 9 and holes.min() >= 1
