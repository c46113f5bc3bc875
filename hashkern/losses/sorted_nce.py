"""SortedNCE, the loss of NSH (Naturally-Sorted Hashing, Yu et al., IJCAI 2022).

For anchor i, the view-1 latents are soft-sorted by code similarity to the anchor
(``S = (B1 B2ᵀ + K) / (2K)``, SoftSort with temperature ``sort_temperature``) and compared with the
anchor's view-2 latent: ``c[i, k] = cos(E_i[k], z2[i])`` (``hashkern.ops.softsort.sorted_cosine``,
which never builds the ``[n, n, n]`` permutation). The first ``m`` ranks are positives, the rest
negatives::

    loss_ik = -log(exp(c_ik / T) / (exp(c_ik / T) + sum_{l >= m} exp(c_il / T)))    (k < m)
    per-anchor loss_i = 1/m sum_{k < m} loss_ik

``reduction="mean"`` averages over anchors (``-1/(n m) sum_i sum_k``), ``"sum"`` sums the
per-anchor losses, ``"none"`` returns them (``[n]``). The gradient reaches the codes through the
sorter, including through the sorted values. There is no official NSH code: the default
temperatures are this library's choice.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from hashkern._dispatch import BACKENDS
from hashkern._validation import FLOAT_DTYPES, check_int, check_positive, check_same_device, check_tensor
from hashkern.ops._numerics import check_temperature, logit_dtype
from hashkern.ops.softsort import sorted_cosine

__all__ = ["SortedNCELoss", "sorted_nce_loss", "code_similarity"]

_REDUCTIONS = ("mean", "sum", "none")


# The default SoftSort temperature in units of the 1/K step between K-bit code similarities.
DEFAULT_SORT_STEP_FRACTION = 0.32


def code_similarity(b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """``b1, b2 [n, K]`` ±1 (or relaxed) codes -> ``S = (b1 b2ᵀ + K) / (2K) [n, n]`` = 1 - Hamming/K.

    Computed in at least float32 so Hamming similarities of half-precision codes stay exact.
    """
    dtype = torch.promote_types(torch.promote_types(b1.dtype, b2.dtype), torch.float32)
    bits = b1.shape[1]
    return (b1.to(dtype) @ b2.to(dtype).T + bits) / (2 * bits)


def _check_reduction(reduction) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def sorted_nce_loss(b1: torch.Tensor | None = None, b2: torch.Tensor | None = None,
                    z1: torch.Tensor | None = None, z2: torch.Tensor | None = None, *,
                    s: torch.Tensor | None = None, num_positives: int, temperature: float = 0.2,
                    sort_temperature: float | None = None, reduction: str = "mean",
                    backend: str = "auto") -> torch.Tensor:
    """SortedNCE from codes ``(b1, b2)`` or a precomputed similarity ``s``.

    Args:
        b1, b2: ``[n, K]`` codes of the two views (straight-through ±1 or relaxed); omit with ``s``.
        z1, z2: ``[n, dz]`` latents of the two views (z1 is gathered, z2 anchors).
        s: ``[n, n]`` similarity (row i: anchor i), instead of ``b1``/``b2``.
        num_positives: ``m``, the number of top ranks taken as positives (1 <= m < n).
        temperature: contrastive temperature ``T`` > 0.
        sort_temperature: SoftSort temperature ``tau_s`` > 0. ``None`` (with codes only): ``0.32 / K``,
            a third of the ``1/K`` step between the Hamming similarities of ``K``-bit codes, so
            neighbouring distances stay distinguishable and ties share their weight.
        reduction: ``"mean"`` / ``"sum"`` -> scalar, ``"none"`` -> per-anchor ``[n]``.
    """
    _check_reduction(reduction)
    temperature = check_temperature("temperature", temperature)
    if sort_temperature is not None:
        sort_temperature = check_positive("sort_temperature", sort_temperature)
    if z1 is None or z2 is None:
        raise ValueError("z1 and z2 (the [n, dz] latents of the two views) are required")
    check_tensor("z1", z1, ndim=2, dtypes=FLOAT_DTYPES)
    check_tensor("z2", z2, ndim=2, dtypes=FLOAT_DTYPES)
    if s is None:
        if b1 is None or b2 is None:
            raise ValueError("pass either the codes b1 and b2 or a precomputed similarity s")
        check_tensor("b1", b1, ndim=2, dtypes=FLOAT_DTYPES)
        check_tensor("b2", b2, ndim=2, dtypes=FLOAT_DTYPES)
        check_same_device(b1=b1, b2=b2, z1=z1)
        if b1.shape != b2.shape or b1.shape[1] == 0:
            raise ValueError(f"b1 and b2 must be [n, K] codes of one shape with K >= 1, "
                             f"got {tuple(b1.shape)} and {tuple(b2.shape)}")
        if b1.shape[0] != z1.shape[0]:
            raise ValueError(f"b1 has {b1.shape[0]} rows but z1 has {z1.shape[0]}: one code per latent is expected")
        s = code_similarity(b1, b2)
        if sort_temperature is None:
            sort_temperature = DEFAULT_SORT_STEP_FRACTION / b1.shape[1]
    elif b1 is not None or b2 is not None:
        raise ValueError("pass either the codes b1 and b2 or a precomputed similarity s, not both")
    else:
        check_tensor("s", s, ndim=2, dtypes=FLOAT_DTYPES)
        if sort_temperature is None:
            raise ValueError("sort_temperature is required with a precomputed s (its default, 0.32/K, "
                             "needs the code length K)")
    n = z1.shape[0]
    if n < 2:
        raise ValueError(f"SortedNCE needs a batch of at least 2 (positives and negatives), got n = {n}")
    check_int("num_positives", num_positives, low=1, high=n - 1)
    if tuple(s.shape) != (n, n):
        raise ValueError(f"s must have shape [n, n] = {(n, n)} to match z1, got {tuple(s.shape)}")

    c = sorted_cosine(s, z1, z2, sort_temperature, descending=True, backend=backend)  # [n, n]
    logits = c.to(logit_dtype(c.dtype, 2.0, temperature)) / temperature  # cosines span [-1, 1]
    pos = logits[:, :num_positives]
    neg = torch.logsumexp(logits[:, num_positives:], dim=1, keepdim=True)
    per_anchor = (torch.logaddexp(pos, neg) - pos).mean(dim=1)  # -log(e^p / (e^p + sum e^neg))
    if reduction == "none":
        return per_anchor
    return per_anchor.mean() if reduction == "mean" else per_anchor.sum()


class SortedNCELoss(nn.Module):
    """NSH's SortedNCE as a module: ``loss_fn(b1, b2, z1, z2)`` or ``loss_fn(z1=z1, z2=z2, s=s)``.

    See ``sorted_nce_loss`` for the arguments; ``num_positives`` is ``m``.
    """

    def __init__(self, num_positives: int, temperature: float = 0.2, sort_temperature: float | None = None,
                 reduction: str = "mean", backend: str = "auto"):
        super().__init__()
        self.num_positives = check_int("num_positives", num_positives, low=1)
        self.temperature = check_temperature("temperature", temperature)
        self.sort_temperature = None if sort_temperature is None else check_positive("sort_temperature",
                                                                                      sort_temperature)
        self.reduction = _check_reduction(reduction)
        if backend not in BACKENDS:  # refused here, not at the first forward
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend

    def forward(self, b1: torch.Tensor | None = None, b2: torch.Tensor | None = None,
                z1: torch.Tensor | None = None, z2: torch.Tensor | None = None,
                s: torch.Tensor | None = None) -> torch.Tensor:
        return sorted_nce_loss(b1, b2, z1, z2, s=s, num_positives=self.num_positives,
                               temperature=self.temperature, sort_temperature=self.sort_temperature,
                               reduction=self.reduction, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"num_positives={self.num_positives}, temperature={self.temperature}, "
                f"sort_temperature={self.sort_temperature}, reduction={self.reduction!r}")
