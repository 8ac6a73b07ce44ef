"""SD3 family on tiny random components: schedule, anchors, sampler, the anchor trap of
StableDiffusion3Pipeline's sigmas, export into the diffusers pipeline, load errors."""
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

from backbones import load_backbone
from backbones.base import BackboneError
from backbones.sd3 import SD3Backbone, pipeline_sigmas_for_anchors
from backbones.tiny import RESOLUTION, TimestepRecorder, sd3_components

PROMPTS = ["a photo of a red circle", "two blue squares"]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("sd3") / "teacher"
    StableDiffusion3Pipeline(**sd3_components(seed=0)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bb(teacher_dir):
    return load_backbone("sd3", teacher_dir)


@pytest.fixture(scope="module")
def noise(bb):
    return torch.randn(2, *bb.latent_shape(RESOLUTION, RESOLUTION), generator=torch.Generator().manual_seed(1))


def test_load_reads_the_folder(bb):
    assert isinstance(bb, SD3Backbone) and bb.shift == 3.0 and bb.max_sequence_length == 77
    assert bb.latent_shape(RESOLUTION, RESOLUTION) == (4, 16, 16)
    with pytest.raises(BackboneError, match="multiple of 4"):
        bb.latent_shape(30, 32)


def test_anchors_are_the_released_values(bb):
    assert torch.allclose(bb.anchor_timesteps(4), torch.tensor([1000.0, 900.0, 750.0, 500.0]), atol=1e-3)
    for n in (1, 2):
        a = bb.anchor_timesteps(n)
        assert len(a) == n and a[0] == 1000.0 and (a.diff() < 0).all()
    assert torch.allclose(bb.anchor_timesteps(2), torch.tensor([1000.0, 750.0]), atol=1e-3)


def test_schedule_invariants(bb):
    t = torch.linspace(0, 1000, 101)
    s, a = bb.sigma(t), bb.alpha(t)
    assert (s >= 0).all() and (s <= 1).all() and (a >= 0).all() and (a <= 1).all()
    assert (s.diff() > 0).all() and (a.diff() < 0).all()
    tt = bb.sample_training_timesteps(2000, torch.Generator().manual_seed(0))
    assert (tt > 0).all() and (tt < 1000).all() and tt.mean() > 600  # shift 3 pushes logit-normal to high noise
    x0, eps = torch.randn(4, 4, 16, 16), torch.randn(4, 4, 16, 16)
    tb = torch.tensor([10.0, 400.0, 750.0, 1000.0])
    x_t = bb.add_noise(x0, eps, tb)
    v = bb.training_target(x0, eps)
    assert torch.allclose(bb.to_x0(v, x_t, tb), x0, atol=1e-5)
    assert torch.allclose(bb.to_noise(v, x_t, tb), eps, atol=1e-5)


def test_text_and_null_conditioning(bb):
    cond = bb.encode_prompts(PROMPTS)
    # 77 CLIP tokens + 77 T5 tokens (released max_sequence_length), T5 width; pooled = CLIP-L + CLIP-G proj
    assert cond.embeds.shape == (2, 154, 32) and cond.pooled.shape == (2, 16)
    null = bb.null_conditioning(3)
    empty = bb.encode_prompts([""])
    assert null.embeds.shape == (3, 154, 32) and torch.equal(null.embeds[2], empty.embeds[0])
    assert torch.equal(null.pooled[1], empty.pooled[0]) and null.embeds.abs().sum() > 0  # real "" embeddings


def test_cfg_is_two_pass_with_empty_prompt(bb, noise):
    cond = bb.encode_prompts(PROMPTS)
    t = torch.tensor([800.0, 800.0])
    with torch.no_grad():
        c = bb.model_output(bb.denoiser, noise, t, cond)
        u = bb.model_output(bb.denoiser, noise, t, bb.null_conditioning(2))
        g = bb.guided_output(bb.denoiser, noise, t, cond, 4.0)
    assert torch.allclose(g, u + 4.0 * (c - u), atol=1e-5)


@pytest.mark.parametrize("sampler", ["stochastic", "euler"])
def test_sampler_visits_anchors_and_is_deterministic(bb, noise, sampler):
    cond = bb.encode_prompts(PROMPTS)
    rec = TimestepRecorder(bb.denoiser)
    a = bb.sample(rec, cond, noise, 4, sampler=sampler, generator=torch.Generator().manual_seed(2))
    b = bb.sample(bb.denoiser, cond, noise, 4, sampler=sampler, generator=torch.Generator().manual_seed(2))
    assert rec.seen == pytest.approx([1000.0, 900.0, 750.0, 500.0], abs=1e-3)
    assert a.shape == noise.shape and torch.equal(a, b)


def test_anchor_trap_diffusers_reshifts_user_sigmas():
    anchors = [1.0, 0.9, 0.75, 0.5]
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(sigmas=anchors)  # what the released SD3.5 script passes
    trapped = sched.sigmas[:-1]
    assert torch.allclose(trapped, torch.tensor([1.0, 0.9643, 0.9, 0.75]), atol=1e-4)
    assert not torch.allclose(trapped, torch.tensor(anchors), atol=1e-2)

    fixed = pipeline_sigmas_for_anchors(anchors, 3.0)
    assert fixed == pytest.approx([1.0, 0.75, 0.5, 0.25])
    sched.set_timesteps(sigmas=fixed)
    assert torch.allclose(sched.sigmas, torch.tensor(anchors + [0.0]), atol=1e-6)
    assert torch.allclose(sched.timesteps, torch.tensor([1000.0, 900.0, 750.0, 500.0]), atol=1e-3)
    with pytest.raises(ValueError, match="timesteps / 1000"):
        pipeline_sigmas_for_anchors([1000.0, 900.0], 3.0)


def test_exported_student_in_diffusers_pipeline_matches_our_samplers(bb, teacher_dir, noise, tmp_path):
    student = bb.init_student()
    with torch.no_grad():  # make the student differ from the teacher
        for p in student.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    bb.export_student(student, tmp_path / "student")
    reloaded = SD3Transformer2DModel.from_pretrained(tmp_path / "student" / "transformer")
    pipe = StableDiffusion3Pipeline.from_pretrained(teacher_dir, transformer=reloaded)
    pipe.set_progress_bar_config(disable=True)
    run = dict(prompt=PROMPTS, latents=noise, sigmas=bb.pipeline_sigmas(4), guidance_scale=0.0,
               max_sequence_length=77, height=RESOLUTION, width=RESOLUTION, output_type="latent")
    cond = bb.encode_prompts(PROMPTS)

    theirs = pipe(**run).images
    ours = bb.sample(student, cond, noise, 4, sampler="euler")
    assert torch.allclose(theirs, ours, atol=1e-5)

    # FlowMatchEuler's stochastic_sampling is SenseFlow's FlowMatchEulerX0Scheduler (x0, then fresh
    # noise to the next sigma); the pipeline draws that noise from the global RNG, we from `generator`
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, stochastic_sampling=True)
    torch.manual_seed(5)
    theirs = pipe(**run).images
    ours = bb.sample(student, cond, noise, 4, sampler="stochastic", generator=torch.Generator().manual_seed(5))
    assert torch.allclose(theirs, ours, atol=1e-5)


