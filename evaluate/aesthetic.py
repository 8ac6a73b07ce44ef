"""LAION aesthetic predictor v2 (christophschuhmann/improved-aesthetic-predictor, simple_inference.py):
OpenAI CLIP ViT-L/14 image embedding (`encode_image` after CLIP's preprocess), L2-normalised, then
the MLP 768 -> 1024 -> 128 -> 64 -> 16 -> 1 (dropouts inactive, no nonlinearities) of
`sac+logos+ava1-l14-linearMSE.pth` (`models.aesv2`). The CLIP is loaded from an OpenAI-format
state dict or TorchScript file (`models.aesv2_clip`: ViT-L-14.pt as the `clip` package caches it)
through open_clip's `build_model_from_openai_state_dict` (the same module layout as the `clip`
package), with the `clip` package's preprocessing (resize shorter side 224 bicubic, centre crop,
RGB, normalise)."""
from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms as T
from torchvision.transforms import InterpolationMode

from measures.weights import load_tensors, model_path

MLP_SOURCE = ("https://github.com/christophschuhmann/improved-aesthetic-predictor "
              "(sac+logos+ava1-l14-linearMSE.pth)")
CLIP_SOURCE = "https://openaipublic.azureedge.net/clip/models/.../ViT-L-14.pt (what `clip.load('ViT-L/14')` caches)"
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


class AestheticMLP(torch.nn.Module):
    """The predictor's head, same module names (layers.0/2/4/6/7) as the released state dict."""

    def __init__(self, input_size: int = 768):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(input_size, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128), torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64), torch.nn.Dropout(0.1), torch.nn.Linear(64, 16), torch.nn.Linear(16, 1))

    def forward(self, x):
        return self.layers(x)


def openai_state_dict(path) -> dict:
    try:
        return torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:
        state = load_tensors(path, "OpenAI CLIP checkpoint")
        return state.get("state_dict", state)


class AestheticScorer:
    def __init__(self, models: dict, device: str = "cpu"):
        from open_clip.model import build_model_from_openai_state_dict

        mlp_path = model_path(models, "aesv2", "the LAION aesthetic predictor v2 head", MLP_SOURCE, "file")
        clip_path = model_path(models, "aesv2_clip", "OpenAI CLIP ViT-L/14 (OpenAI format)", CLIP_SOURCE, "file")
        self.clip = build_model_from_openai_state_dict(openai_state_dict(clip_path)).float().to(device).eval()
        width = self.clip.visual.output_dim
        self.mlp = AestheticMLP(width).to(device).eval()
        self.mlp.load_state_dict(torch.load(str(mlp_path), map_location="cpu", weights_only=True))
        size = self.clip.visual.image_size
        size = size[0] if isinstance(size, tuple) else size
        self.transform = T.Compose([T.Resize(size, interpolation=InterpolationMode.BICUBIC), T.CenterCrop(size),
                                    lambda im: im.convert("RGB"), T.ToTensor(), T.Normalize(MEAN, STD)])
        self.device = device

    @torch.no_grad()
    def score(self, images, prompts=None) -> np.ndarray:
        x = torch.stack([self.transform(im) for im in images]).to(self.device)
        emb = self.clip.encode_image(x).float()
        emb = emb / emb.norm(p=2, dim=-1, keepdim=True)
        return self.mlp(emb).squeeze(-1).double().cpu().numpy()


def load_scorer(models: dict, device: str = "cpu") -> AestheticScorer:
    return AestheticScorer(models, device)


__all__ = ["AestheticMLP", "AestheticScorer", "load_scorer"]
