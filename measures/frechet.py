"""Fréchet distances to the teacher's samples.

- `fid_t`: FID-T, clean-fid's "clean" mode exactly: clean-fid's own resizer (PIL bicubic on float32
  channels to 299x299, `cleanfid.resize.build_resizer("clean")`), its Inception-v3 TorchScript
  wrapper (`cleanfid.inception_torchscript.InceptionV3W`) loaded from the local file
  `inception-2015-12-05.pt` (params `models.inception`; clean-fid would download it), its feature
  statistics (mean, np.cov rowvar=False) and its `frechet_distance`.
- `patch_fid_t`: Patch FID-T as SDXL-Lightning (Lin et al. 2024) and the works following it compute
  it: the same Inception features on a 299x299 crop at native resolution (no resize), here the
  centre crop; images smaller than 299 px have no such crop and the metric is skipped.
- `fd_t_toyworld`: a Fréchet distance (clean-fid's formula) in the ToyWorld feature space: the toy
  CLIP's projected image features (`models.toy_clip`; `measures.clip_score.ClipScorer` is the extractor). `fd_t_dinov2`: the same with DINOv2's CLS
  token (`models.dinov2`, a transformers Dinov2Model folder). Neither is FID; names keep them apart.
- `kid_t`: clean-fid's KID (`cleanfid.fid.kernel_distance`: cubic polynomial kernel MMD, 100 random
  subsets of min(N, 1000) images) on the same Inception features, its subsets drawn from a fixed seed.

Below N = 2,048 images (Inception's feature dimension) the feature covariance is singular; FID-T at
such N is biased far above its large-N value and is flagged as not comparable with published values
(`COMPARABLE_N`). When clean-fid's matrix square root has a large imaginary part it raises
`FrechetError` naming N and the feature dimension instead of clean-fid's bare "Imaginary component".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from cleanfid.fid import frechet_distance, kernel_distance
from cleanfid.resize import build_resizer

from configs.cli import UserError
from measures.weights import model_path

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_SOURCE = ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
                    "inception-2015-12-05.pt (the file clean-fid downloads)")
PATCH = 299
COMPARABLE_N = 2048  # below it, FID (2048-d Inception features) is not comparable with published values


class FrechetError(UserError, ValueError):
    """A Fréchet distance that cannot be computed from these feature sets (what to change is in the text)."""


def comparability(metric: str, n_images: int) -> str:
    """Empty, or why an Inception-feature distance over `n_images` is not comparable with published ones."""
    if metric in ("fid_t", "patch_fid_t", "fid") and n_images < COMPARABLE_N:
        return (f"not comparable with published: N = {n_images} < {COMPARABLE_N} (the 2048-d Inception covariance is "
                f"singular below it; the paper uses COCO-5K, N = 5,000)")
    if metric == "kid_t" and n_images < COMPARABLE_N:
        return (f"not comparable with published: N = {n_images} < {COMPARABLE_N} (KID's subsets and variance depend "
                f"on N; published values use N = 5,000)")
    return ""


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """clean-fid's statistics: mean and covariance (rowvar=False) of (N, D) features, computed in the
    features' own dtype as clean-fid does (float32 Inception features -> float32 mean)."""
    feats = np.asarray(features)
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def fd(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between two feature sets (clean-fid's `frechet_distance`)."""
    if len(features_a) < 2 or len(features_b) < 2:
        raise ValueError("a Fréchet distance needs at least 2 images per set")
    mu1, s1 = feature_stats(features_a)
    mu2, s2 = feature_stats(features_b)
    try:
        return float(frechet_distance(mu1, s1, mu2, s2))
    except ValueError as e:
        if "Imaginary component" not in str(e):
            raise
        n, d = min(len(features_a), len(features_b)), np.asarray(features_a).shape[1]
        raise FrechetError(
            f"Fréchet distance failed: the covariance product's square root has a large imaginary part (clean-fid: "
            f"{e}) with N = {n} images of {d}-d features" + (f"; N < {d} makes the covariances singular: use at least "
                                                            f"{d} images (eval.fid_prompts)" if n < d else
                                                            "; check the images for near-duplicates or constant "
                                                            "images")) from None


def kid(features_a: np.ndarray, features_b: np.ndarray, seed: int = 0) -> float:
    """clean-fid's KID (`kernel_distance(generated, reference)`) with its random subsets drawn from `seed`
    (clean-fid draws them from NumPy's global generator, unseeded; its state is restored afterwards)."""
    if len(features_a) < 2 or len(features_b) < 2:
        raise ValueError("KID needs at least 2 images per set")
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return float(kernel_distance(np.asarray(features_a), np.asarray(features_b)))
    finally:
        np.random.set_state(state)


class InceptionFeatures:
    """clean-fid's clean-mode Inception features from a local TorchScript file."""

    def __init__(self, models: dict, device: str = "cpu"):
        from cleanfid.inception_torchscript import InceptionV3W

        path = model_path(models, "inception", "Inception-v3 TorchScript for FID (clean-fid)", INCEPTION_SOURCE, "file")
        if path.name != INCEPTION_FILE:
            raise ValueError(f"models.inception must be the file {INCEPTION_FILE} (clean-fid loads it by that name), "
                             f"got {str(path)!r}")
        self.model = InceptionV3W(str(path.parent), download=False, resize_inside=False).to(device).eval()
        self.resize = build_resizer("clean")
        self.device = device

    @torch.no_grad()
    def _features(self, batch: list[np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(np.stack(batch).astype(np.float32)).permute(0, 3, 1, 2)
        return self.model(x.to(self.device)).cpu().numpy()

    def __call__(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, 2048), resized to 299 as clean-fid's dataset does."""
        out = []
        for i in range(0, len(images), batch_size):
            out.append(self._features([self.resize(img) for img in images[i:i + batch_size]]))
        return np.concatenate(out)

    def patches(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Features of the centre 299x299 crop at native resolution."""
        h, w = images.shape[1:3]
        if h < PATCH or w < PATCH:
            raise ValueError(f"patch FID needs images of at least {PATCH}x{PATCH} px, got {w}x{h}")
        top, left = (h - PATCH) // 2, (w - PATCH) // 2
        crops = images[:, top:top + PATCH, left:left + PATCH].astype(np.float32)
        return np.concatenate([self._features(list(crops[i:i + batch_size]))
                               for i in range(0, len(crops), batch_size)])


class Dinov2Features:
    """CLS token of a transformers Dinov2Model folder, with its image processor."""

    def __init__(self, path: Path, device: str = "cpu"):
        from transformers import AutoImageProcessor, Dinov2Model

        self.model = Dinov2Model.from_pretrained(str(path)).to(device).eval()
        self.processor = AutoImageProcessor.from_pretrained(str(path))
        self.device = device

    @torch.no_grad()
    def __call__(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch_size):
            px = self.processor(images=list(images[i:i + batch_size]), return_tensors="pt")["pixel_values"]
            out.append(self.model(pixel_values=px.to(self.device)).pooler_output.float().cpu().numpy())
        return np.concatenate(out)


__all__ = ["feature_stats", "fd", "InceptionFeatures", "Dinov2Features", "INCEPTION_FILE"]