def test_teacher_cfg_matches_pipeline_with_empty_negative_prompt(bb, noise):
    # the pipeline's CFG negative is encode_prompt("") = our null_conditioning (released uncond)
    pipe = bb.pipeline()
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(prompt=PROMPTS, latents=noise, sigmas=bb.pipeline_sigmas(4), guidance_scale=4.0,
                  max_sequence_length=77, height=RESOLUTION, width=RESOLUTION, output_type="latent").images
    ours = bb.sample(bb.denoiser, bb.encode_prompts(PROMPTS), noise, 4, sampler="euler", guidance_scale=4.0)
    assert torch.allclose(theirs, ours, atol=1e-5)


def test_vae_latents_are_shifted_and_scaled(bb):
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        img = bb.decode(latents)
        assert torch.allclose(img, bb.vae.decode(latents / 1.5305 + 0.0609).sample.clamp(-1, 1), atol=1e-6)
        z = bb.vae.encode(img).latent_dist.sample(torch.Generator().manual_seed(0))
        assert torch.allclose(bb.encode_images(img, torch.Generator().manual_seed(0)), (z - 0.0609) * 1.5305, atol=1e-6)


def test_load_errors_name_the_path(bb, tmp_path):
    missing = tmp_path / "no-such-sd3"
    with pytest.raises(BackboneError, match="does not exist.*no-such-sd3"):
        SD3Backbone.load(missing)
    half = tmp_path / "half"
    (half / "transformer").mkdir(parents=True)
    (half / "vae").mkdir()
    with pytest.raises(BackboneError, match="half.*lacks text_encoder, text_encoder_2, text_encoder_3, tokenizer"):
        load_backbone("sd3", half)
    with pytest.raises(BackboneError, match="config.json"):
        bb.load_denoiser(tmp_path)
