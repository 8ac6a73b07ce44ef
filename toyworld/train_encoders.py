"""Second command of the `teacher` stage: train the toy CLIP and the toy DINOv2 on ToyWorld.

    python -m toyworld.train_encoders [--params params.yaml] [--out models/toy] [--results results/teacher]
                                      [--steps-scale S]

Data. One pool of `images` freshly rendered scenes, deterministic in `seed` (rendered in
fixed-size chunks, each with its own seeded generator, so the pool does not depend on the
number of worker processes): a `grammar_fraction` of them from the grammar's training prompts
(`sample_spec` + `sample_scene`, i.e. the teacher's data distribution), the rest 1-3 objects
with every attribute random. Held-out prompts (`grammar.is_held_out`) are never a training
caption; the evaluation renders separate scene streams, from held-out prompts where a task has
them.

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

DINOv2 -> `<out>/dinov2/`: `Dinov2Model(dinov2_config(...))` (32 px, patch 4: CLS + 8x8 patch
tokens) and a `BitImageProcessor` (no resize/crop, x/255 then ImageNet mean/std). Supervised
objective: for each of the 4 grid cells (16x16 px = 4x4 patches), one linear head shared by the
cells reads [final CLS token, mean of the cell's patch tokens] and predicts the cell's content
(empty / circle / square / triangle) and, for an occupied cell, its colour (6) and texture (2);
the loss is the sum of the three cross-entropies (colour and texture over occupied cells only).
The head is discarded; only the backbone is saved.

Held-out evaluation -> `<results>/encoders.json`:
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

import argparse
import copy
import json
import math
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import BitImageProcessor, CLIPImageProcessor, CLIPModel, Dinov2Model
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from configs.cli import ArgumentParser, run_command
from configs.paths import writable_folder
from configs.params import section
from configs.schema import SCHEMA
from toyworld.encoders import MAX_TOKENS, build_tokenizer, clip_config, dinov2_config, tokenize
from toyworld.grammar import COMPBENCH_RELATION, TASKS, prompt_set, sample_scene, sample_spec, split
from toyworld.render import render
from toyworld.world import (COLORS, GRID, NUMBER_WORDS, RESOLUTION, SHAPES, TEXTURES, PromptSpec, Requirement,
                            Scene, SceneObject)

DEFAULTS = SCHEMA["encoders"].plain_defaults()  # keys, defaults and rules: configs/schema.py
EVAL_BATCH = 64
CHUNK = 256  # scenes per seeded rendering chunk
GRAMMAR_WEIGHTS = dict.fromkeys(TASKS, 1.0)
RANDOM_OBJECT_COUNTS = ((1, 2, 3), (0.25, 0.4, 0.35))
MAX_WORDS = MAX_TOKENS - 1  # the tokenizer appends </s>

SHAPE_IDS = {s: i + 1 for i, s in enumerate(SHAPES)}  # 0 = empty cell
COLOR_IDS = {c: i for i, c in enumerate(COLORS)}
TEXTURE_IDS = {t: i for i, t in enumerate(TEXTURES)}
N_CELL_CLASSES = (len(SHAPES) + 1, len(COLORS), len(TEXTURES))
_ROW = np.repeat(np.arange(GRID), GRID)  # cell index = row * GRID + col
_COL = np.tile(np.arange(GRID), GRID)
# relation[a, b]: an object in cell a is `rel` the object in cell b (GenEval's rule on the grid:
# a diagonal neighbour is both left/right and above/below).
RELATION_MASKS = {"left of": _COL[:, None] < _COL[None, :], "right of": _COL[:, None] > _COL[None, :],
                  "above": _ROW[:, None] < _ROW[None, :], "below": _ROW[:, None] > _ROW[None, :]}
# How often each kind of hard negative is tried first: relations and textures are what a
# contrastive model learns last (it stays a bag of words without them).
NEGATIVE_WEIGHTS = {"relation": 4.0, "texture": 2.0, "binding": 1.0, "color": 1.0, "shape": 1.0, "count": 1.0}
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
SWAP_TASKS = {
    "color": ("colors", "color_attr", "color", "shape", "texture", "complex"),
    "shape": TASKS,
    "relation": ("position", "spatial", "complex"),
    "texture": ("texture", "complex"),
    "count": ("counting",),
    "binding": ("color_attr", "color", "complex"),
}


# --------------------------------------------------------------------------------------------
# Scenes, captions and the exact caption-truth check
# --------------------------------------------------------------------------------------------
def cell_labels(scene: Scene) -> np.ndarray:
    """(3, GRID*GRID) int64: per cell the shape id (0 empty, 1.. SHAPES), colour id and texture
    id (-1 for an empty cell)."""
    out = np.full((3, GRID * GRID), -1, dtype=np.int64)
    out[0] = 0
    for o in scene.objects:
        k = o.cell[0] * GRID + o.cell[1]
        out[:, k] = (SHAPE_IDS[o.shape], COLOR_IDS[o.color], TEXTURE_IDS[o.texture])
    return out


def caption_truth(metas: list[dict], labels: np.ndarray) -> np.ndarray:
    """(n_captions, n_scenes) bool: caption i (GenEval-style metadata) is true of scene j, whose
    `cell_labels` are labels[j]. Semantics: each include entry needs >= count matching objects,
    a position needs some matching pair in that relation, excludes cap a shape's count,
    `same_color` needs a shared colour."""
    shape, color, texture = labels[:, 0], labels[:, 1], labels[:, 2]
    out = np.empty((len(metas), len(labels)), dtype=bool)
    for i, meta in enumerate(metas):
        ok = np.ones(len(labels), dtype=bool)
        found = []
        for req in meta["include"]:
            m = shape == SHAPE_IDS[req["class"]]
            if "color" in req:
                m &= color == COLOR_IDS[req["color"]]
            if "texture" in req:
                m &= texture == TEXTURE_IDS[req["texture"]]
            ok &= m.sum(1) >= req["count"]
            if "position" in req:
                rel, target = req["position"]
                ok &= (m[:, :, None] & found[target][:, None, :] & RELATION_MASKS[rel]).any((1, 2))
            found.append(m)
        if meta.get("same_color"):
            ok &= (found[0][:, :, None] & found[1][:, None, :] & (color[:, :, None] == color[:, None, :])).any((1, 2))
        for req in meta.get("exclude", []):
            ok &= (shape == SHAPE_IDS[req["class"]]).sum(1) < req["count"]
        out[i] = ok
    return out


def random_scene(rng: np.random.Generator) -> Scene:
    """1-3 objects, each with a random shape, colour and texture, through the grammar's sampler."""
    n = int(rng.choice(RANDOM_OBJECT_COUNTS[0], p=RANDOM_OBJECT_COUNTS[1]))
    reqs = [Requirement(SHAPES[rng.integers(len(SHAPES))], color=list(COLORS)[rng.integers(len(COLORS))],
                        texture=TEXTURES[rng.integers(len(TEXTURES))]) for _ in range(n)]
    return sample_scene(PromptSpec("random", "", reqs), rng)


