"""SDXL family on tiny random components: DDPM schedule and anchors, float64 x0, zero uncond and
time ids, sampler, export into StableDiffusionXLPipeline (LCM and DDIM), load errors."""
import pytest
import torch
from diffusers import DDIMScheduler, LCMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

from backbones import load_backbone
from backbones.base import BackboneError
from backbones.sdxl import SDXLBackbone
from backbones.tiny import RESOLUTION, TimestepRecorder, sdxl_components

PROMPTS = ["a photo of a red circle", "two blue squares"]
ANCHORS = [999.0, 749.0, 499.0, 249.0]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("sdxl") / "teacher"
    StableDiffusionXLPipeline(**sdxl_components(seed=0), add_watermarker=False).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bb(teacher_dir):
    return load_backbone("sdxl", teacher_dir, resolution=RESOLUTION)


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


def pipeline(teacher_dir, unet, scheduler_cls, **scheduler_config):
    pipe = StableDiffusionXLPipeline.from_pretrained(teacher_dir, unet=unet, add_watermarker=False)
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, **scheduler_config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_anchors_are_the_released_values(bb):
    assert bb.anchor_timesteps(4).tolist() == ANCHORS
    assert bb.anchor_timesteps(2).tolist() == [999.0, 499.0] and bb.anchor_timesteps(1).tolist() == [999.0]
    for n in (1, 2, 4):
        a = bb.anchor_timesteps(n)
        assert len(a) == n and (a.diff() < 0).all()


def test_schedule_matches_diffusers_and_invariants(bb, teacher_dir):
    sched = StableDiffusionXLPipeline.from_pretrained(teacher_dir, add_watermarker=False).scheduler
    t = torch.arange(1000).float()
    assert torch.allclose(bb.alpha(t) ** 2, sched.alphas_cumprod, atol=1e-6)
    s, a = bb.sigma(t), bb.alpha(t)
    assert (s >= 0).all() and (s <= 1).all() and (a >= 0).all() and (a <= 1).all()
    assert (s.diff() > 0).all() and (a.diff() < 0).all() and torch.allclose(a ** 2 + s ** 2, torch.ones(1000))
    tt = bb.sample_training_timesteps(4000, torch.Generator().manual_seed(0))
    assert torch.equal(tt, tt.round()) and tt.min() == 0 and tt.max() == 999 and abs(tt.mean().item() - 499.5) < 20


def test_add_noise_then_x0_round_trips_in_float64(bb):
    x0, eps = torch.randn(4, 4, 16, 16), torch.randn(4, 4, 16, 16)
    tb = torch.tensor([0.0, 249.0, 749.0, 999.0])
    x_t = bb.add_noise(x0, eps, tb)
    assert torch.allclose(bb.to_x0(eps, x_t, tb), x0, atol=1e-5)  # 1/sqrt(abar_999) ~ 15x amplification
    assert torch.equal(bb.to_noise(eps, x_t, tb), eps) and torch.equal(bb.training_target(x0, eps), eps)
    abar = bb.alphas_cumprod[tb.long()].view(-1, 1, 1, 1)
    ref64 = (x_t.double() - (1 - abar).sqrt() * eps.double()) / abar.sqrt()
    assert torch.equal(bb.to_x0(eps, x_t, tb), ref64.float())  # released get_x0_from_noise in float64


def test_text_uncond_and_time_ids(bb):
    cond = bb.encode_prompts(PROMPTS)
    # penultimate CLIP-L (8) and CLIP-G (16) states concatenated; pooled = CLIP-G text_embeds
    assert cond.embeds.shape == (2, 77, 24) and cond.pooled.shape == (2, 8)
    assert cond.extra["time_ids"].tolist() == [[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]] * 2
    null = bb.null_conditioning(3)
    assert null.embeds.shape == (3, 77, 24) and not null.embeds.any() and not null.pooled.any()
    assert torch.equal(null.extra["time_ids"], bb.encode_prompts(["x"] * 3).extra["time_ids"])


@pytest.mark.parametrize("sampler", ["stochastic", "euler"])
def test_sampler_visits_anchors_and_is_deterministic(bb, student, noise, sampler):
    cond = bb.encode_prompts(PROMPTS)
    rec = TimestepRecorder(student)
    a = bb.sample(rec, cond, noise, 4, sampler=sampler, generator=torch.Generator().manual_seed(2))
    b = bb.sample(student, cond, noise, 4, sampler=sampler, generator=torch.Generator().manual_seed(2))
    assert rec.seen == ANCHORS
    assert a.shape == noise.shape and torch.equal(a, b)


