"""Training of the toy CLIP.

CLIP -> `<out>/clip/`: `CLIPModel(clip_config(...))`, the word-level tokenizer
(`build_tokenizer`, captions go through `encoders.tokenize`) and a `CLIPImageProcessor`
(no resize/crop, x/255 then OpenAI CLIP mean/std, at 32 px). Loss: CLIP's symmetric InfoNCE
with its learnable logit scale (clamped to 100). Every step draws a fresh caption per image:
the scene's grammar prompt (probability `prompt_fraction`, grammar scenes only) or a full
description of the scene (every object's colour, texture and shape, plus the spatial relation
of two of them or the count of same-shape objects, in GenEval or CompBench phrasing), plus one
hard negative text per image (NegCLIP-style: the same caption with a colour, shape, texture,
relation, count or colour binding swapped), which only enters the image->text softmax. Every
caption carries GenEval-style metadata, so in-batch false negatives are masked exactly: a text
that is true of another image of the batch is left out of that image's softmax (and vice versa).
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import CLIPModel
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from toyworld.encoders import clip_config, tokenize
from toyworld.world import (COLORS, SHAPES, TEXTURES, PromptSpec, Scene)
from toyworld.captions import (NEGATIVE_WEIGHTS, TEXTURE_IDS, caption_truth, describe, describe_unseen, held_out_prompts,
                               random_scene, swapped)
from toyworld.encoder_optim import adamw, cosine_lr
from toyworld.scene_pool import ScenePool, normalize


def perturbed(scene: Scene, kind: str, rng: np.random.Generator) -> Scene | None:
    """The scene with one thing changed: an object's color / shape / texture, the cells of two
    objects exchanged (relation) or their colours exchanged (binding); None if not applicable."""
    objs = list(scene.objects)
    k = int(rng.integers(len(objs)))
    o = objs[k]
    if kind == "color":
        objs[k] = replace(o, color=[c for c in COLORS if c != o.color][rng.integers(len(COLORS) - 1)])
    elif kind == "shape":
        objs[k] = replace(o, shape=[s for s in SHAPES if s != o.shape][rng.integers(len(SHAPES) - 1)])
    elif kind == "texture":
        objs[k] = replace(o, texture=TEXTURES[1 - TEXTURE_IDS[o.texture]])
    elif kind in ("relation", "binding"):
        if len(objs) < 2:
            return None
        a, b = (int(v) for v in rng.choice(len(objs), 2, replace=False))
        if kind == "relation":
            objs[a], objs[b] = replace(objs[a], cell=objs[b].cell), replace(objs[b], cell=objs[a].cell)
        elif objs[a].color != objs[b].color:
            objs[a], objs[b] = replace(objs[a], color=objs[b].color), replace(objs[b], color=objs[a].color)
        else:
            return None
    else:
        raise ValueError(f"unknown perturbation {kind!r}")
    return Scene(tuple(objs), scene.background)


def caption_pair(pool: ScenePool, i: int, rng: np.random.Generator,
                 prompt_fraction: float) -> tuple[PromptSpec, PromptSpec | None]:
    """A training caption of pool scene i and a hard negative: the same caption with one thing
    swapped (grammar prompts: `swapped`; descriptions: the same phrasing choices on a `perturbed`
    scene), checked to be false of the scene; None when no swap gives one. Neither is ever a
    held-out prompt."""
    spec, labels = pool.specs[i], pool.labels[i][None]
    names = list(NEGATIVE_WEIGHTS)
    weights = np.asarray([NEGATIVE_WEIGHTS[k] for k in names], dtype=np.float64)
    kinds = [names[k] for k in rng.choice(len(names), len(names), replace=False, p=weights / weights.sum())]

    def false_and_seen(neg):
        return (neg is not None and neg.prompt not in held_out_prompts()
                and not caption_truth([neg.to_metadata()], labels)[0, 0])

    if spec is not None and rng.random() < prompt_fraction:
        for kind in kinds:
            neg = swapped(spec, kind, rng)
            if false_and_seen(neg):
                return spec, neg
        return spec, None
    seed = int(rng.integers(2**63))
    caption = describe_unseen(pool.scenes[i], np.random.default_rng(seed))
    for kind in kinds:
        if kind == "count":
            continue
        other = perturbed(pool.scenes[i], kind, rng)
        neg = describe(other, np.random.default_rng(seed)) if other is not None else None
        if false_and_seen(neg):
            return caption, neg
    return caption, None


def training_captions(pool: ScenePool, idx: np.ndarray, rng: np.random.Generator,
                      prompt_fraction: float) -> tuple[list[PromptSpec], list[PromptSpec]]:
    """One caption per scene in `idx`, then one hard negative per scene (a description of a
    random scene where `caption_pair` found none; the loss masks it if true of some image)."""
    pairs = [caption_pair(pool, int(i), rng, prompt_fraction) for i in idx]
    negatives = [neg if neg is not None else describe_unseen(random_scene(rng), rng) for _, neg in pairs]
    return [c for c, _ in pairs], negatives


def new_clip(p: dict, vocab_size: int) -> CLIPModel:
    torch.manual_seed(p["seed"])
    return CLIPModel(clip_config(vocab_size, width=p["clip_width"], layers=p["clip_layers"], heads=p["clip_heads"],
                                 projection_dim=p["clip_projection_dim"]))


def train_clip(p: dict, pool: ScenePool, tokenizer) -> CLIPModel:
    model = new_clip(p, len(tokenizer)).train()
    opt = adamw(model, p["clip_lr"], p["clip_weight_decay"])
    rng = np.random.default_rng([p["seed"], 100])
    bs, steps = p["clip_batch_size"], p["clip_steps"]
    eye = torch.eye(bs, 2 * bs, dtype=torch.bool)
    target = torch.arange(bs)
    bar = tqdm(range(steps), desc="clip", unit="step", mininterval=5.0)
    for step in bar:
        idx = rng.choice(len(pool), bs, replace=False)
        captions, negatives = training_captions(pool, idx, rng, p["prompt_fraction"])
        texts = captions + negatives
        # (image, text): a text true of another image is not a negative for it
        false_neg = torch.from_numpy(caption_truth([s.to_metadata() for s in texts], pool.labels[idx]).T) & ~eye
        tok = tokenize(tokenizer, [s.prompt for s in texts])
        out = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"],
                    pixel_values=normalize(pool.images[idx], OPENAI_CLIP_MEAN, OPENAI_CLIP_STD))
        logits = out.logits_per_image.masked_fill(false_neg, float("-inf"))  # (B, 2B): captions, then negatives
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :bs].t(), target)) / 2
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, p["clip_lr"], p["clip_warmup"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", scale=f"{model.logit_scale.exp().item():.1f}",
                            masked=int(false_neg.sum()))
    return model.eval()
