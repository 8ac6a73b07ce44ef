"""What a number was computed from, recorded with it: the image count, the prompt set's hash, the
samplers and guidance of the teacher and the student, every model file's sha256, the package
versions and the detector / judge / feature extractor names. The metrics stage writes it into
metrics.meta.json, GenEval and T2I-CompBench into their summary.json (`provenance`), the report
collects it per run into results/provenance.json with its short `id` in summary.csv, and the
dashboard shows it.

sha256 of large weight files is cached on disk by (absolute path, size, modification time) in
$SENSEFLOW_CACHE/sha256.json (default ~/.cache/senseflow), so a 10 GB teacher is hashed once.
"""
from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "accelerate", "clean-fid", "open_clip_torch", "lpips",
            "numpy", "scipy", "pillow")
MAX_FILES = 500  # per model folder (a diffusers pipeline has tens)


def cache_file() -> Path:
    return Path(os.environ.get("SENSEFLOW_CACHE") or Path.home() / ".cache" / "senseflow") / "sha256.json"


def _load_cache() -> dict:
    try:
        data = json.loads(cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def file_sha256(path: str | Path, cache: dict | None = None) -> str:
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    if cache is not None and key in cache:
        return cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    if cache is not None:
        cache[key] = digest
    return digest


def path_hashes(path: str | Path, cache: dict | None = None) -> dict:
    """{"path", "files": {relative path: sha256}} of a weight file or folder (hidden files skipped)."""
    path = Path(path)
    if path.is_file():
        return {"path": str(path), "files": {path.name: file_sha256(path, cache)}}
    files = sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                          p.relative_to(path).parts))
    return {"path": str(path), "files": {str(p.relative_to(path)): file_sha256(p, cache) for p in files[:MAX_FILES]},
            **({"files_not_hashed": len(files) - MAX_FILES} if len(files) > MAX_FILES else {})}


def model_hashes(paths: dict[str, str | Path | None]) -> dict:
    """{key: path_hashes} of every given path that exists (absent or null ones: recorded as such)."""
    cache = _load_cache()
    size = len(cache)
    out = {}
    for key, value in paths.items():
        if value and Path(value).exists():
            out[key] = path_hashes(value, cache)
        elif value:
            out[key] = {"path": str(value), "missing": True}
    if len(cache) != size:
        try:
            cache_file().parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file().with_suffix(".tmp")
            tmp.write_text(json.dumps(cache))
            tmp.replace(cache_file())
        except OSError:
            pass  # an unwritable cache only costs re-hashing next time
    return out


def weights_fingerprint(path: str | Path | None) -> str | None:
    """First 16 hex of the sha256 of a weight file's or folder's file sha256s (model_hashes, so through the
    disk cache), or None without an existing path: says whether two runs started from the same weights."""
    if not path or not Path(path).exists():
        return None
    files = model_hashes({"weights": path})["weights"]["files"]
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def prompt_set_hash(prompts: list[str]) -> str:
    """sha256 of the prompts in order, one per line."""
    return hashlib.sha256("\n".join(prompts).encode()).hexdigest()


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(**parts) -> dict:
    """The record (`parts` + package versions) with `id`: the first 12 hex of its canonical JSON's sha256."""
    record = {**parts, "packages": package_versions()}
    record["id"] = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return record


def short_models(models: dict) -> dict[str, str]:
    """{key: first 12 hex of each file's sha256 joined} for display."""
    out = {}
    for key, entry in (models or {}).items():
        files = entry.get("files") or {}
        out[key] = "missing" if entry.get("missing") else ", ".join(f"{name} {digest[:12]}" for name, digest in
                                                                    list(files.items())[:4]) + \
            (f" (+{len(files) - 4} files)" if len(files) > 4 else "")
    return out


__all__ = ["file_sha256", "path_hashes", "model_hashes", "weights_fingerprint", "prompt_set_hash", "package_versions", "provenance",
           "short_models", "cache_file"]
