"""ImageReward v1.0 (THUDM/ImageReward 1.5, ImageReward/ImageReward.py `score`), natively on
transformers' BLIP classes (the package itself imports transformers helpers removed in 4.56 and
pins timm 0.6.13, so it cannot run on this stack).

Checkpoint: `ImageReward.pt` (`models.imagereward`, HF THUDM/ImageReward), a state dict with
`blip.visual_encoder.*` (BLIP ViT, timm-style names), `blip.text_encoder.*` (BLIP "med" BERT with
cross-attention) and `mlp.layers.*`; the tokenizer is bert-base-uncased (`models.imagereward_tokenizer`,
a local folder) plus "[DEC]" and "[ENC]" as the package adds them. Architecture sizes are read from
the checkpoint's shapes (ViT-L/16 and BERT-base for the released model).
- Vision: transformers BlipVisionModel with the key renames below, LayerNorm eps 1e-6 (BLIP's ViT),
  its final LayerNorm output = BLIP's ViT output tokens.
- Text: BlipTextModel without pooler (same parameter names as med's BertModel), called with the
  image tokens as encoder states and an all-ones image mask.
- Prompt: tokenized to max_length 35 with padding and truncation; [CLS] stays first.
- Image: Resize(224, bicubic, shorter side) -> CenterCrop(224) -> RGB -> ToTensor -> CLIP mean/std.
- Reward = (MLP(text_state[:, 0]) - 0.16717362830052426) / 1.0333394966054072 (the MLP has no
  nonlinearities; dropout inactive).
"""
from __future__ import annotations

import re

import numpy as np
import torch
import torchvision.transforms as T
from torchvision.transforms import InterpolationMode

from evaluate.aesthetic import AestheticMLP
from measures.weights import load_tensors, model_path

SOURCE = "https://huggingface.co/THUDM/ImageReward (ImageReward.pt)"
TOKENIZER_SOURCE = "https://huggingface.co/google-bert/bert-base-uncased (vocab.txt + tokenizer_config.json)"
MEAN_REWARD, STD_REWARD = 0.16717362830052426, 1.0333394966054072
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
VISION_RENAMES = [  # BLIP ViT (timm-style) -> transformers BlipVisionModel
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.fc(\d)\.", r"encoder.layers.\1.mlp.fc\2."),
    (r"^norm\.", "post_layernorm."),
]


def vision_state(state: dict, prefix: str = "blip.visual_encoder.", what: str = "the ImageReward checkpoint") -> dict:
    """The BLIP ViT weights under `prefix` of an original BLIP state dict, renamed to transformers'
    BlipVisionModel (VISION_RENAMES); any other key under the prefix is an error naming `what`."""
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        k = key[len(prefix):]
        for pattern, repl in VISION_RENAMES:
            if re.match(pattern, k):
                k = re.sub(pattern, repl, k)
                break
        else:
            raise ValueError(f"unexpected BLIP ViT key {key!r} in {what}")
        out[k] = value
    return out


def _strict_load(module: torch.nn.Module, state: dict, what: str) -> None:
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}  # a buffer older transformers saved
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("position_ids")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(f"ImageReward checkpoint does not match the {what}: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}")
    module.load_state_dict(state, strict=False)


class ImageRewardScorer:
    def __init__(self, models: dict, device: str = "cpu"):
        from transformers import (BertTokenizer, BlipTextConfig, BlipTextModel, BlipVisionConfig,
                                  BlipVisionModel)

        path = model_path(models, "imagereward", "ImageReward-v1.0 checkpoint", SOURCE, "file")
        tok_path = model_path(models, "imagereward_tokenizer", "the bert-base-uncased tokenizer folder",
                              TOKENIZER_SOURCE, "dir")
        state = load_tensors(path, "ImageReward checkpoint")
        state = state.get("state_dict", state) if isinstance(state, dict) else None
        if not isinstance(state, dict) or "blip.visual_encoder.pos_embed" not in state:
            raise ValueError(f"{str(path)!r} is not an ImageReward checkpoint (no blip.visual_encoder.pos_embed)")
        vis = vision_state(state)
        width = vis["embeddings.class_embedding"].shape[-1]
        depth = 1 + max(int(k.split(".")[2]) for k in vis if k.startswith("encoder.layers."))
        patch = vis["embeddings.patch_embedding.weight"].shape[-1]
        tokens = vis["embeddings.position_embedding"].shape[1] - 1
        image_size = int(round(tokens ** 0.5)) * patch
        heads = max(1, width // 64)
        self.vision = BlipVisionModel(BlipVisionConfig(
            hidden_size=width, intermediate_size=vis["encoder.layers.0.mlp.fc1.weight"].shape[0],
            num_hidden_layers=depth, num_attention_heads=heads, image_size=image_size, patch_size=patch,
            layer_norm_eps=1e-6, hidden_act="gelu")).eval()
        _strict_load(self.vision, vis, "BLIP vision transformer")
        txt = {k[len("blip.text_encoder."):]: v for k, v in state.items() if k.startswith("blip.text_encoder.")}
        hidden = txt["embeddings.word_embeddings.weight"].shape[1]
        n_layers = 1 + max(int(k.split(".")[2]) for k in txt if k.startswith("encoder.layer."))
        self.text = BlipTextModel(BlipTextConfig(
            vocab_size=txt["embeddings.word_embeddings.weight"].shape[0], hidden_size=hidden,
            encoder_hidden_size=width, intermediate_size=txt["encoder.layer.0.intermediate.dense.weight"].shape[0],
            num_hidden_layers=n_layers, num_attention_heads=int(models.get("imagereward_text_heads") or max(1, hidden // 64)),
            max_position_embeddings=txt["embeddings.position_embeddings.weight"].shape[0], layer_norm_eps=1e-12,
            hidden_act="gelu"), add_pooling_layer=False).eval()
        _strict_load(self.text, txt, "BLIP text encoder")
        self.mlp = AestheticMLP(hidden).eval()  # the same 5-layer affine head
        self.mlp.load_state_dict({k[len("mlp."):]: v for k, v in state.items() if k.startswith("mlp.")})
        self.tokenizer = BertTokenizer.from_pretrained(str(tok_path))
        self.tokenizer.add_special_tokens({"bos_token": "[DEC]"})
        self.tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        self.transform = T.Compose([T.Resize(image_size, interpolation=InterpolationMode.BICUBIC),
                                    T.CenterCrop(image_size), lambda im: im.convert("RGB"), T.ToTensor(),
                                    T.Normalize(MEAN, STD)])
        self.device = device
        for m in (self.vision, self.text, self.mlp):
            m.to(device)

    @torch.no_grad()
    def score(self, images, prompts: list[str]) -> np.ndarray:
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        tok = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        x = torch.stack([self.transform(im) for im in images]).to(self.device)
        image_embeds = self.vision(pixel_values=x).last_hidden_state
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        out = self.text(input_ids=tok.input_ids.to(self.device), attention_mask=tok.attention_mask.to(self.device),
                        encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts, is_decoder=False)
        rewards = self.mlp(out.last_hidden_state[:, 0, :]).squeeze(-1)
        return ((rewards - MEAN_REWARD) / STD_REWARD).double().cpu().numpy()


def load_scorer(models: dict, device: str = "cpu") -> ImageRewardScorer:
    return ImageRewardScorer(models, device)


__all__ = ["ImageRewardScorer", "MEAN", "STD", "VISION_RENAMES", "load_scorer", "vision_state"]
