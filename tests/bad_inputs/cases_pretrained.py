"""Bad inputs for the shipped backbone and pretraining: pretrained_backbone, build_backbone("fmnist-vit"),
PretrainConfig, Pretrainer."""
from __future__ import annotations

import os
import shutil

import numpy as np
import torch
from badinput import Case

import hashkern.models.backbones as backbones
import hashkern.models.pretrained as pretrained
from hashkern.models import build_backbone
from hashkern.training.pretrain import PretrainConfig, Pretrainer
from hashkern.training.train import TrainConfig

SHIPPED = os.path.join(pretrained.WEIGHTS_DIR, pretrained.PRETRAINED["fmnist-vit"].file)


def _damaged(tmp, edit) -> str:
    target = os.path.join(tmp, pretrained.PRETRAINED["fmnist-vit"].file)
    shutil.copy(SHIPPED, target)
    data = edit(bytearray(open(target, "rb").read()))
    with open(target, "wb") as f:
        f.write(data)
    return str(tmp)


def _flip(i):
    def flip(data):
        data[i % len(data)] ^= 0x01
        return data
    return flip


def _pos_embed(model) -> np.ndarray:
    return model.vit.pos_embed.detach().double().numpy()


def cases() -> list[Case]:
    out = []
    size = os.path.getsize(SHIPPED)
    # One-bit flips spread over the file (zip records, pickle, tensor data); every one is refused by the SHA-256.
    for i in (0, 1, 30, 64, 500, size // 3, size // 2, size - 200, size - 22, size - 1):
        out.append(Case(f"pretrained_backbone/weights/bit-flip-{i}", lambda tmp, i=i: backbones.pretrained_backbone(
            "fmnist-vit", weights_dir=_damaged(tmp, _flip(i))), names=("SHA-256",)))
    for what, edit in (("truncated", lambda d: d[:-1]), ("appended", lambda d: d + b"\0"), ("empty", lambda d: b"")):
        out.append(Case(f"pretrained_backbone/weights/{what}", lambda tmp, e=edit: backbones.pretrained_backbone(
            "fmnist-vit", weights_dir=_damaged(tmp, e)), names=("SHA-256",)))
    out.append(Case("pretrained_backbone/weights/missing", lambda tmp: backbones.pretrained_backbone(
        "fmnist-vit", weights_dir=str(tmp)), names=("missing",), paths=True))
    out.append(Case("pretrained_backbone/name/unknown", lambda tmp: backbones.pretrained_backbone("vit-b16"),
                    names=("pretrained backbone",)))
    for what, value in (("str", "yes"), ("int", 1), ("None", None)):
        out.append(Case(f"build_backbone/pretrained/{what}", lambda tmp, v=value: build_backbone(
            "fmnist-vit", pretrained=v), names=("pretrained",)))
    out.append(Case("build_backbone/fmnist-vit/weights", lambda tmp: build_backbone("fmnist-vit", weights="x.pt"),
                    names=("weights",)))
    out.append(Case("build_backbone/fmnist-vit/in_chans", lambda tmp: build_backbone("fmnist-vit", in_chans=2),
                    names=("in_chans",)))
    out.append(Case("build_backbone/fmnist-vit/valid",
                    lambda tmp: _pos_embed(build_backbone("fmnist-vit", pretrained=True)),
                    reference=lambda tmp: torch.load(SHIPPED, weights_only=True)["vit.pos_embed"].double().numpy()))
    for arg, values in (("epochs", (0, -1, 1.5, True)), ("batch_size", (1, 0, "64")),
                        ("projection_dim", (0,)), ("lr", (0.0, -1e-3)), ("min_crop", (0.0, 1.5)),
                        ("temperature", (0.0, -1.0, float("nan")))):
        for value in values:
            out.append(Case(f"PretrainConfig/{arg}/{value!r}", lambda tmp, a=arg, v=value: PretrainConfig(**{a: v}),
                            names=(arg,)))
    tiny = PretrainConfig(epochs=1, batch_size=4)
    for what, images in (("float", torch.zeros(8, 1, 28, 28)), ("3d", torch.zeros(8, 28, 28, dtype=torch.uint8)),
                         ("too-few", torch.zeros(3, 1, 28, 28, dtype=torch.uint8))):
        out.append(Case(f"Pretrainer/images/{what}", lambda tmp, x=images: Pretrainer(
            tiny, str(tmp), images=x, progress=False), names=("images", "training set")))
    out.append(Case("Pretrainer/config/TrainConfig", lambda tmp: Pretrainer(TrainConfig(), str(tmp)),
                    names=("config",)))
    return out
