"""Any timm model as a backbone, by name (``build_backbone("timm:<name>")``), weights from a local file only.

The architecture comes from ``timm.create_model(name, num_classes=0, **kwargs)`` (timm's public
API; nothing is downloaded). Weights: a state dict file (torch or safetensors; the classifier
timm's config names is ignored, every other key must fit), or for ViTs Google's ``.npz`` through
the model's public ``load_pretrained``. The contract WCH needs -- ``tokens(x) -> [b, P, D]`` patch
tokens -- holds for models whose ``forward_features`` returns a token sequence with
``num_prefix_tokens`` leading class/register tokens (ViT, DeiT, BEiT, EVA, ...); others (CNNs)
have ``has_tokens = False`` and ``tokens`` raises a ValueError saying so.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from hashkern.models.weights import load_strict, read_state_dict

__all__ = ["TimmBackbone"]


def _match_channels(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 and in_chans == 3 else x


class TimmBackbone(nn.Module):
    """timm model ``name`` without its classifier: ``forward(x) -> [b, D]`` (timm's pooled pre-logits),
    ``tokens(x) -> [b, P, D]`` (patch tokens, prefix tokens dropped; ``has_tokens`` models only)."""

    def __init__(self, name: str, weights: str | os.PathLike | None = None, in_chans: int = 3, **kwargs):
        super().__init__()
        import timm

        if not isinstance(name, str) or not timm.is_model(name):
            raise ValueError(f"timm has no model named {name!r} (see timm.list_models())")
        try:
            self.model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
        except TypeError as exc:
            raise ValueError(f"timm model {name!r} does not take the backbone arguments {sorted(kwargs)}: {exc}") \
                from exc
        if weights is not None:
            self._load(os.fspath(weights), name)
        self.name, self.in_chans, self.dim = name, in_chans, self.model.num_features
        patch_embed = getattr(self.model, "patch_embed", None)
        size = getattr(patch_embed, "img_size", None) or self.model.pretrained_cfg.get("input_size", (3, 224, 224))[1:]
        self.input_size = int(size[0])
        self.has_tokens = patch_embed is not None and hasattr(self.model, "num_prefix_tokens")

    def _load(self, path: str, name: str) -> None:
        if path.endswith(".npz"):
            if not hasattr(self.model, "load_pretrained"):
                raise ValueError(f"weights file {path!r}: .npz weights load into timm ViTs only, not {name!r}")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"weights file {path!r} does not exist")
            self.model.load_pretrained(path)
            return
        classifier = self.model.pretrained_cfg.get("classifier") or ()
        classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        load_strict(self.model, read_state_dict(path), path, f"timm model {name!r}",
                    ignore_prefixes=tuple(f"{c}." for c in classifier))

    def check_input(self, name: str, x: torch.Tensor) -> None:
        """Images [b, C, S, S] at the model's input size (1 channel into 3 is accepted)."""
        if x.dim() != 4 or x.shape[1] not in (self.in_chans, 1) or tuple(x.shape[2:]) != (self.input_size,) * 2:
            raise ValueError(f"{name} must be [b, {self.in_chans}, {self.input_size}, {self.input_size}] images "
                             f"for timm model {self.name!r}, got {tuple(x.shape)}")

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_tokens:
            raise ValueError(f"timm model {self.name!r} has no patch tokens (its forward_features is not a token "
                             "sequence); WCH needs a ViT-like model, e.g. timm:vit_base_patch16_224")
        features = self.model.forward_features(_match_channels(x, self.in_chans))
        if features.dim() != 3:
            raise ValueError(f"timm model {self.name!r}: forward_features gave {tuple(features.shape)}, "
                             "not [b, tokens, D] patch tokens")
        return features[:, self.model.num_prefix_tokens:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(_match_channels(x, self.in_chans))
