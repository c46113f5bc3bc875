"""WCH losses: weighted contrastive distillation of patch similarities into hash codes, and bit balance.

The patch similarities ``s [b, b]`` of the two views (``hashkern.ops.patchsim.patch_similarity`` on
mutually attended tokens) become soft targets through ``P = softmax(s / T_w, dim=1)``:

- ``weight_norm="column"`` (default, as the official code RosieYuu/WCH computes them):
  ``W[n, m] = P[n, m] / P[m, m]``. The official code divides ``P`` by its diagonal with
  broadcasting, which divides *column* m by ``P[m, m]``; this looks unintended, but it is what the
  published results were trained with, so it is the default here.
- ``weight_norm="row"`` (this library's option): ``W[n, m] = P[n, m] / P[n, n] =
  exp((s[n, m] - s[n, n]) / T_w)``, every row relative to its own positive pair.

``clamp_weights=True`` (option) caps W at 1. The codes are trained with the soft-target
cross-entropy of ``logits = h1 h2ᵀ / K / T`` against W (``F.cross_entropy`` with probability
targets: W is used as is, not renormalised; ``W[n, n] = 1``):

    L = -1/b sum_n sum_m W[n, m] log softmax_m(logits[n, :])

Everything is computed in float64 ([b, b] work, cheap beside the backbone), so temperatures down to
the smallest normal float64 and codes up to ~1e150 give finite, correct losses. The result has the
inputs' dtype, at least float32, and float64 when a temperature is below ~2e-3 (as NT-Xent).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from hashkern._validation import FLOAT_DTYPES, check_bool, check_same_device, check_tensor
from hashkern.ops._numerics import at_least_float32, check_temperature, logit_dtype

__all__ = ["WCHLoss", "BitBalanceLoss", "wch_loss", "wch_weights", "bit_balance_loss", "WEIGHT_NORMS"]

WEIGHT_NORMS = ("column", "row")


def _check_weight_norm(value) -> str:
    if value not in WEIGHT_NORMS:
        raise ValueError(f"weight_norm must be one of {WEIGHT_NORMS}, got {value!r}")
    return value


def _weights(s: torch.Tensor, weight_temperature: float, weight_norm: str, clamp: bool) -> torch.Tensor:
    # log P from differences to the row maximum: no s / T_w overflow however small T_w is.
    log_p = torch.log_softmax((s - s.detach().amax(dim=1, keepdim=True)) / weight_temperature, dim=1)
    diagonal = log_p.diagonal()
    log_w = log_p - (diagonal[None, :] if weight_norm == "column" else diagonal[:, None])
    return torch.exp(log_w.clamp(max=0) if clamp else log_w)


def wch_weights(s: torch.Tensor, weight_temperature: float = 0.2, clamp: bool = False, *,
                weight_norm: str = "column") -> torch.Tensor:
    """s [b, b] -> W [b, b]: ``P[n, m] / P[m, m]`` ("column", official) or ``P[n, m] / P[n, n]`` ("row").

    ``P = softmax(s / weight_temperature, dim=1)``; ``clamp=True`` caps W at 1: no pair weighs more
    than a positive pair (the patch similarity is not maximal on the diagonal in general, and an
    uncapped row weight ``exp((s[n, m] - s[n, n]) / T_w)`` can reach ``exp(0.3 / 0.05) ≈ 400``).
    Computed in float64; returned in s's dtype (at least float32). Differentiable in s.
    """
    check_tensor("s", s, ndim=2, dtypes=FLOAT_DTYPES)
    if s.shape[0] != s.shape[1] or s.shape[0] < 1:
        raise ValueError(f"s must be a non-empty square [b, b] matrix, got shape {tuple(s.shape)}")
    weight_temperature = check_temperature("weight_temperature", weight_temperature)
    clamp = check_bool("clamp", clamp)
    weight_norm = _check_weight_norm(weight_norm)
    return _weights(s.double(), weight_temperature, weight_norm, clamp).to(at_least_float32(s))


def wch_loss(h1: torch.Tensor, h2: torch.Tensor, s: torch.Tensor, temperature: float = 0.3,
             weight_temperature: float = 0.2, detach_weights: bool = False,
             clamp_weights: bool = False, *, weight_norm: str = "column") -> torch.Tensor:
    """h1, h2 [b, K] codes of the two views (±1 straight-through, or relaxed), s [b, b] -> scalar loss.

    Defaults are the official WCH: T = 0.3, T_w = 0.2, column-normalised weights, gradient into s.
    ``detach_weights=True`` stops the gradient into ``s`` (pure distillation targets);
    ``clamp_weights=True`` caps the weights at 1; ``weight_norm="row"``: see ``wch_weights``.
    """
    check_tensor("h1", h1, ndim=2, dtypes=FLOAT_DTYPES)
    check_tensor("h2", h2, ndim=2, dtypes=FLOAT_DTYPES)
    check_tensor("s", s, ndim=2, dtypes=FLOAT_DTYPES)
    check_same_device(h1=h1, h2=h2, s=s)
    if h1.shape != h2.shape:
        raise ValueError(f"h1 and h2 must have the same shape [b, K], got {tuple(h1.shape)} and {tuple(h2.shape)}")
    b, bits = h1.shape
    if b < 1 or bits < 1:
        raise ValueError(f"h1 must be a non-empty [b, K] batch of codes, got shape {tuple(h1.shape)}")
    if tuple(s.shape) != (b, b):
        raise ValueError(f"s must have shape [b, b] = {(b, b)} (patch similarities of the batch), got {tuple(s.shape)}")
    temperature = check_temperature("temperature", temperature)
    weight_temperature = check_temperature("weight_temperature", weight_temperature)
    check_bool("detach_weights", detach_weights)
    check_bool("clamp_weights", clamp_weights)
    weight_norm = _check_weight_norm(weight_norm)
    s64 = s.detach().double() if detach_weights else s.double()
    targets = _weights(s64, weight_temperature, weight_norm, clamp_weights)
    logits = (h1.double() @ h2.double().T) / (bits * temperature)
    loss = -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    # Tiny temperatures make the loss itself huge (~2 / T for ±1 codes): then it stays in float64.
    return loss.to(logit_dtype(at_least_float32(h1, h2, s), 2.0, min(temperature, weight_temperature)))


def bit_balance_loss(h: torch.Tensor) -> torch.Tensor:
    """h [b, K] -> mean_k (mean_n h[n, k])² - mean(h²): balanced bits, saturated codes.

    The official WCH applies it to the straight-through sign codes (``sign_ste(tanh(.))``): then
    ``mean(h²) = 1`` in the forward pass but its gradient ``-2h/(bK)`` still pushes the tanh
    outputs outwards. Computed in float64, returned in h's dtype (at least float32).
    """
    check_tensor("h", h, ndim=2, dtypes=FLOAT_DTYPES)
    if h.shape[0] < 1 or h.shape[1] < 1:
        raise ValueError(f"h must be a non-empty [b, K] batch of codes, got shape {tuple(h.shape)}")
    h64 = h.double()
    return (h64.mean(dim=0).square().mean() - h64.square().mean()).to(at_least_float32(h))


class WCHLoss(nn.Module):
    """``WCHLoss(temperature=0.3, weight_temperature=0.2, detach_weights=False, clamp_weights=False,
    weight_norm="column")(h1, h2, s)``: see :func:`wch_loss`; the defaults are the official WCH's."""

    def __init__(self, temperature: float = 0.3, weight_temperature: float = 0.2, detach_weights: bool = False,
                 clamp_weights: bool = False, weight_norm: str = "column"):
        super().__init__()
        self.temperature = check_temperature("temperature", temperature)
        self.weight_temperature = check_temperature("weight_temperature", weight_temperature)
        self.detach_weights = check_bool("detach_weights", detach_weights)
        self.clamp_weights = check_bool("clamp_weights", clamp_weights)
        self.weight_norm = _check_weight_norm(weight_norm)

    def forward(self, h1: torch.Tensor, h2: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return wch_loss(h1, h2, s, self.temperature, self.weight_temperature, self.detach_weights,
                        self.clamp_weights, weight_norm=self.weight_norm)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, weight_temperature={self.weight_temperature}, "
                f"detach_weights={self.detach_weights}, clamp_weights={self.clamp_weights}, "
                f"weight_norm={self.weight_norm!r}")


class BitBalanceLoss(nn.Module):
    """``BitBalanceLoss()(h) -> scalar``: mean over bits of (batch mean)² minus mean(h²)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return bit_balance_loss(h)
