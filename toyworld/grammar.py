"""Prompt grammar: every GenEval task and every T2I-CompBench category we report, as
enumerable prompt sets of `PromptSpec`s, a deterministic held-out split, and scene sampling.

GenEval tasks use GenEval's own phrasing ("a photo of a red circle left of a square");
CompBench-style categories use CompBench's ("a circle on the left of a square").
"""
from __future__ import annotations

import hashlib
import itertools

import numpy as np

from toyworld.world import (CELL, COLORS, COLOR_JITTER, GRID, MAX_JITTER, MAX_SIZE, MIN_SIZE, NUMBER_WORDS,
                            RELATIONS, SHAPES, TEXTURES, BACKGROUND_RANGE, BACKGROUND_TINT, PromptSpec,
                            Requirement, Scene, SceneObject)

GENEVAL_TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
COMPBENCH_CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "complex")
TASKS = GENEVAL_TASKS + COMPBENCH_CATEGORIES

SHAPE_ADJECTIVE = {"circle": "round", "square": "square", "triangle": "triangular"}
COMPBENCH_RELATION = {"left of": "on the left of", "right of": "on the right of",
                      "above": "on the top of", "below": "on the bottom of"}
HELD_OUT_MOD = 7  # ~1/7 of the prompts of each large task are never trained on


def _plural(shape: str) -> str:
    return shape + "s"


def _enumerate(task: str) -> list[PromptSpec]:
    S, C, T, R = SHAPES, list(COLORS), TEXTURES, list(RELATIONS)
    out: list[PromptSpec] = []
    if task == "single_object":
        out = [PromptSpec(task, f"a photo of a {s}", [Requirement(s)]) for s in S]
    elif task == "two_object":
        out = [PromptSpec(task, f"a photo of a {a} and a {b}", [Requirement(a), Requirement(b)])
               for a, b in itertools.permutations(S, 2)]
    elif task == "counting":
        out = [PromptSpec(task, f"a photo of {NUMBER_WORDS[n]} {_plural(s)}", [Requirement(s, count=n)],
                          exclude=[Requirement(s, count=n + 1)]) for s in S for n in (2, 3)]
    elif task == "colors":
        out = [PromptSpec(task, f"a photo of a {c} {s}", [Requirement(s, color=c)]) for s in S for c in C]
    elif task == "position":
        out = [PromptSpec(task, f"a photo of a {a} {r} a {b}", [Requirement(b), Requirement(a, position=(r, 0))])
               for a, b in itertools.permutations(S, 2) for r in R]
    elif task == "color_attr":
        out = [PromptSpec(task, f"a photo of a {c1} {a} and a {c2} {b}",
                          [Requirement(a, color=c1), Requirement(b, color=c2)])
               for a, b in itertools.permutations(S, 2) for c1, c2 in itertools.permutations(C, 2)]
    elif task == "color":
        out = [PromptSpec(task, f"a {c1} {a} and a {c2} {b}", [Requirement(a, color=c1), Requirement(b, color=c2)])
               for a, b in itertools.permutations(S, 2) for c1, c2 in itertools.permutations(C, 2)]
    elif task == "shape":
        out = [PromptSpec(task, f"a {SHAPE_ADJECTIVE[a]} object and a {SHAPE_ADJECTIVE[b]} object",
                          [Requirement(a), Requirement(b)]) for a, b in itertools.permutations(S, 2)]
        out += [PromptSpec(task, f"a {c} {SHAPE_ADJECTIVE[a]} object", [Requirement(a, color=c)]) for a in S for c in C]
    elif task == "texture":
        out = [PromptSpec(task, f"a {t1} {a} and a {t2} {b}", [Requirement(a, texture=t1), Requirement(b, texture=t2)])
               for a, b in itertools.permutations(S, 2) for t1 in T for t2 in T]
        out += [PromptSpec(task, f"a {t} {c} {a}", [Requirement(a, color=c, texture=t)]) for a in S for c in C for t in T]
    elif task == "spatial":
        out = [PromptSpec(task, f"a {a} {COMPBENCH_RELATION[r]} a {b}", [Requirement(b), Requirement(a, position=(r, 0))])
               for a, b in itertools.permutations(S, 2) for r in R]
    elif task == "non_spatial":
        out = [PromptSpec(task, f"a {a} the same color as a {b}", [Requirement(a), Requirement(b)], same_color=True)
               for a, b in itertools.permutations(S, 2)]
    elif task == "complex":
        out = [PromptSpec(task, f"a {c1} {t1} {a} {COMPBENCH_RELATION[r]} a {c2} {b}",
                          [Requirement(b, color=c2), Requirement(a, color=c1, texture=t1, position=(r, 0))])
               for a, b in itertools.permutations(S, 2) for c1, c2 in itertools.permutations(C, 2)
               for t1 in T for r in R]
    else:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return out


