"""Local model weights for metrics: one clear error naming the missing file and where to get it.

Nothing is downloaded at run time; every path comes from params.yaml `models` (or the CLI).
"""
from __future__ import annotations

from pathlib import Path

from configs.cli import UserError


class MissingWeights(UserError, FileNotFoundError):
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


class UnsafeWeightsFile(UserError, ValueError):
    """A weights file that can only be read by running arbitrary pickled code."""


def load_tensors(path: Path, what: str):
    """torch.load of a user-named weights file with weights_only=True (tensors, dicts, lists and plain
    values only: a pickle cannot run code on load). A file that needs more is refused with how to
    convert it once, in a trusted environment."""
    import pickle

    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeWeightsFile(
            f"{what} {str(path)!r} holds pickled objects other than tensors ({str(e).splitlines()[0][:160]}); it is "
            f"not loaded, because that could run code. If you trust the file, convert it once: python -c \"import "
            f"torch; s = torch.load('{path}', weights_only=False); torch.save(s.get('state_dict', s), "
            f"'{Path(path).with_suffix('.weights.pt')}')\" and point params.yaml at the new file.") from None


__all__ = ["MissingWeights", "UnsafeWeightsFile", "model_path", "load_tensors"]
