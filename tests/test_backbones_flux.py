"""FLUX family on tiny random components: dynamic-shift anchors, packing, the guidance-embedded
teacher vs the guidance-free student, sampler, export into FluxPipeline, load errors."""
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

from backbones import load_backbone
from backbones.base import BackboneError
from backbones.flux import (FluxBackbone, flux_anchor_sigmas, guidance_free_copy, has_guidance_embedding,
                            latent_image_ids, pack_latents, unpack_latents)
from backbones.tiny import RESOLUTION, TimestepRecorder, flux_components

PROMPTS = ["a photo of a red circle", "two blue squares"]
# 4096 packed tokens (FLUX at 1024^2) with the tiny VAE's factor 2: 256 px -> 128^2 latents -> 64^2 tokens
RES_4096_TOKENS = 256


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("flux") / "teacher"
    FluxPipeline(**flux_components(seed=0, guidance_embeds=True)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bb(teacher_dir):
    return load_backbone("flux", teacher_dir, resolution=RESOLUTION)


@pytest.fixture(scope="module")
def noise(bb):
    return torch.randn(2, *bb.latent_shape(RESOLUTION, RESOLUTION), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def student(bb):
    net = bb.init_student()
    with torch.no_grad():  # make the student differ from the teacher
        for p in net.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return net.eval()


def test_anchors_are_the_released_values(bb):
    expected = torch.tensor([1.0, 0.9045, 0.7595, 0.5129])
    assert torch.allclose(flux_anchor_sigmas(4, 4096), expected, atol=1e-4)
    at_1024 = FluxBackbone(bb.denoiser, bb.vae, bb.text_encoder, bb.text_encoder_2, bb.tokenizer, bb.tokenizer_2,
                           resolution=RES_4096_TOKENS)
    assert at_1024.image_seq_len == 4096
    assert torch.allclose(at_1024.anchor_timesteps(4), 1000 * expected, atol=0.1)
    for n in (1, 2):
        a = bb.anchor_timesteps(n)
        assert len(a) == n and a[0] == 1000.0 and (a.diff() < 0).all()
    assert bb.image_seq_len == 64 and bb.anchor_timesteps(4)[-1] < at_1024.anchor_timesteps(4)[-1]  # smaller mu


def test_schedule_invariants(bb):
    t = torch.linspace(0, 1000, 101)
    s, a = bb.sigma(t), bb.alpha(t)
    assert (s >= 0).all() and (s <= 1).all() and (a >= 0).all() and (a <= 1).all()
    assert (s.diff() > 0).all() and (a.diff() < 0).all()
    tt = bb.sample_training_timesteps(4000, torch.Generator().manual_seed(0))
    assert (tt >= 1).all() and (tt <= 1000).all() and torch.equal(tt, tt.round())
    assert abs(tt.mean().item() - 500) < 15  # unshifted logit-normal: symmetric around the middle
    x0, eps = torch.randn(4, 4, 16, 16), torch.randn(4, 4, 16, 16)
    tb = torch.tensor([10.0, 400.0, 750.0, 1000.0])
    x_t = bb.add_noise(x0, eps, tb)
    v = bb.training_target(x0, eps)
    assert torch.allclose(bb.to_x0(v, x_t, tb), x0, atol=1e-5)
    assert torch.allclose(bb.to_noise(v, x_t, tb), eps, atol=1e-5)


def test_packing_matches_flux_pipeline(noise):
    b, c, h, w = noise.shape
    packed = pack_latents(noise)
    assert torch.equal(packed, FluxPipeline._pack_latents(noise, b, c, h, w))
    assert torch.equal(unpack_latents(packed, h, w), noise)
    assert torch.equal(unpack_latents(packed, h, w), FluxPipeline._unpack_latents(packed, h * 8, w * 8, 8))
    assert torch.equal(latent_image_ids(h, w), FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", torch.float32))


def test_text_conditioning(bb):
    cond = bb.encode_prompts(PROMPTS)
    assert cond.embeds.shape == (2, 512, 32) and cond.pooled.shape == (2, 16)  # T5 tokens, CLIP pooled
    assert bb.null_conditioning(3).embeds.shape == (3, 512, 32)


def test_student_is_the_teacher_without_guidance_embedding(bb, student):
    assert has_guidance_embedding(bb.denoiser) and not has_guidance_embedding(student)
    assert not student.config.guidance_embeds and not hasattr(student.time_text_embed, "guidance_embedder")
    fresh, teacher = guidance_free_copy(bb.denoiser).state_dict(), bb.denoiser.state_dict()
    dropped = {k for k in teacher if k not in fresh}
    assert dropped and all(k.startswith("time_text_embed.guidance_embedder.") for k in dropped)
    assert all(torch.equal(v, teacher[k]) for k, v in fresh.items())


def test_teacher_takes_guidance_through_its_embedding(bb, noise):
    cond = bb.encode_prompts(PROMPTS)
    t = torch.tensor([800.0, 800.0])
    with torch.no_grad():
        g35 = bb.guided_output(bb.denoiser, noise, t, cond, 3.5)
        direct = bb.model_output(bb.denoiser, noise, t, cond, guidance=torch.tensor([3.5, 3.5]))
        g1 = bb.guided_output(bb.denoiser, noise, t, cond, 1.0)
    assert torch.equal(g35, direct) and not torch.allclose(g35, g1)
    rec = TimestepRecorder(bb.denoiser)
    with torch.no_grad():
        bb.guided_output(rec, noise, t, cond, 3.5)
    assert len(rec.seen) == 1 and rec.seen[0] == pytest.approx(0.8)  # one pass, timestep = sigma
    with pytest.raises(BackboneError, match="guidance embedding"):
        bb.model_output(bb.denoiser, noise, t, cond)


def test_guidance_free_net_uses_two_pass_cfg(bb, student, noise):
    cond = bb.encode_prompts(PROMPTS)
    t = torch.tensor([700.0, 700.0])
    with torch.no_grad():
        c = bb.model_output(student, noise, t, cond)
        u = bb.model_output(student, noise, t, bb.null_conditioning(2))
        assert torch.allclose(bb.guided_output(student, noise, t, cond, 3.0), u + 3.0 * (c - u), atol=1e-5)
        assert torch.equal(bb.guided_output(student, noise, t, cond, 1.0), c)


@pytest.mark.parametrize("sampler", ["stochastic", "euler"])
def test_sampler_visits_anchors_and_is_deterministic(bb, student, noise, sampler):
    cond = bb.encode_prompts(PROMPTS)
    rec = TimestepRecorder(student)
    a = bb.sample(rec, cond, noise, 4, sampler=sampler, generator=torch.Generator().manual_seed(2))
    b = bb.sample(student, cond, noise, 4, sampler=sampler, generator=torch.Generator().manual_seed(2))
    assert rec.seen == pytest.approx((bb.anchor_timesteps(4) / 1000).tolist(), abs=1e-6)
    assert a.shape == noise.shape and torch.equal(a, b)


def test_exported_student_in_flux_pipeline_matches_our_samplers(bb, student, teacher_dir, noise, tmp_path):
    bb.export_student(student, tmp_path / "student")
    reloaded = FluxTransformer2DModel.from_pretrained(tmp_path / "student" / "transformer")
    assert reloaded.config.guidance_embeds is False
    pipe = FluxPipeline.from_pretrained(teacher_dir, transformer=reloaded)
    pipe.set_progress_bar_config(disable=True)
    # default sigmas linspace(1, 1/4, 4) + dynamic shift at this resolution = our anchors
    run = dict(prompt=PROMPTS, latents=pack_latents(noise), num_inference_steps=4, height=RESOLUTION,
               width=RESOLUTION, max_sequence_length=512, output_type="latent")
    cond = bb.encode_prompts(PROMPTS)
    h, w = noise.shape[-2:]

    theirs = unpack_latents(pipe(**run).images, h, w)
    ours = bb.sample(student, cond, noise, 4, sampler="euler")
    assert torch.allclose(pipe.scheduler.sigmas[:-1], bb.anchor_timesteps(4) / 1000, atol=1e-6)
    assert torch.allclose(theirs, ours, atol=1e-5)

    # stochastic_sampling = SenseFlow's FlowMatchEulerX0Scheduler (x0, then fresh noise to the next
    # sigma). The pipeline draws that noise from the global RNG in the packed (B, HW/4, 4C) layout,
    # our sampler from `generator` in (B, C, H, W): same algorithm, permuted draws. So both are
    # checked against one x0 -> re-noise loop fed with the respective draws.
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, stochastic_sampling=True)
    torch.manual_seed(5)
    pipe_draws = [unpack_latents(torch.randn(run["latents"].shape), h, w) for _ in range(3)]
    torch.manual_seed(5)
    theirs = unpack_latents(pipe(**run).images, h, w)
    assert torch.allclose(theirs, renoise_loop(bb, student, cond, noise, pipe_draws), atol=1e-5)
    g = torch.Generator().manual_seed(5)
    our_draws = [torch.randn(noise.shape, generator=g) for _ in range(3)]
    ours = bb.sample(student, cond, noise, 4, sampler="stochastic", generator=torch.Generator().manual_seed(5))
    assert torch.allclose(ours, renoise_loop(bb, student, cond, noise, our_draws), atol=1e-6)


def renoise_loop(bb, net, cond, noise, draws):
    """x0 = G(x_t) at each anchor, then x_next = (1 - sigma_next) x0 + sigma_next * draws[i]."""
    ts = bb.anchor_timesteps(len(draws) + 1)
    x = noise
    with torch.no_grad():
        for i, t in enumerate(ts):
            x0 = bb.predict_x0(net, x, t.expand(len(x)), cond)
            if i + 1 < len(ts):
                x = bb.add_noise(x0, draws[i], ts[i + 1].expand(len(x)))
    return x0


def test_teacher_in_flux_pipeline_matches_our_guided_euler(bb, noise):
    pipe = bb.pipeline()
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(prompt=PROMPTS, latents=pack_latents(noise), num_inference_steps=4, height=RESOLUTION,
                  width=RESOLUTION, guidance_scale=3.5, max_sequence_length=512, output_type="latent").images
    ours = bb.sample(bb.denoiser, bb.encode_prompts(PROMPTS), noise, 4, sampler="euler", guidance_scale=3.5)
    assert torch.allclose(unpack_latents(theirs, *noise.shape[-2:]), ours, atol=1e-5)


def test_vae_latents_are_shifted_and_scaled(bb):
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        img = bb.decode(latents)
        assert torch.allclose(img, bb.vae.decode(latents / 0.3611 + 0.1159).sample.clamp(-1, 1), atol=1e-6)
        z = bb.vae.encode(img).latent_dist.sample(torch.Generator().manual_seed(0))
        assert torch.allclose(bb.encode_images(img, torch.Generator().manual_seed(0)), (z - 0.1159) * 0.3611, atol=1e-6)
    with pytest.raises(BackboneError, match="multiple of 4"):
        bb.latent_shape(34, 32)


def test_load_errors_name_the_path(bb, tmp_path):
    with pytest.raises(BackboneError, match="does not exist.*no-such-flux"):
        FluxBackbone.load(tmp_path / "no-such-flux")
    half = tmp_path / "half"
    (half / "transformer").mkdir(parents=True)
    with pytest.raises(BackboneError, match="half.*lacks vae, text_encoder, text_encoder_2, tokenizer"):
        load_backbone("flux", half)
    with pytest.raises(BackboneError, match="config.json"):
        bb.load_denoiser(tmp_path)
