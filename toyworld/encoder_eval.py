"""Held-out evaluation of the toy encoders (written by toyworld.train_encoders to `<results>/encoders.json`):
  clip.retrieval_i2t_top1, clip.retrieval_t2i_top1  full descriptions, batches of 64 scenes;
      a hit when the top-1 caption (image) is true of the image (caption)
  clip.prompt_retrieval_i2t_top1  the same with held-out grammar prompts as the captions
  clip.discrimination.<kind>  fraction of images whose true grammar prompt scores above the same
      prompt with one thing swapped: color, shape, relation (left<->right, above<->below),
      texture, count (two<->three), binding (the colours of two objects exchanged); `mean` over kinds
  dinov2.cell_{shape,color,texture}_accuracy  per cell (colour/texture: occupied cells);
      dinov2.cell_accuracy  all of a cell's attributes right
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import CLIPModel, Dinov2Model
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from toyworld.encoders import tokenize
from toyworld.grammar import prompt_set, sample_scene, split
from toyworld.render import render
from toyworld.world import (PromptSpec, Scene)
from toyworld.captions import SWAP_TASKS, caption_truth, cell_labels, describe, swapped
from toyworld.dinov2_training import CellHead
from toyworld.scene_pool import ScenePool, normalize


EVAL_BATCH = 64


def _features(out) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output whose pooler_output is it (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.no_grad()
def clip_image_embeds(model: CLIPModel, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """uint8 (N, 32, 32, 3) -> unit-norm (N, projection_dim)."""
    feats = [_features(model.get_image_features(pixel_values=normalize(images[i:i + batch], OPENAI_CLIP_MEAN,
                                                                      OPENAI_CLIP_STD)))
             for i in range(0, len(images), batch)]
    return F.normalize(torch.cat(feats), dim=-1)


@torch.no_grad()
def clip_text_embeds(model: CLIPModel, tokenizer, prompts: list[str], batch: int = 256) -> torch.Tensor:
    feats = []
    for i in range(0, len(prompts), batch):
        tok = tokenize(tokenizer, prompts[i:i + batch])
        feats.append(_features(model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])))
    return F.normalize(torch.cat(feats), dim=-1)


def _retrieval(model, tokenizer, pool: ScenePool, specs: list[PromptSpec]) -> tuple[float, float]:
    """Top-1 image->text and text->image hit rates within consecutive batches of EVAL_BATCH."""
    img = clip_image_embeds(model, pool.images)
    txt = clip_text_embeds(model, tokenizer, [s.prompt for s in specs])
    i2t = t2i = 0
    for s in range(0, len(pool), EVAL_BATCH):
        sl = slice(s, s + EVAL_BATCH)
        truth = caption_truth([sp.to_metadata() for sp in specs[sl]], pool.labels[sl])  # (text, image)
        sims = (img[sl] @ txt[sl].t()).numpy()  # (image, text)
        cols = np.arange(len(sims))
        i2t += int(truth[sims.argmax(1), cols].sum())
        t2i += int(truth[cols, sims.argmax(0)].sum())
    return i2t / len(pool), t2i / len(pool)


def discrimination_set(seed: int, n_per_kind: int) -> dict[str, tuple[list[Scene], list[PromptSpec], list[PromptSpec]]]:
    """Per swap kind: rendered-scene specs (held-out prompts where the task has them), the true
    prompts and the swapped ones, each swap checked to be false of its scene."""
    out = {}
    for k, (kind, tasks) in enumerate(SWAP_TASKS.items()):
        rng = np.random.default_rng([seed, 300, k])
        scenes, trues, negs = [], [], []
        while len(scenes) < n_per_kind:
            task = tasks[rng.integers(len(tasks))]
            candidates = split(task, held_out=True) or prompt_set(task)
            spec = candidates[rng.integers(len(candidates))]
            neg = swapped(spec, kind, rng)
            if neg is None:
                continue
            scene = sample_scene(spec, rng)
            truth = caption_truth([spec.to_metadata(), neg.to_metadata()], cell_labels(scene)[None])[:, 0]
            if truth[0] and not truth[1]:
                scenes.append(scene)
                trues.append(spec)
                negs.append(neg)
        out[kind] = (scenes, trues, negs)
    return out


def evaluate_clip(model: CLIPModel, tokenizer, p: dict, eval_pool: ScenePool, prompt_pool: ScenePool) -> dict:
    rng = np.random.default_rng([p["seed"], 400])
    i2t, t2i = _retrieval(model, tokenizer, eval_pool, [describe(s, rng) for s in eval_pool.scenes])
    prompt_i2t, _ = _retrieval(model, tokenizer, prompt_pool, prompt_pool.specs)
    disc = {}
    for kind, (scenes, trues, negs) in tqdm(discrimination_set(p["seed"], p["eval_swaps"]).items(),
                                            desc="caption discrimination", unit="kind"):
        img = clip_image_embeds(model, torch.from_numpy(np.stack([render(s) for s in scenes])))
        pos = (img * clip_text_embeds(model, tokenizer, [s.prompt for s in trues])).sum(-1)
        neg = (img * clip_text_embeds(model, tokenizer, [s.prompt for s in negs])).sum(-1)
        disc[kind] = float((pos > neg).float().mean())
    disc["mean"] = float(np.mean(list(disc.values())))
    return {"retrieval_i2t_top1": i2t, "retrieval_t2i_top1": t2i, "prompt_retrieval_i2t_top1": prompt_i2t,
            "discrimination": disc, "n_retrieval": len(eval_pool), "n_prompt_retrieval": len(prompt_pool),
            "n_discrimination_per_kind": p["eval_swaps"], "logit_scale": float(model.logit_scale.detach().exp())}


@torch.no_grad()
def evaluate_dinov2(model: Dinov2Model, head: CellHead, pool: ScenePool, batch: int = 256) -> dict:
    preds = []
    for i in range(0, len(pool), batch):
        tokens = model(pixel_values=normalize(pool.images[i:i + batch], IMAGENET_DEFAULT_MEAN,
                                              IMAGENET_DEFAULT_STD)).last_hidden_state
        preds.append(torch.stack([lg.argmax(-1) for lg in head(tokens)], dim=1))
    pred, labels = torch.cat(preds).numpy(), pool.labels
    occupied = labels[:, 0] > 0
    right = pred == labels
    cell_ok = right[:, 0] & (~occupied | (right[:, 1] & right[:, 2]))
    return {"cell_shape_accuracy": float(right[:, 0].mean()), "cell_color_accuracy": float(right[:, 1][occupied].mean()),
            "cell_texture_accuracy": float(right[:, 2][occupied].mean()), "cell_accuracy": float(cell_ok.mean()),
            "n_images": len(pool), "n_cells": int(labels[:, 0].size)}
