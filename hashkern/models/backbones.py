"""Feature backbones: ViT-B/16 patch tokens, VGG-16 fc7, and a small ViT that trains from scratch.

Architectures come from timm / torchvision; weights only ever come from a local file (nothing
is downloaded). Every backbone takes images [b, C, H, W] (already resized and normalised to
``input_size``) and exposes
- ``forward(x) -> [b, D]`` a pooled feature, and
- ``tokens(x) -> [b, P, D]`` patch tokens without the CLS token (ViTs only: ``has_tokens``).
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from hashkern._validation import check_bool, check_int, check_positive
from hashkern.models.pretrained import PRETRAINED, pretrained_weights_path
from hashkern.models.weights import load_strict, read_state_dict

BACKBONES = ("small-vit", "fmnist-vit", "vit-b16", "vgg16")


def _match_channels(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    # Grayscale data into an RGB backbone: repeat the channel rather than fail.
    if x.shape[1] == 1 and in_chans == 3:
        return x.expand(-1, 3, -1, -1)
    if x.shape[1] != in_chans:
        raise ValueError(f"images must have {in_chans} channels, got {x.shape[1]}")
    return x


def _weights_path(weights) -> str | None:
    """None, or the weights file's path as a str (os.PathLike accepted)."""
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a path (str or os.PathLike) or None, got {type(weights).__name__}")
    return os.fspath(weights)


