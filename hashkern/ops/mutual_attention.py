"""Mutual attention of WCH: parameter-free cross attention between the two augmented views.

``x1_attended[n, j] = sum_i softmax_i(cos(x2[n, j], x1[n, i]) / T) x1[n, i]`` and symmetrically
``x2_attended[n, i] = sum_j softmax_j(cos(x1[n, i], x2[n, j]) / T) x2[n, j]``: queries and keys
are L2-normalised tokens, values the raw tokens, scale 1/T. Built on
``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on CUDA, fused math on CPU),
so it is differentiable and needs no kernel of its own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from hashkern._validation import check_same_device, check_tensor
from hashkern.ops._numerics import at_least_float32, check_temperature, logit_dtype, unit_rows

__all__ = ["mutual_attention", "mutual_attention_reference"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def mutual_attention_reference(x1: torch.Tensor, x2: torch.Tensor, temperature: float = 1.0):
    """Explicit-softmax transcription (materialises [b, Q, P]); the oracle of the tests."""
    q1, q2 = F.normalize(x1, dim=-1), F.normalize(x2, dim=-1)
    cos = q2 @ q1.transpose(1, 2)  # [b, Q, P]: cos(x2[n, j], x1[n, i])
    x1_attended = torch.softmax(cos / temperature, dim=-1) @ x1
    x2_attended = torch.softmax(cos.transpose(1, 2) / temperature, dim=-1) @ x2
    return x1_attended, x2_attended


def mutual_attention(x1: torch.Tensor, x2: torch.Tensor, temperature: float = 1.0):
    """x1 [b, P, D], x2 [b, Q, D] (the two views; usually Q = P) -> (x1_attended [b, Q, D], x2_attended [b, P, D]).

    ``x1_attended`` is view 1 re-read through the patches of view 2 (one row per patch of x2),
    ``x2_attended`` the converse. ``temperature`` > 0 divides the cosine similarities (WCH: 1); down to
    the smallest normal float64, and tokens of any finite size, the result is the float64 one.
    """
    check_tensor("x1", x1, ndim=3, dtypes=_FLOATS)
    check_tensor("x2", x2, ndim=3, dtypes=_FLOATS)
    check_same_device(x1=x1, x2=x2)
    if x1.dtype != x2.dtype:
        raise TypeError(f"x1 and x2 must have the same dtype, got {x1.dtype} and {x2.dtype}")
    if x1.shape[0] != x2.shape[0] or x1.shape[2] != x2.shape[2]:
        raise ValueError("x1 and x2 must have the same batch size b and feature size D, got "
                         f"x1 {tuple(x1.shape)} and x2 {tuple(x2.shape)}")
    if min(x1.shape) < 1 or min(x2.shape) < 1:
        raise ValueError(f"x1 and x2 must be non-empty, got x1 {tuple(x1.shape)} and x2 {tuple(x2.shape)}")
    temperature = check_temperature("temperature", temperature)
    # Half inputs keep their dtype at T = 1 (the flash kernels); a temperature small enough to magnify
    # the cosines' rounding, or to overflow 1/T, moves the attention to float64 (as the losses do).
    dtype = at_least_float32(x1)
    dtype = x1.dtype if logit_dtype(dtype, 2.0, temperature) == dtype else torch.float64
    v1, v2 = x1.to(dtype), x2.to(dtype)
    q1, q2 = unit_rows(v1), unit_rows(v2)  # F.normalize overflows past ~1.8e19 in float32
    scale = 1.0 / temperature
    x1_attended = F.scaled_dot_product_attention(q2, q1, v1, scale=scale)
    x2_attended = F.scaled_dot_product_attention(q1, q2, v2, scale=scale)
    return x1_attended.to(x1.dtype), x2_attended.to(x2.dtype)
