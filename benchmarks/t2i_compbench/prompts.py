"""T2I-CompBench prompt sets: the official validation lists (prompts/, MIT licence of
Karine-Huang/T2I-CompBench, prompts/LICENSE.txt) and the ToyWorld edition built from the grammar.

A `CompPrompt` is the prompt text plus, for the toy edition, the grammar's structured truth
(`spec`) that the oracle judge reads instead of parsing the sentence with spaCy.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from configs.cli import UserError
from toyworld.grammar import prompt_set
from toyworld.world import PromptSpec

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "complex")


class PromptFileError(UserError, ValueError):
    """A prompt list that cannot be used as T2I-CompBench input."""


@dataclass(frozen=True)
class CompPrompt:
    category: str
    prompt: str
    spec: PromptSpec | None = None  # toy edition only


def read_prompt_file(path: Path) -> list[str]:
    """One prompt per line. The official image names are `<prompt>_<NNNNNN>.png` and the official
    scripts recover the prompt with split('_')[0], so a prompt may not contain '_' or '/'."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"T2I-CompBench prompt file {str(path)!r} not found")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = [line for line in lines if line]
    if not prompts:
        raise PromptFileError(f"T2I-CompBench prompt file {str(path)!r} has no prompts")
    bad = [p for p in prompts if "_" in p or "/" in p]
    if bad:
        raise PromptFileError(f"{str(path)!r}: prompts may not contain '_' or '/' (image names encode the prompt): "
                              f"{bad[:3]}")
    return prompts


def official_prompts(category: str, prompt_dir: Path = PROMPT_DIR, limit: int | None = None) -> list[CompPrompt]:
    """The official `<category>_val.txt` (300 prompts), optionally the first `limit`."""
    if category not in CATEGORIES:
        raise PromptFileError(f"unknown T2I-CompBench category {category!r}; known: {', '.join(CATEGORIES)}")
    prompts = read_prompt_file(Path(prompt_dir) / f"{category}_val.txt")
    return [CompPrompt(category, p) for p in prompts[:limit]]


def complex_subsets(prompt_dir: Path = PROMPT_DIR) -> tuple[set[str], set[str]]:
    """(spatial, action) prompt sets of the complex category, normalised as 3_in_1.py does."""
    from benchmarks.t2i_compbench.scoring import normalise_complex

    def load(name: str) -> set[str]:
        return {normalise_complex(p) for p in read_prompt_file(Path(prompt_dir) / name)}

    return load("complex_val_spatial.txt"), load("complex_val_action.txt")


def toy_prompts(category: str, count: int, seed: int) -> list[CompPrompt]:
    """`count` ToyWorld prompts of a category (all of them when it has fewer), a fixed random
    selection for a given seed; the grammar's categories mirror T2I-CompBench's (non_spatial =
    "X the same color as Y"; complex = colour/texture attributes plus a 2D relation)."""
    if category not in CATEGORIES:
        raise PromptFileError(f"unknown T2I-CompBench category {category!r}; known: {', '.join(CATEGORIES)}")
    pool = prompt_set(category)
    order = np.random.default_rng([seed, CATEGORIES.index(category)]).permutation(len(pool))
    return [CompPrompt(category, pool[i].prompt, pool[i]) for i in order[:count]]


__all__ = ["CATEGORIES", "CompPrompt", "PromptFileError", "PROMPT_DIR", "read_prompt_file", "official_prompts",
           "complex_subsets", "toy_prompts"]
