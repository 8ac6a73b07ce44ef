"""Scenes and their captions for the toy encoders: random scenes, full descriptions in GenEval or
CompBench phrasing, hard negatives (one colour, shape, texture, relation, count or colour binding
swapped) and the exact caption-truth check that masks in-batch false negatives.
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache

import numpy as np

from toyworld.encoders import MAX_TOKENS
from toyworld.grammar import COMPBENCH_RELATION, TASKS, prompt_set, sample_scene, split
from toyworld.world import (COLORS, GRID, NUMBER_WORDS, SHAPES, TEXTURES, PromptSpec, Requirement, Scene,
                            SceneObject)


MAX_WORDS = MAX_TOKENS - 1  # the tokenizer appends </s>


RANDOM_OBJECT_COUNTS = ((1, 2, 3), (0.25, 0.4, 0.35))


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
