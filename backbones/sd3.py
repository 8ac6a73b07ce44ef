"""SD 3.5 Medium / Large: rectified flow with a static timestep shift (3.0), an
`SD3Transformer2DModel` called with t = 1000 * sigma, a 16-channel VAE whose latents are
(z - shift_factor) * scaling_factor, and CLIP-L + CLIP-G + T5 text encoders.

Teacher folder (a diffusers StableDiffusion3Pipeline folder):
    transformer/ vae/ text_encoder/ text_encoder_2/ text_encoder_3/ tokenizer/ tokenizer_2/ tokenizer_3/
    scheduler/scheduler_config.json   optional; its `shift` is used (default 3.0)

Text encoding is the pipeline's own `encode_prompt` (CLIP penultimate hidden states of both
encoders concatenated and zero-padded to the T5 width, then the T5 tokens appended along the
sequence; pooled = both CLIP text_embeds concatenated). T5 max_sequence_length is 77 as in the
released SenseFlow code (the pipeline default is 256).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from torch import nn
from transformers import AutoTokenizer, CLIPTextModelWithProjection, T5EncoderModel

from backbones.base import Backbone, BackboneError, Conditioning, require_folder
from backbones.schedules import flow_anchor_sigmas, logit_normal, shift_sigmas, unshift_sigmas
from backbones.vae import decode_latents, encode_to_latents, load_vae, vae_scale_factor

DEFAULT_SHIFT = 3.0
T5_MAX_SEQUENCE_LENGTH = 77
TEACHER_SUBFOLDERS = ["transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3",
                      "tokenizer", "tokenizer_2", "tokenizer_3"]


def pipeline_sigmas_for_anchors(anchor_sigmas, shift: float = DEFAULT_SHIFT) -> list[float]:
    """The `sigmas=` to give StableDiffusion3Pipeline so that it visits exactly `anchor_sigmas`.

    diffusers' FlowMatchEulerDiscreteScheduler.set_timesteps applies the static shift again to
    user-given sigmas, so the released script's sigmas=[1.0, 0.9, 0.75, 0.5] really runs at
    [1.0, 0.964, 0.9, 0.75]. Passing the unshifted values ([1.0, 0.75, 0.5, 0.25] at shift 3)
    makes the pipeline visit the training anchors. `anchor_sigmas` are sigmas in (0, 1], not
    timesteps (divide the backbone's anchor timesteps by 1000)."""
    s = torch.as_tensor(anchor_sigmas, dtype=torch.float64)
    if s.numel() == 0 or (s <= 0).any() or (s > 1).any():
        raise ValueError(f"anchor sigmas must lie in (0, 1], got {s.tolist()} (timesteps / 1000?)")
    return unshift_sigmas(s, shift).tolist()


def _param_dtype(net: nn.Module) -> torch.dtype:
    return next(net.parameters()).dtype


def sd3_unused_parameters(net: nn.Module) -> set[str]:
    """Parameters of an SD3Transformer2DModel that never get a gradient: in a joint block with
    `context_pre_only` (the last one) the text stream's attention output is discarded, so the text
    queries (`attn.add_q_proj`, `attn.norm_added_q`) do not reach the output."""
    net = getattr(net, "module", net)
    if not isinstance(net, SD3Transformer2DModel):
        return set()
    unused = set()
    for i, block in enumerate(net.transformer_blocks):
        if getattr(block, "context_pre_only", False):
            prefix = f"transformer_blocks.{i}.attn."
            unused |= {prefix + n for n, _ in block.attn.named_parameters() if n.startswith(("add_q_proj.", "norm_added_q."))}
    return unused


class SD3FlowSchedule:
    """SD3's rectified-flow schedule with a static shift and its empty-prompt CFG input, shared
    by the sd3 family and the toy family (which is SD3 in pixel space). Needs `self.shift`,
    `self.num_train_timesteps`, `self.encode_prompts` and `self._null` (initially None)."""

    def unused_parameters(self, net: nn.Module) -> set[str]:
        return sd3_unused_parameters(net)

    def null_conditioning(self, batch: int) -> Conditioning:
        """encode_prompt("") (real empty-prompt embeddings, released code), repeated `batch` times."""
        if self._null is None:
            with torch.no_grad():
                self._null = self.encode_prompts([""])
        n = self._null
        return Conditioning(n.embeds.expand(batch, -1, -1), n.pooled.expand(batch, -1))

    def sigma(self, t):
        return t / self.num_train_timesteps

    def alpha(self, t):
        return 1 - t / self.num_train_timesteps

    def anchor_timesteps(self, num_steps: int) -> torch.Tensor:
        """1000 * shift(linspace(1, 1/n, n)): [1000, 900, 750, 500] for n=4 at shift 3."""
        return self.num_train_timesteps * flow_anchor_sigmas(num_steps, self.shift)

    def sample_training_timesteps(self, batch, generator=None):
        """t = 1000 * shift(u), u ~ logit-normal(0, 1) (SD3 training density), float (batch,)."""
        return self.num_train_timesteps * shift_sigmas(logit_normal(batch, generator), self.shift)


class SD3Backbone(SD3FlowSchedule, Backbone):
    """SD3-family teacher. Latents (B, C, H/8, W/8); t = 1000 * sigma in [0, 1000];
    Conditioning: embeds (B, 77 + max_sequence_length, T5 width), pooled (B, CLIP-L + CLIP-G proj)."""

    family = "sd3"
    prediction = "flow"
    denoiser_subfolder = "transformer"

    def __init__(self, denoiser: SD3Transformer2DModel, vae, text_encoder: CLIPTextModelWithProjection,
                 text_encoder_2: CLIPTextModelWithProjection, text_encoder_3: T5EncoderModel,
                 tokenizer, tokenizer_2, tokenizer_3, shift: float = DEFAULT_SHIFT,
                 max_sequence_length: int = T5_MAX_SEQUENCE_LENGTH, device="cpu", dtype=torch.float32):
        """Build from already-constructed components (tests, or models already in memory)."""
        super().__init__(denoiser, device, dtype)
        self.vae = vae
        self.text_encoder, self.text_encoder_2, self.text_encoder_3 = text_encoder, text_encoder_2, text_encoder_3
        self.tokenizer, self.tokenizer_2, self.tokenizer_3 = tokenizer, tokenizer_2, tokenizer_3
        self.shift = float(shift)
        self.max_sequence_length = int(max_sequence_length)
        self._null: Conditioning | None = None

    # ---- loading --------------------------------------------------------------------------
    @classmethod
    def load(cls, path, device="cpu", dtype=torch.float32, max_sequence_length: int = T5_MAX_SEQUENCE_LENGTH
             ) -> "SD3Backbone":
        path = require_folder(path, TEACHER_SUBFOLDERS, "SD3 teacher")
        shift = DEFAULT_SHIFT
        sched = path / "scheduler" / "scheduler_config.json"
        if sched.exists():
            shift = float(json.loads(sched.read_text()).get("shift", DEFAULT_SHIFT))

        def frozen(model_cls, sub):
            return model_cls.from_pretrained(path / sub, torch_dtype=dtype).to(device).eval().requires_grad_(False)

        return cls(
            frozen(SD3Transformer2DModel, "transformer"), load_vae(path / "vae", device),
            frozen(CLIPTextModelWithProjection, "text_encoder"), frozen(CLIPTextModelWithProjection, "text_encoder_2"),
            frozen(T5EncoderModel, "text_encoder_3"),
            AutoTokenizer.from_pretrained(path / "tokenizer"), AutoTokenizer.from_pretrained(path / "tokenizer_2"),
            AutoTokenizer.from_pretrained(path / "tokenizer_3"),
            shift, max_sequence_length, device, dtype)

    def load_denoiser(self, path) -> nn.Module:
        path = Path(path)
        sub = path / self.denoiser_subfolder if (path / self.denoiser_subfolder).is_dir() else path
        require_folder(sub, ["config.json"], "SD3 denoiser")
        return SD3Transformer2DModel.from_pretrained(sub, torch_dtype=self.dtype).to(self.device)

    def pipeline(self, transformer: nn.Module | None = None, scheduler=None) -> StableDiffusion3Pipeline:
        """The diffusers pipeline over these components with `transformer` (default: the teacher)
        and `scheduler` (default: FlowMatchEulerDiscreteScheduler with this shift). For a few-step
        student call it with `sigmas=pipeline_sigmas_for_anchors(...)`."""
        return StableDiffusion3Pipeline(
            transformer=self.denoiser if transformer is None else transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=self.shift) if scheduler is None else scheduler,
            vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
            text_encoder_2=self.text_encoder_2, tokenizer_2=self.tokenizer_2,
            text_encoder_3=self.text_encoder_3, tokenizer_3=self.tokenizer_3)

    def pipeline_sigmas(self, num_steps: int) -> list[float]:
        """`sigmas=` for `pipeline(student)(...)` that make it visit `anchor_timesteps(num_steps)`."""
        return pipeline_sigmas_for_anchors(self.anchor_timesteps(num_steps) / self.num_train_timesteps, self.shift)

    # ---- text -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """Frozen text features via StableDiffusion3Pipeline.encode_prompt (no gradients)."""
        embeds, _, pooled, _ = self.pipeline().encode_prompt(
            prompt=list(prompts), prompt_2=None, prompt_3=None, device=self.device,
            do_classifier_free_guidance=False, max_sequence_length=self.max_sequence_length)
        return Conditioning(embeds, pooled)

    # ---- network --------------------------------------------------------------------------
    def model_output(self, net, x_t, t, cond, guidance=None):
        """Velocity (eps - x0), same shape/dtype as x_t. The net gets t = 1000 * sigma in float32
        (as the pipeline passes it) and x_t / text features in its own dtype."""
        dt = _param_dtype(net)
        out = net(hidden_states=x_t.to(dt), timestep=t.to(torch.float32), encoder_hidden_states=cond.embeds.to(dt),
                  pooled_projections=cond.pooled.to(dt), return_dict=False)[0]
        return out.to(x_t.dtype)

    # ---- pixels ---------------------------------------------------------------------------
    def decode(self, latents):
        return decode_latents(self.vae, latents)

    def encode_images(self, images, generator=None):
        return encode_to_latents(self.vae, images, generator)

    def latent_shape(self, height, width):
        f = vae_scale_factor(self.vae)
        patch = getattr(self.denoiser, "module", self.denoiser).config.patch_size
        if height % (f * patch) or width % (f * patch):
            raise BackboneError(f"SD3: image size {height}x{width} must be a multiple of {f * patch}")
        return (self.vae.config.latent_channels, height // f, width // f)
