"""What every deep hashing model shares: a backbone, a hash head, ``loss(view1, view2)`` and ``encode(x)``."""
from __future__ import annotations

import torch
import torch.nn as nn

from hashkern._validation import check_int, check_tensor
from hashkern.codes import sign_ste


class HashModel(nn.Module):
    """Base class. Subclasses implement ``loss(view1, view2) -> dict`` (with a "loss" entry) and ``logits(x)``.

    ``forward(view1, view2)`` is ``loss`` so that DistributedDataParallel wraps it;
    ``encode(x)`` -> [b, K] ±1 codes (float) at inference.
    """

    def __init__(self, backbone: nn.Module, nbits: int):
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        self.backbone = backbone
        self.nbits = check_int("nbits", nbits, low=1)

    def _check_views(self, view1: torch.Tensor, view2: torch.Tensor) -> None:
        check_tensor("view1", view1, ndim=4, floating=True)
        check_tensor("view2", view2, ndim=4, floating=True)
        if view1.shape != view2.shape:
            raise ValueError(f"view1 and view2 must have the same shape, got {tuple(view1.shape)} and {tuple(view2.shape)}")
        if view1.shape[0] < 2:
            raise ValueError(f"a training batch needs at least 2 images (negatives), got {view1.shape[0]}")

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> dict:
        return self.loss(view1, view2)

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """images [b, C, H, W] -> codes [b, K] in {-1, +1} (float32)."""
        check_tensor("x", x, ndim=4, floating=True)
        return sign_ste(self.logits(x).float())


def mlp_head(in_dim: int, out_dim: int, hidden: int = 1024, norm: bool = False) -> nn.Sequential:
    """[LayerNorm ->] Linear(in, hidden) -> ReLU -> Linear(hidden, out)."""
    layers = [nn.LayerNorm(in_dim)] if norm else []
    layers += [nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)]
    return nn.Sequential(*layers)
