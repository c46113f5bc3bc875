"""Numerics shared by the losses and mutual attention: temperatures, compute dtypes, overflow-free normalisation."""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from hashkern._validation import check_positive

_FLOAT64_TINY = sys.float_info.min  # smallest normal float64: 1/T stays finite above it


def check_temperature(name: str, value) -> float:
    """A temperature: a finite number >= the smallest normal float64 (so that 1/T is finite)."""
    value = check_positive(name, value)
    if value < _FLOAT64_TINY:
        raise ValueError(f"{name} must be >= {_FLOAT64_TINY:.3g} (1/{name} must be a finite float64), got {value}")
    return value


def at_least_float32(*tensors: torch.Tensor | torch.dtype) -> torch.dtype:
    """The library's one accumulation rule: the promoted dtype of the tensors (or dtypes), and at least
    float32. For float inputs: float64 if any is float64, else float32 (half inputs accumulate in fp32;
    softmax and exp never run in half precision)."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor if isinstance(tensor, torch.dtype) else tensor.dtype)
    return dtype


def logit_dtype(dtype: torch.dtype, span: float, temperature: float) -> torch.dtype:
    """``dtype``, or float64 when logits spanning ``span / temperature`` would lose more than ~1e-4 to
    ``dtype``'s rounding (a small temperature magnifies the rounding of the similarities) or overflow it."""
    return dtype if span / temperature * torch.finfo(dtype).eps < 1e-4 else torch.float64


def unit_rows(z: torch.Tensor) -> torch.Tensor:
    """Rows of ``z [..., d]`` scaled to unit L2 norm (zero rows stay zero) without overflow or underflow.

    Each row is first divided by its largest magnitude, so the squared norm lies in [1, d] whatever
    the scale of the input (``F.normalize`` alone overflows past ~1.8e19 in float32). The scale is
    detached: the result does not depend on it, so the gradient is the same.
    """
    scale = z.detach().abs().amax(dim=-1, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return F.normalize(z / scale, dim=-1)