def _adjectives(words: list[str], rng: np.random.Generator) -> list[str]:
    return words[::-1] if rng.random() < 0.5 else words  # both orders occur in the grammar


def _relations(a: SceneObject, b: SceneObject) -> list[str]:
    ka, kb = a.cell[0] * GRID + a.cell[1], b.cell[0] * GRID + b.cell[1]
    return [rel for rel, mask in RELATION_MASKS.items() if mask[ka, kb]]


def describe(scene: Scene, rng: np.random.Generator) -> PromptSpec:
    """A random true, full description of a scene with 1-3 objects, at most MAX_WORDS words, e.g.
    "a photo of a red striped circle left of a blue solid square",
    "a solid green triangle on the top of a striped white circle", "two red circles and a solid
    blue square". Metadata in the grammar's convention (relation: reference first)."""
    objs = [scene.objects[i] for i in rng.permutation(len(scene.objects))]
    groups: dict[str, list[SceneObject]] = {}
    for o in objs:
        groups.setdefault(o.shape, []).append(o)
    include: list[Requirement] = []
    exclude: list[Requirement] = []
    words: list[str] = []
    if max(len(g) for g in groups.values()) >= 2 and rng.random() < 0.5:
        for shape, group in groups.items():  # count phrasing for repeated shapes
            words += ["and"] if words else []
            if len(group) == 1:
                o = group[0]
                words += ["a", *_adjectives([o.color, o.texture], rng), shape]
                include.append(Requirement(shape, color=o.color, texture=o.texture))
                continue
            req = Requirement(shape, count=len(group))
            adjs = []
            if len({o.color for o in group}) == 1:
                req.color = group[0].color
                adjs.append(req.color)
            if len({o.texture for o in group}) == 1:
                req.texture = group[0].texture
                adjs.append(req.texture)
            words += [NUMBER_WORDS[len(group)], *_adjectives(adjs, rng), shape + "s"]
            include.append(req)
            exclude.append(Requirement(shape, count=len(group) + 1))
    elif len(objs) >= 2 and rng.random() < 0.8:
        a, b, rest = objs[0], objs[1], objs[2:]
        rels = _relations(a, b)
        rel = rels[rng.integers(len(rels))]
        rel_words = COMPBENCH_RELATION[rel].split() if rng.random() < 0.5 and not rest else rel.split()
        words = (["a", *_adjectives([a.color, a.texture], rng), a.shape, *rel_words,
                  "a", *_adjectives([b.color, b.texture], rng), b.shape])
        include = [Requirement(b.shape, color=b.color, texture=b.texture),
                   Requirement(a.shape, color=a.color, texture=a.texture, position=(rel, 0))]
        for o in rest:
            words += ["and", "a", *_adjectives([o.color, o.texture], rng), o.shape]
            include.append(Requirement(o.shape, color=o.color, texture=o.texture))
    else:
        for o in objs:
            words += (["and"] if words else []) + ["a", *_adjectives([o.color, o.texture], rng), o.shape]
            include.append(Requirement(o.shape, color=o.color, texture=o.texture))
    if len(words) + 3 <= MAX_WORDS and rng.random() < 0.4:
        words = ["a", "photo", "of"] + words
    assert len(words) <= MAX_WORDS, words
    return PromptSpec("description", " ".join(words), include, exclude)


