"""Tiny random assets for the SenseFlow loop tests: a toy teacher folder, a CLIP folder with the
toy tokenizer, a DINOv2 folder, a dataset JSON of a few 32x32 images, and teacher folders of the
tiny sd3/flux/sdxl configs (backbones/tiny.py). Nothing is downloaded."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPModel, Dinov2Model

from backbones.toy import ToyBackbone
from toyworld.encoders import build_tokenizer, clip_config, dinov2_config
from toyworld.encoders import clip_image_processor
from protocols.dataset_json import write_dataset_json
from train.settings import resolve

PROMPTS = ["a photo of a red circle", "two blue squares", "a green triangle left of a white circle",
           "a yellow striped square", "three purple circles", "a red square above a blue triangle"]


def make_dataset(root: Path, n: int = 8, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    paths, prompts = [], []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((size, size, 3), rng.integers(10, 60), np.uint8)
        y, x = rng.integers(0, size - 10, 2)
        img[y:y + 10, x:x + 10] = rng.integers(0, 255, 3)
        path = root / "images" / f"{i:03d}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
        prompts.append(PROMPTS[i % len(PROMPTS)])
    return write_dataset_json(root / "dataset.json", [f"{i:03d}" for i in range(n)], paths, prompts)


def make_clip(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tok = build_tokenizer()
    CLIPModel(clip_config(len(tok), width=16, layers=1, heads=2, projection_dim=8)).save_pretrained(path)
    tok.save_pretrained(path)
    clip_image_processor().save_pretrained(path)  # a full CLIP folder: the along-training CLIP score reads images
    return path


def make_dinov2(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    Dinov2Model(dinov2_config(width=16, layers=2, heads=2)).save_pretrained(path)
    return path


def make_toy_teacher(path: Path, seed: int = 0) -> Path:
    ToyBackbone.new(layers=1, heads=2, head_dim=8, text_width=16, text_layers=1, seed=seed).save(path)
    return path


def toy_assets(root: Path) -> dict[str, str]:
    root = Path(root)
    return {"teacher": str(make_toy_teacher(root / "teacher")), "clip": str(make_clip(root / "clip")),
            "vfm_backbone": str(make_dinov2(root / "dinov2")), "dataset": str(make_dataset(root / "data"))}


def family_teacher(family: str, path: Path) -> Path:
    """A tiny sd3/flux/sdxl teacher folder in the real diffusers pipeline layout."""
    from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionXLPipeline

    from backbones.tiny import flux_components, sd3_components, sdxl_components

    pipes = {"sd3": (StableDiffusion3Pipeline, sd3_components), "flux": (FluxPipeline, flux_components),
             "sdxl": (StableDiffusionXLPipeline, sdxl_components)}
    cls, components = pipes[family]
    cls(**components(seed=0)).save_pretrained(path)
    return path


def tiny_settings(assets: dict[str, str], **overrides) -> dict:
    """Toy preset with tiny sizes: batch 2, few steps, checkpoints every 2 iterations."""
    explicit = {**assets, "steps": 4, "batch_size": 2, "threads": 1, "checkpoint_every": 2, "log_every": 1,
                "sample_every": 0, "sample_prompts": 2, "vfm_downsample": 1, "vfm_layers": [0, 1, 2], "loss_window": 3, "keep_checkpoints": 3}
    return resolve(explicit, overrides=overrides)


def params_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in getattr(net, "module", net).state_dict().items()}


def all_family_assets(root: Path) -> dict[str, str]:
    """`toy_assets` plus a tiny teacher folder per family under `teacher_<family>` (toy included)."""
    assets = toy_assets(root)
    assets["teacher_toy"] = assets["teacher"]
    for family in ("sd3", "flux", "sdxl"):
        assets[f"teacher_{family}"] = str(family_teacher(family, Path(root) / f"teacher_{family}"))
    return assets


FAMILY_PRESETS = {"toy": "toy", "sd3": "sd35_medium", "flux": "flux", "sdxl": "sdxl"}


def tiny_family_settings(assets: dict[str, str], family: str, **overrides) -> dict:
    """A family's released preset with only what the tiny models on CPU need changed (paths, 32 px,
    batch 2, a 1x1 discriminator map, no logging cadence, torch AdamW); `assets` holds `teacher_<family>`
    folders plus clip / vfm_backbone / dataset."""
    explicit = {"family": family, "preset": FAMILY_PRESETS[family], "teacher": assets[f"teacher_{family}"],
                "clip": assets["clip"], "vfm_backbone": assets["vfm_backbone"], "dataset": assets["dataset"],
                "resolution": 32, "batch_size": 2, "threads": 1, "vfm_downsample": 1, "vfm_layers": [0, 1, 2],
                "sample_every": 0, "sample_prompts": 2, "log_every": 1, "checkpoint_every": 1000,
                "optimizer": "adamw"}  # the released 8-bit AdamW (flux, sd35_large) needs bitsandbytes and CUDA
    return resolve(explicit, overrides=overrides)
