"""What every deep hashing model shares: a backbone, a hash head, ``loss(view1, view2)`` and ``encode(x)``."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from hashkern._validation import check_int, check_tensor
from hashkern.codes import sign_ste

HEAD_INITS = ("official", "torch")


class HashModel(nn.Module):
    """Base class. Subclasses implement ``loss(view1, view2) -> dict`` (with a "loss" entry) and ``logits(x)``.

    ``forward(view1, view2)`` is ``loss`` so that DistributedDataParallel wraps it;
    ``encode(x)`` -> [b, K] ±1 codes (float) at inference.
    """

    def __init__(self, backbone: nn.Module, nbits: int):
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        dim = getattr(backbone, "dim", None)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise TypeError(f"backbone must expose its feature size as a positive int attribute `dim` "
                            f"(as hashkern's backbones do), got {type(backbone).__name__} with dim={dim!r}")
        self.backbone = backbone
        self.nbits = check_int("nbits", nbits, low=1)

    def _check_images(self, name: str, x: torch.Tensor) -> None:
        """Images [b, C, H, W] on the model's device in its dtype, of a size the backbone takes."""
        check_tensor(name, x, ndim=4, floating=True)
        param = next(self.parameters(), None)
        if param is not None and x.device != param.device:
            raise ValueError(f"{name} must be on the model's device {param.device}, got {x.device}")
        if param is not None and x.dtype != param.dtype:
            raise TypeError(f"{name} must have the model's dtype {param.dtype}, got {x.dtype}")
        check_input = getattr(self.backbone, "check_input", None)
        if check_input is not None:
            check_input(name, x)

    def _check_views(self, view1: torch.Tensor, view2: torch.Tensor) -> None:
        self._check_images("view1", view1)
        self._check_images("view2", view2)
        if view1.shape != view2.shape:
            raise ValueError(f"view1 and view2 must have the same shape, got {tuple(view1.shape)} and "
                             f"{tuple(view2.shape)}")
        if view1.shape[0] < 2:
            raise ValueError(f"a training batch needs at least 2 images (negatives), got {view1.shape[0]}")

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> dict:
        return self.loss(view1, view2)

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """images [b, C, H, W] -> codes [b, K] in {-1, +1} (float32)."""
        self._check_images("x", x)
        return sign_ste(self.logits(x).float())


def check_loss_weight(name: str, value) -> float:
    """A loss weight: a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def check_choice(name: str, value, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def official_init_(linear: nn.Linear) -> None:
    """The official WCH head init: weights kaiming-uniform with fan_out (gain √2), biases N(0, 1)."""
    nn.init.kaiming_uniform_(linear.weight, mode="fan_out")
    nn.init.normal_(linear.bias)


def mlp_head(in_dim: int, out_dim: int, hidden: int = 1024, norm: bool = False, *, norm_eps: float = 1e-5,
             init: str = "torch") -> nn.Sequential:
    """[LayerNorm(eps=norm_eps) ->] Linear(in, hidden) -> ReLU -> Linear(hidden, out).

    ``init="torch"``: PyTorch's default Linear init; ``"official"``: :func:`official_init_` (WCH).
    """
    hidden = check_int("hidden", hidden, low=1)
    init = check_choice("head_init", init, HEAD_INITS)
    layers = [nn.LayerNorm(in_dim, eps=norm_eps)] if norm else []
    layers += [nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)]
    if init == "official":
        for layer in layers:
            if isinstance(layer, nn.Linear):
                official_init_(layer)
    return nn.Sequential(*layers)