@lru_cache(maxsize=1)
def held_out_prompts() -> frozenset[str]:
    return frozenset(s.prompt for t in TASKS for s in split(t, held_out=True))


def describe_unseen(scene: Scene, rng: np.random.Generator) -> PromptSpec:
    """`describe`, redrawn while the text happens to be a held-out grammar prompt."""
    spec = describe(scene, rng)
    for _ in range(20):
        if spec.prompt not in held_out_prompts():
            break
        spec = describe(scene, rng)
    return spec


@lru_cache(maxsize=None)
def _specs_by_meta(task: str) -> dict[str, PromptSpec]:
    return {_meta_key(s.to_metadata()): s for s in prompt_set(task)}


def _meta_key(meta: dict) -> str:
    return json.dumps({k: v for k, v in meta.items() if k != "prompt"}, sort_keys=True)


def swapped(spec: PromptSpec, kind: str, rng: np.random.Generator) -> PromptSpec | None:
    """The grammar prompt of the same task equal to `spec` with one thing changed (see SWAP_TASKS
    for the kinds), or None when `spec` has nothing of that kind to change."""
    meta = copy.deepcopy(spec.to_metadata())
    inc = meta["include"]

    def pick(cond):
        ks = [k for k, r in enumerate(inc) if cond(r)]
        return ks[rng.integers(len(ks))] if ks else None

    if kind == "color":
        k = pick(lambda r: "color" in r)
        if k is None:
            return None
        options = [c for c in COLORS if c not in {r.get("color") for r in inc}]
        inc[k]["color"] = options[rng.integers(len(options))]
    elif kind == "shape":
        k = pick(lambda r: True)
        old = inc[k]["class"]
        options = [s for s in SHAPES if s not in {r["class"] for r in inc}]
        inc[k]["class"] = options[rng.integers(len(options))]
        for r in meta.get("exclude", []):
            r["class"] = inc[k]["class"] if r["class"] == old else r["class"]
    elif kind == "relation":
        k = pick(lambda r: "position" in r)
        if k is None:
            return None
        inc[k]["position"] = [OPPOSITE[inc[k]["position"][0]], inc[k]["position"][1]]
    elif kind == "texture":
        k = pick(lambda r: "texture" in r)
        if k is None:
            return None
        inc[k]["texture"] = TEXTURES[1 - TEXTURE_IDS[inc[k]["texture"]]]
    elif kind == "count":
        k = pick(lambda r: r["count"] in (2, 3))
        if k is None:
            return None
        inc[k]["count"] = 5 - inc[k]["count"]
        for r in meta.get("exclude", []):
            r["count"] = inc[k]["count"] + 1 if r["class"] == inc[k]["class"] else r["count"]
    elif kind == "binding":
        ks = [k for k, r in enumerate(inc) if "color" in r]
        if len(ks) < 2 or inc[ks[0]]["color"] == inc[ks[1]]["color"]:
            return None
        inc[ks[0]]["color"], inc[ks[1]]["color"] = inc[ks[1]]["color"], inc[ks[0]]["color"]
    else:
        raise ValueError(f"unknown swap kind {kind!r}; known: {', '.join(SWAP_TASKS)}")
    return _specs_by_meta(spec.tag).get(_meta_key(meta))


