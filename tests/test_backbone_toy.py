"""Toy family (SD3 transformer + SD3 flow schedule in pixel space): schedule, sampler, export."""
import pytest
import torch

from backbones.base import BackboneError
from backbones.toy import ToyBackbone


@pytest.fixture(scope="module")
def bb():
    torch.set_num_threads(1)
    b = ToyBackbone.new(layers=1, heads=2, head_dim=8, text_width=16, text_layers=1, seed=0)
    b.denoiser.eval()
    b.text_encoder.eval()
    return b


def test_anchors_are_sd3_anchors(bb):
    assert torch.allclose(bb.anchor_timesteps(4), torch.tensor([1000.0, 900.0, 750.0, 500.0]))
    assert torch.allclose(bb.anchor_timesteps(2), torch.tensor([1000.0, 750.0]))
    assert torch.allclose(bb.anchor_timesteps(1), torch.tensor([1000.0]))


def test_schedule_invariants(bb):
    t = torch.linspace(0, 1000, 101)
    s, a = bb.sigma(t), bb.alpha(t)
    assert (s >= 0).all() and (s <= 1).all() and (a >= 0).all() and (a <= 1).all()
    assert (s.diff() > 0).all() and (a.diff() < 0).all()
    tt = bb.sample_training_timesteps(1000, torch.Generator().manual_seed(0))
    assert (tt > 0).all() and (tt < 1000).all() and tt.mean() > 500  # shift 3 favours high noise
    x0, eps = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    tb = torch.tensor([100.0, 400.0, 700.0, 990.0])
    x_t = bb.add_noise(x0, eps, tb)
    v = bb.training_target(x0, eps)
    assert torch.allclose(bb.to_x0(v, x_t, tb), x0, atol=1e-5)
    assert torch.allclose(bb.to_noise(v, x_t, tb), eps, atol=1e-5)


class Recorder(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, **kw):
        self.seen.append(kw["timestep"][0].item())
        return self.net(**kw)


@pytest.mark.parametrize("sampler", ["stochastic", "euler"])
def test_sampler_hits_anchors_and_is_deterministic(bb, sampler):
    cond = bb.encode_prompts(["a photo of a red circle", "a photo of two squares"])
    noise = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    rec = Recorder(bb.denoiser)
    with torch.no_grad():
        a = bb.sample(rec, cond, noise, 4, sampler=sampler, generator=torch.Generator().manual_seed(2))
        b = bb.sample(bb.denoiser, cond, noise, 4, sampler=sampler, generator=torch.Generator().manual_seed(2))
    assert rec.seen == [1000.0, 900.0, 750.0, 500.0]
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)


def test_cfg_uses_two_passes_and_reduces_to_conditional_at_scale_one(bb):
    cond = bb.encode_prompts(["a photo of a circle"])
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([800.0])
    with torch.no_grad():
        c = bb.model_output(bb.denoiser, x, t, cond)
        u = bb.model_output(bb.denoiser, x, t, bb.null_conditioning(1))
        g = bb.guided_output(bb.denoiser, x, t, cond, 3.0)
        one = bb.guided_output(bb.denoiser, x, t, cond, 1.0)
    assert torch.allclose(g, u + 3.0 * (c - u), atol=1e-5) and torch.equal(one, c)


def test_export_reload_gives_same_output(bb, tmp_path):
    bb.save(tmp_path / "teacher")
    bb.export_student(bb.denoiser, tmp_path / "student")
    re = ToyBackbone.load(tmp_path / "teacher")
    student = re.load_denoiser(tmp_path / "student")
    cond = bb.encode_prompts(["a photo of a blue triangle"])
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = bb.sample(bb.denoiser, cond, noise, 2, sampler="euler")
        out = re.sample(student, re.encode_prompts(["a photo of a blue triangle"]), noise, 2, sampler="euler")
    assert torch.allclose(ref, out, atol=1e-6)


def test_missing_weights_folder_is_a_clear_error(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        ToyBackbone.load(tmp_path / "nope")
    (tmp_path / "half" / "transformer").mkdir(parents=True)
    with pytest.raises(BackboneError, match="lacks text_encoder, tokenizer"):
        ToyBackbone.load(tmp_path / "half")


@pytest.mark.parametrize("kind", ["bert", "clip", "t5"])
def test_every_text_encoder_kind_reloads_with_the_same_conditioning(kind, tmp_path):
    b = ToyBackbone.new(layers=1, heads=2, head_dim=8, text_width=16, text_layers=1, seed=0, text_encoder=kind)
    b.save(tmp_path / "teacher")
    re = ToyBackbone.load(tmp_path / "teacher")
    assert type(re.text_encoder) is type(b.text_encoder)
    prompts = ["a photo of a red circle and a blue square", ""]
    with torch.no_grad():
        a, c = b.encode_prompts(prompts), re.encode_prompts(prompts)
    assert torch.allclose(a.embeds, c.embeds, atol=1e-6) and torch.allclose(a.pooled, c.pooled, atol=1e-6)


def test_default_text_encoder_tells_the_denoiser_which_colour_goes_with_which_shape():
    """SD3's joint attention treats the text tokens as a set: the order of the words must be written into
    the token states, or "red circle and blue square" and "blue circle and red square" are one prompt."""
    b = ToyBackbone.new(layers=1, heads=2, head_dim=8, text_width=16, text_layers=1, seed=0)
    x, t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.full((2,), 700.0)
    with torch.no_grad():
        out = [b.model_output(b.denoiser, x, t, b.encode_prompts([p] * 2)) for p in
               ("a photo of a red circle and a blue square", "a photo of a blue circle and a red square")]
    assert (out[0] - out[1]).norm() > 1e-3 * out[0].norm()


def test_unknown_text_encoder_kind_is_a_clear_error(tmp_path):
    b = ToyBackbone.new(layers=1, heads=2, head_dim=8, text_width=16, text_layers=1, seed=0)
    b.save(tmp_path / "teacher")
    cfg = tmp_path / "teacher" / "text_encoder" / "config.json"
    cfg.write_text(cfg.read_text().replace('"model_type": "bert"', '"model_type": "roberta"'))
    with pytest.raises(BackboneError, match="'roberta' text encoder"):
        ToyBackbone.load(tmp_path / "teacher")
