"""Hashing models: WCH, NSH, the CIBHash baseline, shallow LSH / ITQ, and their backbones."""
from __future__ import annotations

from hashkern.models.backbones import BACKBONES, VGG16Backbone, ViTBackbone, build_backbone, small_vit, vit_b16
from hashkern.models.base import HashModel
from hashkern.models.cibhash import CIBHash
from hashkern.models.nsh import NSH
from hashkern.models.shallow import ITQ, LSH
from hashkern.models.wch import WCH

METHODS = {"wch": WCH, "nsh": NSH, "cibhash": CIBHash}


def build_model(method: str, nbits: int, backbone: dict, load_weights: bool = True, **kwargs) -> HashModel:
    """A model from a plain config (what checkpoints store).

    backbone: ``{"name": "small-vit" | "fmnist-vit" | "vit-b16" | "vgg16", "weights": path or None, ...}``;
    ``load_weights=False`` skips reading any weights file (a checkpoint brings its own weights).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {tuple(METHODS)}")
    bb = dict(backbone)
    if not load_weights:
        bb["weights"] = None
        if "pretrained" in bb:
            bb["pretrained"] = False
    return METHODS[method](build_backbone(**bb), nbits, **kwargs)


__all__ = ["BACKBONES", "CIBHash", "HashModel", "ITQ", "LSH", "METHODS", "NSH", "VGG16Backbone", "ViTBackbone",
           "WCH", "build_backbone", "build_model", "small_vit", "vit_b16"]
