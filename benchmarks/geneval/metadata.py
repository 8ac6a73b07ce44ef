"""GenEval prompt metadata: the official 553 prompts (prompts/evaluation_metadata.jsonl from
djghosh13/geneval @af4902f, MIT licence in prompts/LICENSE) and the ToyWorld edition in the same
format (tag, include [{class, count, color?, position?}], exclude, prompt)."""
from __future__ import annotations

import json
from pathlib import Path

from configs.cli import UserError
from configs.paths import text_lines
from toyworld.eval_prompts import eval_prompts

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
OFFICIAL_METADATA = PROMPT_DIR / "evaluation_metadata.jsonl"
TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


class MetadataError(UserError, ValueError):
    """A GenEval metadata file that cannot be used."""


def validate(entry, where: str) -> dict:
    if not isinstance(entry, dict):
        raise MetadataError(f"{where}: not a JSON object")
    missing = [k for k in ("tag", "prompt", "include") if k not in entry]
    if missing:
        raise MetadataError(f"{where}: missing {missing} (GenEval metadata needs tag, prompt, include)")
    if not isinstance(entry["include"], list) or not entry["include"]:
        raise MetadataError(f"{where}: 'include' must be a non-empty list")
    for req in entry["include"] + entry.get("exclude", []):
        if not isinstance(req, dict) or "class" not in req or "count" not in req:
            raise MetadataError(f"{where}: every include/exclude entry needs 'class' and 'count'")
    return entry


def read_metadata(path: str | Path = OFFICIAL_METADATA, key: str = "benchmarks.geneval.metadata") -> list[dict]:
    """GenEval's evaluation_metadata.jsonl (one JSON object per line), each entry validated; `key` is
    the setting that named the file."""
    out = []
    for n, line in enumerate(text_lines(path, "the GenEval metadata file", key, max_chars=100_000), 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise MetadataError(f"the GenEval metadata file has invalid JSON ({key}: {path}, entry {n}): {e}; "
                                f"write one JSON object per line") from None
        out.append(validate(entry, f"{str(path)!r} entry {n}"))
    return out


def toy_metadata(prompts_per_task: int, seed: int) -> list[dict]:
    """The ToyWorld edition: per GenEval task `prompts_per_task` grammar prompts, half held out of
    training where the task has a held-out split (the teacher's evaluation set), GenEval format."""
    return [spec.to_metadata() for spec, _ in eval_prompts(prompts_per_task, seed)]


__all__ = ["MetadataError", "OFFICIAL_METADATA", "TASKS", "read_metadata", "toy_metadata", "validate"]
