"""Tiny random-weight components of the real families, built from the real diffusers/transformers
classes with local tokenizers (nothing is downloaded). Each `*_components` returns the keyword
arguments of the family's diffusers pipeline class, so `Pipeline(**components)` works and
`save_pretrained` writes a teacher folder in the real layout.

Sizes: images 32x32 pixels, VAE factor 2 -> 16x16 latents; CLIP max length 77 as in the real
tokenizers.
"""
from __future__ import annotations

import string

import torch
from diffusers import (AutoencoderKL, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel,
                       SD3Transformer2DModel, UNet2DConditionModel)
from tokenizers import pre_tokenizers
from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, T5Config,
                          T5EncoderModel, T5Tokenizer)

RESOLUTION = 32  # pixels
VAE_FACTOR = 2


def clip_tokenizer(max_length: int = 77) -> CLIPTokenizer:
    """Byte-level CLIP BPE with single-character pieces only (no merges): every byte and its
    end-of-word form, plus <|startoftext|> = 0 and <|endoftext|> = 1 (also the pad token)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def t5_tokenizer() -> T5Tokenizer:
    """T5 Unigram tokenizer over single printable characters (<pad>=0, </s>=1, <unk>=2)."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def clip_text_config(tokenizer: CLIPTokenizer, hidden: int, projection: int) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                          num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length,
                          projection_dim=projection, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, hidden_act="gelu")


def t5_encoder(tokenizer: T5Tokenizer, d_model: int = 32) -> T5EncoderModel:
    return T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=1,
                                   num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=32,
                                   feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
                                   decoder_start_token_id=0))


def tiny_vae(latent_channels: int, scaling_factor: float, shift_factor: float | None) -> AutoencoderKL:
    """Two blocks -> scale factor 2 (VAE_FACTOR)."""
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                         up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 8], layers_per_block=1,
                         latent_channels=latent_channels, norm_num_groups=4, sample_size=RESOLUTION,
                         scaling_factor=scaling_factor, shift_factor=shift_factor)


def _eval(*models):
    for m in models:
        m.eval()
    return models


def sd3_components(seed: int = 0) -> dict:
    """StableDiffusion3Pipeline kwargs: CLIP widths 8 and 16 (concatenated 24, padded to the T5
    width 32 like 2048 -> 4096), pooled 8 + 8 = 16, 4-channel latents, qk rms-norm as SD3.5."""
    torch.manual_seed(seed)
    tok, tok2, tok3 = clip_tokenizer(), clip_tokenizer(), t5_tokenizer()
    te = CLIPTextModelWithProjection(clip_text_config(tok, hidden=8, projection=8))
    te2 = CLIPTextModelWithProjection(clip_text_config(tok2, hidden=16, projection=8))
    te3 = t5_encoder(tok3, d_model=32)
    transformer = SD3Transformer2DModel(sample_size=RESOLUTION // VAE_FACTOR, patch_size=2, in_channels=4, out_channels=4,
                                        num_layers=1, attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                        caption_projection_dim=16, pooled_projection_dim=16, pos_embed_max_size=16,
                                        qk_norm="rms_norm")
    vae = tiny_vae(4, scaling_factor=1.5305, shift_factor=0.0609)
    _eval(te, te2, te3, transformer, vae)
    return dict(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
                text_encoder=te, tokenizer=tok, text_encoder_2=te2, tokenizer_2=tok2,
                text_encoder_3=te3, tokenizer_3=tok3)


def flux_components(seed: int = 0, guidance_embeds: bool = True) -> dict:
    """FluxPipeline kwargs: CLIP-L stand-in (pooled width 16), T5 width 32, 4-channel latents
    (packed 16 channels), FLUX.1-dev-like scheduler config (dynamic shift)."""
    torch.manual_seed(seed)
    tok, tok2 = clip_tokenizer(), t5_tokenizer()
    te = CLIPTextModel(clip_text_config(tok, hidden=16, projection=16))
    te2 = t5_encoder(tok2, d_model=32)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=16, guidance_embeds=guidance_embeds,
                                         axes_dims_rope=(4, 4, 8))
    vae = tiny_vae(4, scaling_factor=0.3611, shift_factor=0.1159)
    _eval(te, te2, transformer, vae)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    return dict(scheduler=scheduler, vae=vae, text_encoder=te, tokenizer=tok, text_encoder_2=te2, tokenizer_2=tok2,
                transformer=transformer)


def sdxl_components(seed: int = 0) -> dict:
    """StableDiffusionXLPipeline kwargs: CLIP-L / CLIP-G stand-ins of widths 8 / 16 (cross-attention
    24), pooled projection 8, time-id embedding 4 (4 * 6 + 8 = 32 added-embedding inputs), SDXL's
    released scheduler config (Euler, scaled_linear 0.00085 / 0.012)."""
    torch.manual_seed(seed)
    tok, tok2 = clip_tokenizer(), clip_tokenizer()
    te = CLIPTextModel(clip_text_config(tok, hidden=8, projection=8))
    te2 = CLIPTextModelWithProjection(clip_text_config(tok2, hidden=16, projection=8))
    unet = UNet2DConditionModel(sample_size=RESOLUTION // VAE_FACTOR, in_channels=4, out_channels=4,
                                block_out_channels=(8, 16), layers_per_block=1,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=4,
                                transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=32,
                                cross_attention_dim=24, norm_num_groups=4)
    vae = tiny_vae(4, scaling_factor=0.13025, shift_factor=None)
    _eval(te, te2, unet, vae)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")
    return dict(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2, unet=unet,
                scheduler=scheduler)


class TimestepRecorder(torch.nn.Module):
    """Wraps a denoiser and records the first-sample timestep of every call (keyword `timestep`);
    exposes the wrapped net's `config` so family code sees e.g. guidance_embeds."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net, self.seen = net, []
        self.config = net.config

    def forward(self, **kw):
        self.seen.append(float(kw["timestep"].reshape(-1)[0]))
        return self.net(**kw)