# --------------------------------------------------------------------------------------------
# Rendered pools
# --------------------------------------------------------------------------------------------
@dataclass
class ScenePool:
    images: torch.Tensor                 # (N, 32, 32, 3) uint8
    scenes: list[Scene]
    specs: list[PromptSpec | None]       # the grammar prompt a scene was drawn for, if any
    labels: np.ndarray                   # (N, 3, GRID*GRID) `cell_labels`

    def __len__(self) -> int:
        return len(self.scenes)


def _render_chunk(args: tuple) -> tuple[np.ndarray, list]:
    seed, stream, chunk, size, grammar_fraction, held_out = args
    rng = np.random.default_rng([seed, stream, chunk])
    items = []
    for _ in range(size):
        if rng.random() < grammar_fraction:
            spec = sample_spec(rng, GRAMMAR_WEIGHTS, held_out=held_out)
            items.append((sample_scene(spec, rng), spec))
        else:
            items.append((random_scene(rng), None))
    return np.stack([render(scene) for scene, _ in items]), items


def render_pool(n: int, seed: int, stream: int, grammar_fraction: float, held_out: bool = False,
                workers: int = 1, desc: str = "rendering") -> ScenePool:
    """n scenes (grammar prompts from the held-out split when `held_out`), deterministic in
    (n, seed, stream, grammar_fraction, held_out) whatever the number of worker processes."""
    jobs = [(seed, stream, c, min(CHUNK, n - c * CHUNK), grammar_fraction, held_out) for c in range(math.ceil(n / CHUNK))]
    bar = tqdm(total=n, desc=desc, unit="img", mininterval=2.0)
    images, items = [], []

    def collect(result):
        images.append(result[0])
        items.extend(result[1])
        bar.update(len(result[1]))

    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as ex:
            for result in ex.map(_render_chunk, jobs):
                collect(result)
    else:
        for job in jobs:
            collect(_render_chunk(job))
    bar.close()
    scenes = [s for s, _ in items]
    return ScenePool(torch.from_numpy(np.concatenate(images)), scenes, [sp for _, sp in items],
                     np.stack([cell_labels(s) for s in scenes]))


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W): x/255, then (x - mean)/std per channel, exactly
    what the saved image processor does."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def cosine_lr(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 5 % of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; no decay on biases, norms, embeddings' 1-D tensors and the logit scale."""
    params = [q for q in model.parameters() if q.requires_grad]
    decay = [q for q in params if q.ndim >= 2]
    rest = [q for q in params if q.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.98), eps=1e-6)


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
    opt = _optimizer(model, p["clip_lr"], p["clip_weight_decay"])
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


