"""Sample diversity as the paper's Appendix B.5 defines it: per prompt, 16 samples; LPIPS-diversity
= mean LPIPS distance over all pairs of a prompt's samples; CLIP-diversity = mean over all pairs of
(1 - cosine) of the L2-normalised CLIP image features (the paper says only "averaging over all
pairs" of normalised features; 1 - cos is the pair distance that matches its reported ~0.08-0.10);
both averaged over prompts; higher = more diverse.

LPIPS: the lpips package (AlexNet, v0.1 linear heads shipped in the package). Its AlexNet backbone
would be downloaded by torchvision, so the torchvision `alexnet` state dict comes from the local
file `models.lpips_alexnet` (torchvision's alexnet-owt-7be5be79.pth) and is copied into the
package's network; inputs are scaled to [-1, 1] as lpips expects.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import torch

from measures.weights import model_path

ALEXNET_SOURCE = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth (torchvision's AlexNet weights)"


def mean_pairwise(values: torch.Tensor) -> float:
    """Mean of the strictly upper triangle of a (n, n) matrix."""
    n = values.shape[0]
    iu = torch.triu_indices(n, n, offset=1)
    return float(values[iu[0], iu[1]].double().mean())


def clip_diversity(features_per_prompt: list[torch.Tensor]) -> float:
    """features: per prompt (n, D) L2-normalised features; mean over prompts of mean pair (1 - cos)."""
    scores = []
    for f in features_per_prompt:
        if len(f) < 2:
            raise ValueError("diversity needs at least 2 samples per prompt")
        scores.append(mean_pairwise(1 - f @ f.t()))
    return float(np.mean(scores))


class LpipsDiversity:
    def __init__(self, models: dict, device: str = "cpu"):
        import lpips

        path = model_path(models, "lpips_alexnet", "AlexNet weights for LPIPS", ALEXNET_SOURCE, "file")
        self.metric = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).to(device).eval()
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        net = self.metric.net
        loaded = 0
        for slice_name in ("slice1", "slice2", "slice3", "slice4", "slice5"):
            for idx, layer in getattr(net, slice_name).named_children():
                for p in ("weight", "bias"):
                    key = f"features.{idx}.{p}"
                    if hasattr(layer, p) and getattr(layer, p) is not None:
                        if key not in state:
                            raise ValueError(f"{str(path)!r} is not a torchvision alexnet state dict (no {key})")
                        getattr(layer, p).data.copy_(state[key])
                        loaded += 1
        if loaded != 10:
            raise ValueError(f"expected 5 conv layers of AlexNet in lpips, loaded {loaded // 2}")
        self.device = device

    @torch.no_grad()
    def prompt_diversity(self, images: np.ndarray) -> float:
        """Mean LPIPS over all pairs of one prompt's (n, H, W, 3) uint8 samples."""
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(self.device)
        pairs = list(combinations(range(len(x)), 2))
        a = torch.stack([x[i] for i, _ in pairs])
        b = torch.stack([x[j] for _, j in pairs])
        return float(self.metric(a, b).flatten().double().mean())

    def __call__(self, images_per_prompt: list[np.ndarray]) -> float:
        return float(np.mean([self.prompt_diversity(im) for im in images_per_prompt]))


__all__ = ["clip_diversity", "mean_pairwise", "LpipsDiversity"]