_CACHE: dict[str, list[PromptSpec]] = {}


def prompt_set(task: str) -> list[PromptSpec]:
    """All prompts of a task, in a fixed order."""
    if task not in _CACHE:
        _CACHE[task] = _enumerate(task)
    return _CACHE[task]


def is_held_out(spec: PromptSpec) -> bool:
    """Deterministic split by prompt text; tasks with fewer than 10 prompts hold nothing out."""
    if len(prompt_set(spec.tag)) < 10:
        return False
    return int(hashlib.md5(spec.prompt.encode()).hexdigest(), 16) % HELD_OUT_MOD == 0


def split(task: str, held_out: bool) -> list[PromptSpec]:
    return [s for s in prompt_set(task) if is_held_out(s) == held_out]


# ---------------------------------------------------------------------------------------------
def _cells_for(spec: PromptSpec, rng: np.random.Generator) -> list[tuple[int, int]] | None:
    """Cells for the objects of each include entry, flattened in include order."""
    all_cells = [(r, c) for r in range(GRID) for c in range(GRID)]
    n = sum(req.count for req in spec.include)
    if n > len(all_cells):
        return None
    rel_req = [req for req in spec.include if req.position]
    if not rel_req:
        idx = rng.permutation(len(all_cells))[:n]
        return [all_cells[i] for i in idx]
    # one reference and one related object (GenEval/CompBench position prompts): adjacent
    # cells in the same row or column, so the relation is unambiguous under GenEval's rule.
    rel, _ = rel_req[0].position
    dr, dc = RELATIONS[rel]
    options = [(r, c) for r, c in all_cells if 0 <= r + dr < GRID and 0 <= c + dc < GRID]
    ref = options[rng.integers(len(options))]
    return [ref, (ref[0] + dr, ref[1] + dc)]


def sample_scene(spec: PromptSpec, rng: np.random.Generator) -> Scene:
    """A random scene that satisfies `spec` (only the described objects are drawn)."""
    cells = _cells_for(spec, rng)
    if cells is None:
        raise ValueError(f"prompt {spec.prompt!r} needs more objects than the grid holds")
    colors = list(COLORS)
    shared = colors[rng.integers(len(colors))]
    objs = []
    k = 0
    for req in spec.include:
        for _ in range(req.count):
            color = req.color or (shared if spec.same_color else colors[rng.integers(len(colors))])
            texture = req.texture or TEXTURES[rng.integers(len(TEXTURES))]
            size = int(rng.integers(MIN_SIZE, MAX_SIZE + 1))
            room = min(MAX_JITTER, (CELL - size) // 2 - 1)
            offset = tuple(int(v) for v in rng.integers(-room, room + 1, size=2))
            jit = tuple(int(v) for v in rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3))
            objs.append(SceneObject(req.shape, color, texture, cells[k], size, offset, jit))
            k += 1
    grey = int(rng.integers(BACKGROUND_RANGE[0], BACKGROUND_RANGE[1] + 1))
    tint = rng.integers(-BACKGROUND_TINT, BACKGROUND_TINT + 1, size=3)
    bg = tuple(int(np.clip(grey + t, 0, 255)) for t in tint)
    return Scene(tuple(objs), bg)


def sample_spec(rng: np.random.Generator, task_weights: dict[str, float], held_out: bool = False) -> PromptSpec:
    """Draw a task by weight, then a prompt of that task from the seen (or held-out) split."""
    tasks = [t for t, w in task_weights.items() if w > 0]
    p = np.asarray([task_weights[t] for t in tasks], dtype=np.float64)
    while True:
        task = tasks[rng.choice(len(tasks), p=p / p.sum())]
        pool = split(task, held_out)
        if pool:
            return pool[rng.integers(len(pool))]
