"""Local model weights for metrics: one clear error naming the missing file and where to get it.

Nothing is downloaded at run time; every path comes from params.yaml `models` (or the CLI).
"""
from __future__ import annotations

from pathlib import Path


class MissingWeights(FileNotFoundError):
    """A metric's weights are not at the configured local path."""

    def __init__(self, key: str, path, what: str, source: str):
        self.key, self.path, self.what, self.source = key, path, what, source
        where = f"{str(path)!r}" if path else "not set"
        super().__init__(f"{what}: params.yaml models.{key} is {where} (missing). Get it from {source} and set "
                         f"models.{key} to the local path.")

    @property
    def reason(self) -> str:
        """Short form for the skipped-metric record."""
        return f"no weights: models.{self.key} ({self.what}) is {'missing at ' + str(self.path) if self.path else 'not set'}"


def model_path(models: dict, key: str, what: str, source: str, kind: str = "any") -> Path:
    """models[key] as an existing Path (kind 'file', 'dir' or 'any'), else MissingWeights."""
    raw = (models or {}).get(key)
    path = Path(raw) if raw else None
    ok = path is not None and (path.is_file() if kind == "file" else path.is_dir() if kind == "dir" else path.exists())
    if not ok:
        raise MissingWeights(key, raw, what, source)
    return path


__all__ = ["MissingWeights", "model_path"]
