"""Binary codes: straight-through binarisation, and the packed-bit form used for search.

``sign_ste`` turns real hash-layer outputs into ±1 codes for training; ``pack_bits`` stores
them 8 bits a byte; ``hamming_distance`` compares packed codes.
"""
from __future__ import annotations

import torch

from hashkern._validation import check_int, check_tensor
from hashkern.ops.hamming import hamming_distance
from hashkern.ops.packbits import pack_bits, pack_codes, packed_width, unpack_bits

__all__ = ["sign_ste", "pack_bits", "unpack_bits", "packed_width", "hamming_distance"]


class SignSTEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        one = torch.ones((), dtype=x.dtype, device=x.device)
        return torch.where(x >= 0, one, -one)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


def as_packed(name: str, codes, nbits: int | None) -> tuple[torch.Tensor, int]:
    """The one rule of the index and the metrics for codes ``[n, *]`` -> (packed uint8 ``[n, ceil(K/8)]``, K).

    uint8 is always packed bytes, ``ceil(nbits/8)`` per row with zero padding bits, and needs
    ``nbits``: unpacked {0, 1} codes must come as bool or another dtype (or ±1), never uint8.
    Any other dtype is unpacked codes ``[n, K]`` (K = ``nbits`` when given).
    """
    check_tensor(name, codes, ndim=2)
    if codes.dtype == torch.uint8:
        if nbits is None:
            raise ValueError(f"{name} is uint8, so it is taken as packed codes, which need nbits= (the bits per "
                             "code); unpacked {0, 1} codes must be passed as bool or ±1, not uint8")
        nbits = check_int("nbits", nbits, low=1)
        if (nbits + 7) // 8 != codes.shape[1]:
            raise ValueError(f"{name} is uint8, so it is taken as packed codes, which need {(nbits + 7) // 8} bytes "
                             f"per row for nbits={nbits}; got {codes.shape[1]} (unpacked {{0, 1}} codes: pass "
                             "them as bool or ±1)")
        if nbits % 8 and codes.numel() and codes.device.type != "meta" \
                and bool((codes[:, -1] >> (nbits % 8)).any()):
            raise ValueError(f"{name} has bits set beyond nbits={nbits} in its last byte (padding must be 0)")
        return codes.contiguous(), nbits
    if nbits is not None and check_int("nbits", nbits, low=1) != codes.shape[1]:
        raise ValueError(f"{name} must have nbits={nbits} bits per code, got shape {tuple(codes.shape)}")
    return pack_codes(name, codes).contiguous(), codes.shape[1]


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
