"""Model families behind one interface (`backbones.base.Backbone`), looked up by name.

Family modules are imported only when asked for, so importing `backbones` stays cheap and a
family whose module (or optional dependency) is missing does not break the others.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch

from backbones.base import Backbone, BackboneError, Conditioning

# family name -> "module:Class"
FAMILIES = {
    "toy": "backbones.toy:ToyBackbone",
    "sd3": "backbones.sd3:SD3Backbone",
    "flux": "backbones.flux:FluxBackbone",
    "sdxl": "backbones.sdxl:SDXLBackbone",
}


def backbone_class(family: str) -> type[Backbone]:
    """The Backbone subclass registered under `family`; BackboneError naming the known ones otherwise."""
    if family not in FAMILIES:
        raise BackboneError(f"unknown model family {family!r}; known families: {', '.join(sorted(FAMILIES))}")
    module, name = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module), name)


def load_backbone(family: str, path: str | Path, device="cpu", dtype: torch.dtype = torch.float32,
                  **options) -> Backbone:
    """Load the teacher of `family` from the local diffusers folder `path` (nothing is downloaded).
    `options` go to the family's `load` (e.g. resolution for flux/sdxl, max_sequence_length)."""
    backbone = backbone_class(family).load(path, device=device, dtype=dtype, **options)
    backbone.source = Path(path)  # students are initialised from its weight files (Backbone.init_student)
    return backbone


__all__ = ["FAMILIES", "Backbone", "BackboneError", "Conditioning", "backbone_class", "load_backbone"]