class CellHead(torch.nn.Module):
    """Per grid cell: [CLS, mean of the cell's patch tokens] -> content/colour/texture logits."""

    def __init__(self, width: int, patch_size: int):
        super().__init__()
        self.per_cell = RESOLUTION // patch_size // GRID
        self.linear = torch.nn.Linear(2 * width, sum(N_CELL_CLASSES))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """tokens (B, 1 + P, W), CLS first -> logits (B, GRID*GRID, n) per attribute."""
        b, _, w = tokens.shape
        g = self.per_cell
        cells = tokens[:, 1:].reshape(b, GRID, g, GRID, g, w).mean((2, 4)).reshape(b, GRID * GRID, w)
        feats = torch.cat([tokens[:, :1].expand(-1, GRID * GRID, -1), cells], dim=-1)
        return self.linear(feats).split(N_CELL_CLASSES, dim=-1)


def _cell_loss(logits: tuple[torch.Tensor, ...], labels: torch.Tensor) -> torch.Tensor:
    return sum(F.cross_entropy(lg.reshape(-1, lg.shape[-1]), labels[:, a].reshape(-1), ignore_index=-1)
               for a, lg in enumerate(logits))


def new_dinov2(p: dict) -> Dinov2Model:
    torch.manual_seed(p["seed"] + 1)
    return Dinov2Model(dinov2_config(width=p["dinov2_width"], layers=p["dinov2_layers"], heads=p["dinov2_heads"]))


