"""The ToyWorld family: SD3's transformer class and SD3's flow-matching schedule, in pixel
space (a tiny VAE cost the oracle most of its accuracy in a prototype, so latents = pixels in
[-1, 1]), with a small text encoder over a word-level tokenizer, trained jointly with it. SD3's joint
attention adds no positions to the text tokens, so word order reaches the denoiser only through what
the encoder writes into each token's state:

- `toy_clip` (default): the text tower of the toy CLIP (`models/toy/clip`, the `encoders` stage), a
  causal `CLIPTextModel` already trained to tell "a red circle and a blue square" from the colours
  swapped, fine-tuned with the teacher (SD3 likewise conditions on pretrained CLIP text encoders); the
  pooled vector is its end-of-text token;
- `bert`: a bidirectional `BertModel` with absolute position embeddings; the pooled vector
  is the masked mean of its token states (a bag of words: binding is left to the token stream);
- `clip`: a causal `CLIPTextModel` with absolute position embeddings; the pooled vector is its
  end-of-text token (CLIP's pooler output), which has read the whole prompt in order;
- `t5`: a bidirectional `T5EncoderModel` (relative positions only); the pooled vector is the masked
  mean of its token states. Trained from scratch, its attention saturates onto word identity within a
  few hundred steps, the relative-position bias stops mattering and every token state is a function
  of the word and the bag of words: the first shipped teacher gave bit-identical outputs for "a red
  circle and a blue square" and "a blue circle and a red square" (results/teacher/experiments/).

The kind is read back from `text_encoder/config.json` (its `model_type`).

Teacher folder layout (diffusers-style):
    transformer/   SD3Transformer2DModel (config.json + diffusion_pytorch_model.safetensors)
    text_encoder/  CLIPTextModel (toy_clip, clip), BertModel or T5EncoderModel, read back from its config
    tokenizer/     PreTrainedTokenizerFast (word level)
    scheduler/     FlowMatchEulerDiscreteScheduler config (records the shift)
There is no diffusers pipeline class for a pixel-space SD3 model; `sample` is the pipeline.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from torch import nn
from transformers import BertModel, CLIPTextModel, T5EncoderModel

from backbones.base import Backbone, BackboneError, Conditioning, require_folder
from backbones.sd3 import SD3FlowSchedule
from toyworld.encoders import (build_tokenizer, load_tokenizer, teacher_bert_text_config, teacher_clip_text_config,
                               text_encoder_config, tokenize)
from toyworld.world import RESOLUTION

DEFAULT_SHIFT = 3.0
TEXT_ENCODERS = ("toy_clip", "bert", "clip", "t5")
_TEXT_CLASSES = {"bert": BertModel, "clip_text_model": CLIPTextModel, "t5": T5EncoderModel}  # by config model_type


def transformer_config(layers: int = 4, heads: int = 4, head_dim: int = 32, text_dim: int = 128,
                       patch_size: int = 4, resolution: int = RESOLUTION) -> dict:
    return dict(sample_size=resolution, patch_size=patch_size, in_channels=3, out_channels=3, num_layers=layers,
                attention_head_dim=head_dim, num_attention_heads=heads, joint_attention_dim=text_dim,
                caption_projection_dim=heads * head_dim, pooled_projection_dim=text_dim,
                pos_embed_max_size=resolution // patch_size)


class ToyBackbone(SD3FlowSchedule, Backbone):
    family = "toy"
    prediction = "flow"
    denoiser_subfolder = "transformer"
    resolution = (RESOLUTION, RESOLUTION)

    def __init__(self, denoiser: SD3Transformer2DModel, text_encoder: BertModel | CLIPTextModel | T5EncoderModel, tokenizer,
                 shift: float = DEFAULT_SHIFT, device="cpu", dtype=torch.float32):
        super().__init__(denoiser, device, dtype)
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.shift = float(shift)
        self._null: Conditioning | None = None

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def new(cls, layers=4, heads=4, head_dim=32, text_width=128, text_layers=2, shift=DEFAULT_SHIFT, seed=0,
            device="cpu", text_encoder: str = "bert", text_init=None) -> "ToyBackbone":
        """A freshly initialised teacher (for pretraining on ToyWorld); `text_encoder` is one of
        TEXT_ENCODERS (module docstring); `toy_clip` reads the CLIP folder `text_init` (its text tower and
        tokenizer; `text_width` and `text_layers` are then the tower's own)."""
        if text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"unknown toy text encoder {text_encoder!r}; use one of {TEXT_ENCODERS}")
        torch.manual_seed(seed)
        tokenizer = build_tokenizer()
        if text_encoder == "toy_clip":
            folder = require_folder(text_init or "", ["config.json", "tokenizer.json"], "toy CLIP (teacher.text_encoder_init)")
            text = CLIPTextModel.from_pretrained(folder)
            tokenizer = load_tokenizer(folder)
            if tokenizer.get_vocab() != build_tokenizer().get_vocab():
                raise BackboneError(f"the tokenizer in {folder} is not ToyWorld's word-level vocabulary; retrain the "
                                    f"toy CLIP (dvc repro -f encoders)")
            text_width = text.config.hidden_size
        elif text_encoder == "bert":
            text = BertModel(teacher_bert_text_config(len(tokenizer), width=text_width, layers=text_layers),
                             add_pooling_layer=False)
        elif text_encoder == "clip":
            text = CLIPTextModel(teacher_clip_text_config(len(tokenizer), width=text_width, layers=text_layers))
        else:
            text = T5EncoderModel(text_encoder_config(len(tokenizer), width=text_width, layers=text_layers))
        net = SD3Transformer2DModel(**transformer_config(layers, heads, head_dim, text_width))
        return cls(net.to(device), text.to(device), tokenizer, shift, device)

    @classmethod
    def load(cls, path, device="cpu", dtype=torch.float32) -> "ToyBackbone":
        path = require_folder(path, ["transformer", "text_encoder", "tokenizer"], "toy teacher")
        shift = DEFAULT_SHIFT
        sched = path / "scheduler" / "scheduler_config.json"
        if sched.exists():
            shift = float(json.loads(sched.read_text()).get("shift", DEFAULT_SHIFT))
        net = SD3Transformer2DModel.from_pretrained(path / "transformer", torch_dtype=dtype).to(device).eval()
        kind = json.loads((path / "text_encoder" / "config.json").read_text()).get("model_type")
        if kind not in _TEXT_CLASSES:
            raise BackboneError(f"{path / 'text_encoder'} holds a {kind!r} text encoder; the toy teacher reads "
                                f"{sorted(_TEXT_CLASSES)}")
        text_class = _TEXT_CLASSES[kind]
        text = text_class.from_pretrained(path / "text_encoder", torch_dtype=dtype).to(device).eval()
        return cls(net, text, load_tokenizer(path / "tokenizer"), shift, device, dtype)

    def load_denoiser(self, path) -> nn.Module:
        path = Path(path)
        sub = path / self.denoiser_subfolder if (path / self.denoiser_subfolder).is_dir() else path
        require_folder(sub, ["config.json"], "toy denoiser")
        return SD3Transformer2DModel.from_pretrained(sub, torch_dtype=self.dtype).to(self.device)

    def save(self, path) -> Path:
        """Write the whole teacher folder."""
        path = Path(path)
        self.denoiser.save_pretrained(path / "transformer", safe_serialization=True)
        self.text_encoder.save_pretrained(path / "text_encoder", safe_serialization=True)
        self.tokenizer.save_pretrained(path / "tokenizer")
        FlowMatchEulerDiscreteScheduler(shift=self.shift).save_pretrained(path / "scheduler")
        return path

    # ---- text -----------------------------------------------------------------------------
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """Token features (B, 16, width) and the pooled vector (B, width): CLIP's end-of-text token, or
        the masked mean of BERT's / T5's token states. Gradients flow (the teacher trains its text encoder jointly); wrap in
        no_grad when frozen."""
        toks = tokenize(self.tokenizer, list(prompts))
        ids = toks["input_ids"].to(self.device)
        mask = toks["attention_mask"].to(self.device)
        out = self.text_encoder(input_ids=ids, attention_mask=mask)
        hidden = out.last_hidden_state
        if isinstance(self.text_encoder, CLIPTextModel):
            return Conditioning(hidden, out.pooler_output)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
        return Conditioning(hidden, pooled)

    # ---- network --------------------------------------------------------------------------
    def model_output(self, net, x_t, t, cond, guidance=None):
        return net(hidden_states=x_t, encoder_hidden_states=cond.embeds, pooled_projections=cond.pooled,
                   timestep=t, return_dict=False)[0]

    # ---- pixels ---------------------------------------------------------------------------
    def decode(self, latents):
        return latents.clamp(-1, 1)

    def encode_images(self, images, generator=None):
        return images

    def latent_shape(self, height, width):
        return (3, height, width)
