"""Binary codes: straight-through binarisation, and the packed-bit form used for search.

``sign_ste`` turns real hash-layer outputs into ±1 codes for training; ``pack_bits`` stores
them 8 bits a byte; ``hamming_distance`` compares packed codes.
"""
from __future__ import annotations

import torch

from hashkern._validation import check_tensor
from hashkern.ops.hamming import hamming_distance
from hashkern.ops.packbits import pack_bits, packed_width, unpack_bits

__all__ = ["sign_ste", "pack_bits", "unpack_bits", "packed_width", "hamming_distance"]


class SignSTEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        one = torch.ones((), dtype=x.dtype, device=x.device)
        return torch.where(x >= 0, one, -one)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """±1 codes with a straight-through gradient.

    Forward: ``+1`` where ``x >= 0`` (so ``sign(0) = +1``, unlike ``torch.sign``), ``-1``
    elsewhere; NaN maps to -1. Backward: the identity, ``d out / d x = 1``.

    Args:
        x: ``[..., K]`` floating point.
    Returns:
        ``[..., K]`` of x's dtype, values in {-1, +1}.
    """
    check_tensor("x", x, floating=True)
    return SignSTEFunction.apply(x)
