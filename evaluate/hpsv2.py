"""HPSv2 / HPSv2.1 (tgxs002/HPSv2 1.2.0, hpsv2/img_score.py `score`), natively on open_clip.

Model: open_clip ViT-H-14 (`models.hpsv2_arch`, default "ViT-H-14"), every weight replaced by the
HPS checkpoint's `state_dict` (`models.hpsv2`: HPS_v2.1_compressed.pt by default — v2.1 is the
official benchmark default; HPS_v2_compressed.pt for v2.0, record which in `models.hpsv2_version`).
Preprocessing as HPSv2's `light_augmentation` val transform: RGB -> ToTensor -> resize so the
LONGER side is 224 (bicubic, torchvision tensor resize) -> zero-pad to 224x224 -> OpenAI CLIP
normalisation. Score = cosine of the normalised image and text features (the `img_score.score`
value, ~0.2-0.35, the scale of the paper's tables; the HPSv2 benchmark prints 100 x this).
"""
from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from measures.weights import load_tensors, model_path

SOURCE = "https://huggingface.co/xswu/HPSv2 (HPS_v2.1_compressed.pt or HPS_v2_compressed.pt)"
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def resize_max_size(x: torch.Tensor, size: int = 224, fill: float = 0.0) -> torch.Tensor:
    """HPSv2's ResizeMaxSize on a (3, H, W) tensor: longer side -> size, symmetric zero padding."""
    h, w = x.shape[-2:]
    scale = size / max(h, w)
    new = (round(h * scale), round(w * scale))
    x = TF.resize(x, list(new), interpolation=InterpolationMode.BICUBIC)
    pad_h, pad_w = size - new[0], size - new[1]
    return TF.pad(x, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=fill)


def preprocess(image, size: int = 224) -> torch.Tensor:
    x = TF.to_tensor(image.convert("RGB"))
    return TF.normalize(resize_max_size(x, size), MEAN, STD)


class HPSv2Scorer:
    def __init__(self, models: dict, device: str = "cpu"):
        import open_clip

        path = model_path(models, "hpsv2", "the HPSv2 checkpoint", SOURCE, "file")
        arch = models.get("hpsv2_arch") or "ViT-H-14"
        self.model = open_clip.create_model(arch, pretrained=None).to(device).eval()
        ckpt = load_tensors(path, "HPSv2 checkpoint")
        state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f"{str(path)!r} is not an HPSv2 checkpoint (expected a dict with 'state_dict')")
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{str(path)!r} does not match open_clip {arch}: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.size = self.model.visual.image_size[0] if isinstance(self.model.visual.image_size, tuple) \
            else self.model.visual.image_size
        self.version = models.get("hpsv2_version", "v2.1")
        self.device = device

    @torch.no_grad()
    def score(self, images, prompts: list[str]) -> np.ndarray:
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        x = torch.stack([preprocess(im, self.size) for im in images]).to(self.device)
        img = self.model.encode_image(x, normalize=True)
        txt = self.model.encode_text(self.tokenizer(prompts).to(self.device), normalize=True)
        return (img * txt).sum(-1).double().cpu().numpy()


def load_scorer(models: dict, device: str = "cpu") -> HPSv2Scorer:
    return HPSv2Scorer(models, device)


__all__ = ["HPSv2Scorer", "load_scorer", "preprocess", "resize_max_size"]