def train_dinov2(p: dict, pool: ScenePool) -> tuple[Dinov2Model, CellHead]:
    model = new_dinov2(p).train()
    head = CellHead(model.config.hidden_size, model.config.patch_size)
    both = torch.nn.ModuleList([model, head])
    opt = _optimizer(both, p["dinov2_lr"], p["dinov2_weight_decay"])
    rng = np.random.default_rng([p["seed"], 200])
    bs, steps = p["dinov2_batch_size"], p["dinov2_steps"]
    labels = torch.from_numpy(pool.labels)
    bar = tqdm(range(steps), desc="dinov2", unit="step", mininterval=5.0)
    for step in bar:
        idx = rng.choice(len(pool), bs, replace=False)
        tokens = model(pixel_values=normalize(pool.images[idx], IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)).last_hidden_state
        loss = _cell_loss(head(tokens), labels[idx])
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, p["dinov2_lr"], p["dinov2_warmup"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(both.parameters(), 1.0)
        opt.step()
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return model.eval(), head.eval()


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Saving and the CLI
# --------------------------------------------------------------------------------------------
def _save_folder(folder: Path, *objects) -> None:
    """save_pretrained every object into a temp folder, then swap it in (atomic for readers)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for obj in objects:
        obj.save_pretrained(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def clip_image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(do_resize=False, do_center_crop=False, size={"shortest_edge": RESOLUTION},
                              crop_size={"height": RESOLUTION, "width": RESOLUTION},
                              image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD))


def dinov2_image_processor() -> BitImageProcessor:
    return BitImageProcessor(do_resize=False, do_center_crop=False, size={"shortest_edge": RESOLUTION},
                             crop_size={"height": RESOLUTION, "width": RESOLUTION},
                             image_mean=list(IMAGENET_DEFAULT_MEAN), image_std=list(IMAGENET_DEFAULT_STD))


def scale_work(p: dict, scale: float) -> dict:
    """Steps, warm-ups, pool and evaluation sizes times `scale` (smoke tests), at least one batch."""
    q = dict(p)
    for k in ("clip_steps", "dinov2_steps", "clip_warmup", "dinov2_warmup"):
        q[k] = max(1, round(p[k] * scale))
    q["images"] = max(p["clip_batch_size"], p["dinov2_batch_size"], round(p["images"] * scale))
    q["eval_batches"] = max(1, round(p["eval_batches"] * scale))
    q["eval_swaps"] = max(2, round(p["eval_swaps"] * scale))
    return q


def train_encoders(p: dict, out: Path, results: Path) -> dict:
    """Render, train both encoders, evaluate, save `<out>/clip`, `<out>/dinov2` and
    `<results>/encoders.json`; returns the report."""
    if p["images"] < max(p["clip_batch_size"], p["dinov2_batch_size"]):
        raise ValueError(f"encoders.images ({p['images']}) must be at least the batch sizes")
    torch.set_num_threads(int(p["threads"]))
    t0 = time.time()
    n_eval = p["eval_batches"] * EVAL_BATCH
    pool = render_pool(p["images"], p["seed"], 0, p["grammar_fraction"], workers=p["threads"], desc="render train")
    eval_pool = render_pool(n_eval, p["seed"], 1, p["grammar_fraction"], held_out=True, workers=p["threads"],
                            desc="render eval")
    prompt_pool = render_pool(n_eval, p["seed"], 2, 1.0, held_out=True, workers=p["threads"], desc="render prompts")
    timing = {"render_s": time.time() - t0}

    t = time.time()
    tokenizer = build_tokenizer()
    clip = train_clip(p, pool, tokenizer)
    timing["clip_s"] = time.time() - t
    t = time.time()
    dinov2, head = train_dinov2(p, pool)
    timing["dinov2_s"] = time.time() - t
    timing["train_total_s"] = time.time() - t0

    t = time.time()
    both = ScenePool(torch.cat([eval_pool.images, prompt_pool.images]), eval_pool.scenes + prompt_pool.scenes,
                     eval_pool.specs + prompt_pool.specs, np.concatenate([eval_pool.labels, prompt_pool.labels]))
    report = {"clip": evaluate_clip(clip, tokenizer, p, eval_pool, prompt_pool),
              "dinov2": evaluate_dinov2(dinov2, head, both)}
    timing["eval_s"] = time.time() - t
    report["timing"] = {k: round(v, 1) for k, v in timing.items()}
    report["train"] = {"seed": p["seed"], "threads": p["threads"], "images": p["images"], "clip_steps": p["clip_steps"],
                       "clip_batch_size": p["clip_batch_size"], "dinov2_steps": p["dinov2_steps"],
                       "dinov2_batch_size": p["dinov2_batch_size"]}

    out.mkdir(parents=True, exist_ok=True)
    _save_folder(out / "clip", clip, tokenizer, clip_image_processor())
    _save_folder(out / "dinov2", dinov2, dinov2_image_processor())
    results.mkdir(parents=True, exist_ok=True)
    tmp = results / "encoders.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(results / "encoders.json")
    return report


def main(argv=None) -> dict:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="models/toy", help="writes <out>/clip and <out>/dinov2")
    ap.add_argument("--results", default="results/teacher", help="writes <results>/encoders.json")
    ap.add_argument("--steps-scale", type=float, default=1.0,
                    help="multiply steps, pool and evaluation sizes (e.g. 0.01 for a smoke test)")
    args = ap.parse_args(argv)
    writable_folder(args.out, "the encoder folder", "--out")  # checked before any work
    writable_folder(args.results, "the encoder results folder", "--results")  # checked before any work
    p = section("encoders", args.params)
    if args.steps_scale <= 0:
        ap.error("--steps-scale must be positive")
    if args.steps_scale != 1.0:
        p = scale_work(p, args.steps_scale)
    report = train_encoders(p, Path(args.out), Path(args.results))
    print(json.dumps({k: report[k] for k in ("clip", "dinov2", "timing")}, indent=2))
    return report


if __name__ == "__main__":
    run_command(main)
