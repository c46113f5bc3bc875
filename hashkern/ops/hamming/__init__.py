"""All-pairs Hamming distances between packed binary codes (see :mod:`hashkern.ops.packbits`)."""
from __future__ import annotations

import torch

from hashkern._dispatch import OpBackends, declare, resolve_backend
from hashkern._validation import check_same_device, check_tensor, output_buffer
from hashkern.ops.hamming import autograd  # noqa: F401  (registers the fake for torch.compile)
from hashkern.ops.hamming.reference import hamming_distance_reference

__all__ = ["hamming_distance", "hamming_distance_reference", "check_packed_pair", "BACKENDS"]

# The compiled kernels where this build has them; the torch backend is the reference itself.
BACKENDS = declare(OpBackends("hamming_distance", preference=("cuda", "cpu", "torch")))


def check_packed_pair(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    """Two 2-D uint8 packed code matrices of the same byte width, on one device."""
    check_tensor(a_name, a, ndim=2, dtypes=(torch.uint8,))
    check_tensor(b_name, b, ndim=2, dtypes=(torch.uint8,))
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{a_name} and {b_name} must have the same bytes per row (packed code width), "
            f"got {a.shape[1]} and {b.shape[1]}"
        )
    if a.shape[1] < 1:
        raise ValueError(f"{a_name} and {b_name} must have at least one byte per row, got 0")
    check_same_device(**{a_name: a, b_name: b})


def hamming_distance(a_packed: torch.Tensor, b_packed: torch.Tensor, *, out: torch.Tensor | None = None,
                     backend: str = "auto") -> torch.Tensor:
    """Exact Hamming distance between every row of ``a_packed`` and every row of ``b_packed``.

    Args:
        a_packed: ``[na, W]`` uint8, codes packed by :func:`hashkern.pack_bits` (zero padding bits).
        b_packed: ``[nb, W]`` uint8, same W and device.
        out: optional ``[na, nb]`` int32 contiguous buffer, sharing no memory with the inputs.
        backend: ``"auto" | "cuda" | "cpu" | "torch"``.

    Returns:
        ``[na, nb]`` int32, the number of differing bits.
    """
    check_packed_pair("a_packed", a_packed, "b_packed", b_packed)
    shape = (a_packed.shape[0], b_packed.shape[0])
    out = output_buffer(out, shape=shape, dtype=torch.int32, device=a_packed.device,
                        inputs={"a_packed": a_packed, "b_packed": b_packed})
    chosen = resolve_backend(backend, BACKENDS, a_packed.device)
    if chosen == "torch":
        return out.copy_(hamming_distance_reference(a_packed, b_packed))
    torch.ops.hashkern.hamming_distance(a_packed.contiguous(), b_packed.contiguous(), out)
    return out

