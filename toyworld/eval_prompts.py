"""The GenEval-style ToyWorld evaluation prompt set: per task a fixed number of prompts, half from
the held-out split (never trained on) where the task has one. Used by the teacher's report, the
toy GenEval metadata and the training-time probe."""
from __future__ import annotations

import numpy as np

from toyworld.grammar import GENEVAL_TASKS, split
from toyworld.world import PromptSpec


def eval_prompts(prompts_per_task: int, seed: int) -> list[tuple[PromptSpec, bool]]:
    """(spec, held_out) pairs, per task half held-out where possible, deterministic."""
    rng = np.random.default_rng(seed)
    out: list[tuple[PromptSpec, bool]] = []
    for task in GENEVAL_TASKS:
        held, seen = split(task, True), split(task, False)
        n_held = min(len(held), prompts_per_task // 2)
        pick_held = [held[i] for i in rng.permutation(len(held))[:n_held]]
        n_seen = prompts_per_task - n_held
        order = rng.permutation(len(seen))
        pick_seen = [seen[order[i % len(seen)]] for i in range(n_seen)]  # small tasks repeat prompts
        out += [(s, True) for s in pick_held] + [(s, False) for s in pick_seen]
    return out
