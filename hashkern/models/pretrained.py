"""Backbone weights shipped inside the package, loaded by name and checked against a recorded SHA-256.

``build_backbone("fmnist-vit", pretrained=True)`` is the demo's small ViT with the weights that
``hashkern pretrain`` made on Fashion-MNIST's training split (self-supervised, no labels read).
A missing or altered file is a clear error, never a silent random init. This module is the
registry (names, files, digests, architectures); ``pretrained_backbone`` in the backbones module
builds the model.
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field

from hashkern.models.weights import file_sha256

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")


@dataclass(frozen=True)
class PretrainedBackbone:
    """A shipped backbone: its architecture (``small_vit`` arguments), weights file and digest."""
    file: str
    sha256: str
    arch: dict = field(default_factory=dict)
    command: str = ""


# The small ViT of the demo's CPU schedule: 16 patches of 7×7, width 64, 3 blocks, mean-pooled patch tokens.
FMNIST_VIT_ARCH = dict(in_chans=1, img_size=28, patch_size=7, embed_dim=64, depth=3, num_heads=4, pool="avg")

PRETRAINED = {
    "fmnist-vit": PretrainedBackbone(
        file="fmnist-vit.pt",
        sha256="08c9e87fbdfd647c061a221253aba84addb65f0efb663d230d83412ca28a41e4",
        arch=FMNIST_VIT_ARCH,
        command="hashkern pretrain --threads 1 --export hashkern/weights/fmnist-vit.pt",
    ),
}


def pretrained_weights_path(name: str, weights_dir: str | None = None) -> str:
    """The verified path of shipped backbone ``name``'s weights (FileNotFoundError / ValueError otherwise)."""
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained backbone {name!r}; choose from {tuple(PRETRAINED)}")
    entry = PRETRAINED[name]
    path = os.path.join(weights_dir or WEIGHTS_DIR, entry.file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the weights of pretrained backbone {name!r} are missing: expected {path!r} "
                                f"(shipped with hashkern; remake them with `{entry.command}`)")
    found = file_sha256(path)
    if found != entry.sha256:
        raise ValueError(f"the weights file {path!r} of pretrained backbone {name!r} is corrupted or not the "
                         f"shipped one: SHA-256 {found}, expected {entry.sha256 or '(none recorded)'}")
    return path


def __getattr__(name: str):
    # pretrained_backbone moved to models/backbones.py, so this registry imports no architecture; the
    # package hashkern.models has imported that module before anyone can reach this one.
    if name == "pretrained_backbone":
        warnings.warn("hashkern.models.pretrained.pretrained_backbone moved to the backbones module of "
                      "hashkern.models; the old path goes away in the next release", DeprecationWarning, stacklevel=2)
        return getattr(sys.modules[f"{__package__}.backbones"], name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
