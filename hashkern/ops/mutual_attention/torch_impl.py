"""The PyTorch backend of mutual attention: two ``F.scaled_dot_product_attention`` calls (flash /
memory-efficient kernels on CUDA, fused math on CPU) on unit-row queries and keys."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from hashkern.ops._numerics import at_least_float32, logit_dtype, unit_rows


def mutual_attention_torch(x1: torch.Tensor, x2: torch.Tensor, temperature: float):
    """x1 [b, P, D], x2 [b, Q, D] (checked, same dtype) -> (x1_attended [b, Q, D], x2_attended [b, P, D])."""
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
