"""Mutual attention of WCH: parameter-free cross attention between the two augmented views.

``x1_attended[n, j] = sum_i softmax_i(cos(x2[n, j], x1[n, i]) / T) x1[n, i]`` and symmetrically
``x2_attended[n, i] = sum_j softmax_j(cos(x1[n, i], x2[n, j]) / T) x2[n, j]``: queries and keys
are L2-normalised tokens, values the raw tokens, scale 1/T. Built on
``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on CUDA, fused math on CPU),
so it is differentiable and needs no kernel of its own (``torch_impl.py``; the oracle is ``reference.py``).
"""
from __future__ import annotations

import torch

from hashkern._validation import FLOAT_DTYPES, check_same_device, check_tensor
from hashkern.ops._numerics import check_temperature
from hashkern.ops.mutual_attention.reference import mutual_attention_reference
from hashkern.ops.mutual_attention.torch_impl import mutual_attention_torch

__all__ = ["mutual_attention", "mutual_attention_reference"]


def mutual_attention(x1: torch.Tensor, x2: torch.Tensor, temperature: float = 1.0):
    """x1 [b, P, D], x2 [b, Q, D] (the two views; usually Q = P) -> (x1_attended [b, Q, D], x2_attended [b, P, D]).

    ``x1_attended`` is view 1 re-read through the patches of view 2 (one row per patch of x2),
    ``x2_attended`` the converse. ``temperature`` > 0 divides the cosine similarities (WCH: 1); down to
    the smallest normal float64, and tokens of any finite size, the result is the float64 one.
    """
    check_tensor("x1", x1, ndim=3, dtypes=FLOAT_DTYPES)
    check_tensor("x2", x2, ndim=3, dtypes=FLOAT_DTYPES)
    check_same_device(x1=x1, x2=x2)
    if x1.dtype != x2.dtype:
        raise TypeError(f"x1 and x2 must have the same dtype, got {x1.dtype} and {x2.dtype}")
    if x1.shape[0] != x2.shape[0] or x1.shape[2] != x2.shape[2]:
        raise ValueError("x1 and x2 must have the same batch size b and feature size D, got "
                         f"x1 {tuple(x1.shape)} and x2 {tuple(x2.shape)}")
    if min(x1.shape) < 1 or min(x2.shape) < 1:
        raise ValueError(f"x1 and x2 must be non-empty, got x1 {tuple(x1.shape)} and x2 {tuple(x2.shape)}")
    temperature = check_temperature("temperature", temperature)
    return mutual_attention_torch(x1, x2, temperature)
