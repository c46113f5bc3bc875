"""WCH losses: weighted contrastive distillation of patch similarities into hash codes, and bit balance.

``W[n, m] = exp((s[n, m] - s[n, n]) / T_w)`` turns the patch similarities ``s [b, b]`` of the two
views (``hashkern.ops.patchsim.patch_similarity`` on mutually attended tokens) into soft targets,
and the codes are trained with the soft-target cross-entropy of
``logits = h1 h2ᵀ / K / T`` against W (as ``F.cross_entropy`` with probability targets: W is used
as is, not renormalised; ``W[n, n] = 1``):

    L = -1/b sum_n sum_m W[n, m] log softmax_m(logits[n, :])
"""
from __future__ import annotations

import torch
import torch.nn as nn

from hashkern._validation import check_positive, check_same_device, check_tensor

__all__ = ["WCHLoss", "BitBalanceLoss", "wch_loss", "wch_weights", "bit_balance_loss"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return torch.promote_types(dtype, torch.float32)  # softmax and exp in at least fp32


def wch_weights(s: torch.Tensor, weight_temperature: float = 0.2, clamp: bool = False) -> torch.Tensor:
    """s [b, b] -> W [b, b] = exp((s[n, m] - s[n, n]) / weight_temperature).

    ``clamp=True`` caps W at 1 (``exp(min(s[n, m] - s[n, n], 0) / T_w)``): no pair weighs more than the
    positive pair itself. The patch similarity is not maximal on the diagonal in general, and
    without the cap a pair with ``s[n, m] > s[n, n]`` gets an unbounded weight (``exp(0.3 / 0.05) ≈ 400``).
    """
    d = s - s.diagonal()[:, None]
    return torch.exp((d.clamp(max=0) if clamp else d) / weight_temperature)


def wch_loss(h1: torch.Tensor, h2: torch.Tensor, s: torch.Tensor, temperature: float = 0.3,
             weight_temperature: float = 0.2, detach_weights: bool = False,
             clamp_weights: bool = False) -> torch.Tensor:
    """h1, h2 [b, K] codes of the two views (±1 straight-through, or relaxed), s [b, b] -> scalar loss.

    ``detach_weights=True`` stops the gradient into ``s`` (pure distillation targets);
    ``clamp_weights=True`` caps the weights at 1 (see ``wch_weights``).
    """
    check_tensor("h1", h1, ndim=2, dtypes=_FLOATS)
    check_tensor("h2", h2, ndim=2, dtypes=_FLOATS)
    check_tensor("s", s, ndim=2, dtypes=_FLOATS)
    check_same_device(h1=h1, h2=h2, s=s)
    if h1.shape != h2.shape:
        raise ValueError(f"h1 and h2 must have the same shape [b, K], got {tuple(h1.shape)} and {tuple(h2.shape)}")
    b, bits = h1.shape
    if b < 1 or bits < 1:
        raise ValueError(f"h1 must be a non-empty [b, K] batch of codes, got shape {tuple(h1.shape)}")
    if tuple(s.shape) != (b, b):
        raise ValueError(f"s must have shape [b, b] = {(b, b)} (patch similarities of the batch), got {tuple(s.shape)}")
    temperature = check_positive("temperature", temperature)
    weight_temperature = check_positive("weight_temperature", weight_temperature)
    if not isinstance(detach_weights, bool):
        raise TypeError(f"detach_weights must be a bool, got {type(detach_weights).__name__}")
    if not isinstance(clamp_weights, bool):
        raise TypeError(f"clamp_weights must be a bool, got {type(clamp_weights).__name__}")
    dtype = _compute_dtype(h1, h2, s)
    targets = wch_weights((s.detach() if detach_weights else s).to(dtype), weight_temperature, clamp_weights)
    logits = (h1.to(dtype) @ h2.to(dtype).T) / (bits * temperature)
    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def bit_balance_loss(h: torch.Tensor) -> torch.Tensor:
    """h [b, K] -> mean_k (mean_n h[n, k])² - mean(h²): balanced bits, saturated codes."""
    check_tensor("h", h, ndim=2, dtypes=_FLOATS)
    if h.shape[0] < 1 or h.shape[1] < 1:
        raise ValueError(f"h must be a non-empty [b, K] batch of codes, got shape {tuple(h.shape)}")
    h = h.to(_compute_dtype(h))
    return h.mean(dim=0).square().mean() - h.square().mean()


class WCHLoss(nn.Module):
    """``WCHLoss(temperature=0.3, weight_temperature=0.2, detach_weights=False, clamp_weights=False)(h1, h2, s)``."""

    def __init__(self, temperature: float = 0.3, weight_temperature: float = 0.2, detach_weights: bool = False,
                 clamp_weights: bool = False):
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.weight_temperature = check_positive("weight_temperature", weight_temperature)
        if not isinstance(detach_weights, bool):
            raise TypeError(f"detach_weights must be a bool, got {type(detach_weights).__name__}")
        if not isinstance(clamp_weights, bool):
            raise TypeError(f"clamp_weights must be a bool, got {type(clamp_weights).__name__}")
        self.detach_weights, self.clamp_weights = detach_weights, clamp_weights

    def forward(self, h1: torch.Tensor, h2: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return wch_loss(h1, h2, s, self.temperature, self.weight_temperature, self.detach_weights,
                        self.clamp_weights)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, weight_temperature={self.weight_temperature}, "
                f"detach_weights={self.detach_weights}, clamp_weights={self.clamp_weights}")


class BitBalanceLoss(nn.Module):
    """``BitBalanceLoss()(h) -> scalar``: mean over bits of (batch mean)² minus mean(h²)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return bit_balance_loss(h)