def test_exported_student_in_sdxl_pipeline_matches_our_samplers(bb, student, teacher_dir, noise, tmp_path):
    bb.export_student(student, tmp_path / "student")
    reloaded = UNet2DConditionModel.from_pretrained(tmp_path / "student" / "unet")
    cond = bb.encode_prompts(PROMPTS)
    run = dict(prompt=PROMPTS, latents=noise, guidance_scale=0.0, height=RESOLUTION, width=RESOLUTION,
               output_type="latent")

    # released inference (DMD2 / SenseFlow): LCMScheduler with timesteps=[999, 749, 499, 249]. LCM is
    # stochastic (x0, then re-noise to the next timestep with the pipeline's generator) = our "stochastic";
    # its boundary scalings c_skip ~ 4e-8, c_out ~ 1 - 2e-8 at t >= 249 are negligible.
    lcm = pipeline(teacher_dir, reloaded, LCMScheduler)
    theirs = lcm(**run, timesteps=[int(t) for t in ANCHORS], generator=torch.Generator().manual_seed(5)).images
    ours = bb.sample(student, cond, noise, 4, sampler="stochastic", generator=torch.Generator().manual_seed(5))
    assert lcm.scheduler.timesteps.tolist() == ANCHORS
    assert torch.allclose(theirs, ours, atol=1e-4, rtol=1e-5)

    # deterministic: DDIM (eta 0) on the trailing 4-step grid = [999, 749, 499, 249]; set_alpha_to_one
    # makes its last step return x0 (SDXL's config would stop at abar_0 instead)
    ddim = pipeline(teacher_dir, reloaded, DDIMScheduler, timestep_spacing="trailing", set_alpha_to_one=True,
                    clip_sample=False)
    theirs = ddim(**run, num_inference_steps=4).images
    ours = bb.sample(student, cond, noise, 4, sampler="euler")
    assert ddim.scheduler.timesteps.tolist() == ANCHORS
    assert torch.allclose(theirs, ours, atol=1e-4, rtol=1e-5)


def test_teacher_cfg_matches_pipeline_zero_negative_prompt(bb, teacher_dir, noise):
    # the pipeline's force_zeros_for_empty_prompt negative = our zero uncond (DMD2 convention)
    ddim = pipeline(teacher_dir, bb.denoiser, DDIMScheduler, timestep_spacing="trailing", set_alpha_to_one=True,
                    clip_sample=False)
    theirs = ddim(prompt=PROMPTS, latents=noise, guidance_scale=8.0, num_inference_steps=4, height=RESOLUTION,
                  width=RESOLUTION, output_type="latent").images
    ours = bb.sample(bb.denoiser, bb.encode_prompts(PROMPTS), noise, 4, sampler="euler", guidance_scale=8.0)
    assert torch.allclose(theirs, ours, atol=1e-4, rtol=1e-5)


def test_vae_latents_are_scaled(bb):
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        img = bb.decode(latents)
        assert torch.allclose(img, bb.vae.decode(latents / 0.13025).sample.clamp(-1, 1), atol=1e-6)
        z = bb.vae.encode(img).latent_dist.sample(torch.Generator().manual_seed(0))
        assert torch.allclose(bb.encode_images(img, torch.Generator().manual_seed(0)), z * 0.13025, atol=1e-6)


def test_load_errors_name_the_path(bb, tmp_path):
    with pytest.raises(BackboneError, match="does not exist.*no-such-sdxl"):
        SDXLBackbone.load(tmp_path / "no-such-sdxl")
    half = tmp_path / "half"
    (half / "unet").mkdir(parents=True)
    with pytest.raises(BackboneError, match="half.*lacks vae, text_encoder, text_encoder_2, tokenizer"):
        load_backbone("sdxl", half)
    with pytest.raises(BackboneError, match="config.json"):
        bb.load_denoiser(tmp_path)


def test_v_prediction_teacher_is_supported_end_to_end(tmp_path, noise):
    """A teacher whose scheduler says prediction_type v_prediction: x0 / eps / training target are
    v's, and the student samples exactly as StableDiffusionXLPipeline does (LCM and DDIM, v-pred)."""
    path = tmp_path / "teacher_v"
    pipe = StableDiffusionXLPipeline(**sdxl_components(seed=0), add_watermarker=False)
    pipe.scheduler = pipe.scheduler.__class__.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    pipe.save_pretrained(path)
    bb = load_backbone("sdxl", path, resolution=RESOLUTION)
    assert bb.prediction == "v"
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(noise.shape, generator=g), torch.randn(noise.shape, generator=g)
    t = torch.tensor([999.0, 249.0])
    x_t = bb.add_noise(x0, eps, t)
    v = bb.training_target(x0, eps, t)
    assert torch.allclose(bb.to_x0(v, x_t, t), x0, atol=1e-5) and torch.allclose(bb.to_noise(v, x_t, t), eps, atol=1e-5)

    student = bb.init_student().eval()
    cond = bb.encode_prompts(PROMPTS)
    run = dict(prompt=PROMPTS, latents=noise, guidance_scale=0.0, height=RESOLUTION, width=RESOLUTION,
               output_type="latent")
    lcm = pipeline(path, student, LCMScheduler, prediction_type="v_prediction")
    theirs = lcm(**run, timesteps=[int(t) for t in ANCHORS], generator=torch.Generator().manual_seed(5)).images
    ours = bb.sample(student, cond, noise, 4, sampler="stochastic", generator=torch.Generator().manual_seed(5))
    assert torch.allclose(theirs, ours, atol=1e-4, rtol=1e-5)
    ddim = pipeline(path, student, DDIMScheduler, timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=False,
                    prediction_type="v_prediction")
    assert torch.allclose(ddim(**run, num_inference_steps=4).images, bb.sample(student, cond, noise, 4, sampler="euler"),
                          atol=1e-4, rtol=1e-5)


def test_unknown_prediction_type_is_a_clear_error(tmp_path):
    path = tmp_path / "teacher_sample"
    pipe = StableDiffusionXLPipeline(**sdxl_components(seed=0), add_watermarker=False)
    pipe.scheduler = pipe.scheduler.__class__.from_config(pipe.scheduler.config, prediction_type="sample")
    pipe.save_pretrained(path)
    with pytest.raises(BackboneError, match="prediction_type 'sample' is not supported"):
        load_backbone("sdxl", path, resolution=RESOLUTION)