def _check_image_size(name: str, x: torch.Tensor, size: int, in_chans: int, exact: bool) -> None:
    if x.shape[1] != in_chans and not (x.shape[1] == 1 and in_chans == 3):
        raise ValueError(f"{name} must have {in_chans} channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    height, width = x.shape[2:]
    if exact and (height, width) != (size, size):
        raise ValueError(f"{name} must be {size}×{size} images (the backbone's input size), got {height}×{width}")
    if not exact and min(height, width) < size:
        raise ValueError(f"{name} must be images of at least {size}×{size}, got {height}×{width}")


class ViTBackbone(nn.Module):
    """A timm VisionTransformer without its classifier head.

    ``tokens(x)`` -> [b, P, D] final-normed patch tokens (CLS dropped); ``forward(x)`` -> [b, D] the CLS
    token (``pool="token"``) or the mean of the patch tokens (``pool="avg"``).
    ``dropout`` is the official ViT-B/16 config's ``dropout_rate`` (the WCH code's backbone):
    active in training after the position embedding and after each MLP layer; the attention
    weights and the attention output are not dropped (its ``attention_dropout_rate`` is 0).
    """
    has_tokens = True

    def __init__(self, *, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 in_chans: int = 3, mlp_ratio: float = 4.0, pool: str = "token", dropout: float = 0.0):
        super().__init__()
        if pool not in ("token", "avg"):
            raise ValueError(f"pool must be 'token' or 'avg', got {pool!r}")
        for name, value in (("img_size", img_size), ("patch_size", patch_size), ("embed_dim", embed_dim),
                            ("depth", depth), ("num_heads", num_heads), ("in_chans", in_chans)):
            check_int(name, value, low=1)
        if img_size % patch_size:
            raise ValueError(f"patch_size ({patch_size}) must divide img_size ({img_size})")
        if embed_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide embed_dim ({embed_dim})")
        check_positive("mlp_ratio", mlp_ratio)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        self.pool = pool
        from timm.models.vision_transformer import VisionTransformer

        self.vit = VisionTransformer(img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=0,
                                     embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                     pos_drop_rate=float(dropout), proj_drop_rate=float(dropout))
        # timm's proj_drop_rate also drops the attention output; the official ViT does not
        for block in self.vit.blocks:
            block.attn.proj_drop = nn.Identity()
        self.dim, self.input_size, self.in_chans = embed_dim, img_size, in_chans
        self.num_patches = (img_size // patch_size) ** 2
        self._timm_fused = all(block.attn.fused_attn for block in self.vit.blocks)  # timm's global choice

    def check_input(self, name: str, x: torch.Tensor) -> None:
        """Images [b, C, H, W] of the ViT's size and channels (1 channel into 3 is accepted)."""
        _check_image_size(name, x, self.input_size, self.in_chans, exact=True)

    def _select_attention(self, device: torch.device) -> None:
        # On CPU, for a few dozen tokens, the explicit softmax(QKᵀ)V is faster than the fused SDPA
        # kernel (about 15% of a small-ViT training step); elsewhere keep timm's choice.
        fused = self._timm_fused and not (device.type == "cpu" and self.num_patches <= 64)
        for block in self.vit.blocks:
            block.attn.fused_attn = fused

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        self._select_attention(x.device)
        return self.vit.forward_features(_match_channels(x, self.in_chans))  # [b, 1 + P, D]

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x)[:, self.vit.num_prefix_tokens:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "avg":
            return self.tokens(x).mean(1)
        return self._features(x)[:, 0]


def small_vit(in_chans: int = 1, img_size: int = 28, patch_size: int = 4, embed_dim: int = 96, depth: int = 4,
              num_heads: int = 4, pool: str = "token", dropout: float = 0.0) -> ViTBackbone:
    """A ViT small enough to train from scratch on a CPU in minutes (28² input, 49 patches, ~0.3M params)."""
    return ViTBackbone(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
                       num_heads=num_heads, in_chans=in_chans, mlp_ratio=2.0, pool=pool, dropout=dropout)


def vit_b16(weights: str | None = None, dropout: float = 0.1) -> ViTBackbone:
    """ViT-B/16 at 224² (196 patches of D=768), as WCH uses, with the official config's dropout 0.1 in training.

    ``weights``: Google's ``ViT-B_16.npz`` (the format of the WCH code) or a timm / PyTorch state
    dict (``.pth``/``.pt``/``.bin``/``.safetensors``); the classifier head in the file is ignored.
    """
    weights = _weights_path(weights)
    model = ViTBackbone(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, dropout=dropout)
    if weights is not None:
        if weights.endswith(".npz"):
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"weights file {weights!r} does not exist")
            from timm.models.vision_transformer import _load_weights
            try:
                _load_weights(model.vit, weights)
            except (KeyError, ValueError, RuntimeError) as exc:
                raise ValueError(f"weights file {weights!r} is not a ViT-B/16 .npz checkpoint: {exc}") from exc
        else:
            load_strict(model.vit, read_state_dict(weights), weights, "ViT-B/16", ignore_prefixes=("head.",))
    return model


class VGG16Backbone(nn.Module):
    """torchvision VGG-16 up to fc7 (after its ReLU and dropout): forward(x) -> [b, 4096], as CIBHash / NSH use.

    ``frozen`` (default) keeps the weights fixed, as those papers do. ``dropout`` (default, as the
    official CIBHash training runs its frozen classifier in train mode) keeps the classifier's two
    dropout layers (p = 0.5, after fc6 and fc7) active in training; ``dropout=False`` runs the
    backbone in eval mode always. Images of at least 32×32 (224×224 is the pretrained size).
    """
    has_tokens = False

    def __init__(self, weights: str | None = None, frozen: bool = True, dropout: bool = True):
        super().__init__()
        check_bool("frozen", frozen)
        check_bool("dropout", dropout)
        weights = _weights_path(weights)
        from torchvision.models import vgg16

        net = vgg16(weights=None)
        if weights is not None:
            load_strict(net, read_state_dict(weights), weights, "torchvision VGG-16")
        self.features, self.avgpool = net.features, net.avgpool
        self.fc7 = nn.Sequential(*list(net.classifier.children())[:6])  # fc6, relu, drop, fc7, relu, drop
        self.dim, self.input_size, self.in_chans, self.frozen, self.dropout = 4096, 224, 3, frozen, dropout
        if frozen:
            self.requires_grad_(False)

    def train(self, mode: bool = True):
        # No batch norm in VGG-16: train mode only switches the dropout on.
        return super().train(mode and self.dropout)

    def check_input(self, name: str, x: torch.Tensor) -> None:
        _check_image_size(name, x, 32, 3, exact=False)

    def tokens(self, x):
        raise ValueError("VGG-16 has no patch tokens; WCH needs a ViT backbone (small-vit or vit-b16)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(_match_channels(x, 3)))
        return self.fc7(torch.flatten(x, 1))


def build_backbone(name: str, weights: str | None = None, in_chans: int = 3, img_size: int | None = None,
                   **kwargs) -> nn.Module:
    """A backbone by name: "small-vit" (from scratch), "fmnist-vit" (shipped weights, ``pretrained=True``),
    "vit-b16" or "vgg16" (local weights)."""
    if name == "fmnist-vit":
        if weights is not None:
            raise ValueError("fmnist-vit loads the weights shipped with hashkern: pass pretrained=True, not weights")
        arch = PRETRAINED[name].arch
        if (in_chans, img_size) not in ((3, None), (arch["in_chans"], None), (arch["in_chans"], arch["img_size"])):
            raise ValueError(f"fmnist-vit takes {arch['in_chans']}-channel {arch['img_size']}² images, got "
                             f"in_chans={in_chans}, img_size={img_size}")
        if set(kwargs) - {"pretrained", "dropout"}:
            raise ValueError(f"fmnist-vit has a fixed architecture; unexpected backbone arguments {sorted(kwargs)}")
        return pretrained_backbone(name, **kwargs)
    if name == "small-vit":
        if weights is not None:
            raise ValueError("small-vit trains from scratch: it takes no weights file")
        return small_vit(in_chans=in_chans, img_size=28 if img_size is None else img_size, **kwargs)
    if name == "vit-b16":
        if set(kwargs) - {"dropout"}:
            raise ValueError(f"vit-b16 has a fixed architecture; unexpected backbone arguments {sorted(kwargs)}")
        return vit_b16(weights, **kwargs)
    if name == "vgg16":
        return VGG16Backbone(weights, **kwargs)
    raise ValueError(f"unknown backbone {name!r}; choose from {BACKBONES}")


def pretrained_backbone(name: str, pretrained: bool = True, dropout: float = 0.0,
                        weights_dir: str | None = None) -> nn.Module:
    """Shipped backbone ``name`` with its weights (``pretrained=False``: the same architecture, random init)."""
    check_bool("pretrained", pretrained)
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained backbone {name!r}; choose from {tuple(PRETRAINED)}")
    model = small_vit(**PRETRAINED[name].arch, dropout=dropout)
    if pretrained:
        path = pretrained_weights_path(name, weights_dir)
        load_strict(model, read_state_dict(path), path, f"pretrained backbone {name!r}")
    return model
