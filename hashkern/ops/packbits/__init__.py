"""Packing binary codes into bits: ``[..., K]`` ±1 / {0,1} / bool  <->  ``[..., ceil(K/8)]`` uint8.

Bit order: code bit ``j`` of a row goes to byte ``j // 8``, bit ``j % 8`` (least significant
first); the unused high bits of the last byte are zero, so packed rows can be XOR-ed and
popcounted whole.
"""
from __future__ import annotations

import functools

import torch

from hashkern._dispatch import OpBackends, declare, resolve_backend
from hashkern._validation import check_int, check_tensor, dtype_name, output_buffer
from hashkern.ops.packbits import autograd  # noqa: F401  (registers the fakes for torch.compile)
from hashkern.ops.packbits.reference import pack_bits_reference, unpack_bits_reference

__all__ = ["pack_bits", "pack_codes", "check_codes", "unpack_bits", "pack_bits_reference", "unpack_bits_reference",
           "packed_width", "PACK_BACKENDS", "UNPACK_BACKENDS"]

# The compiled kernels where this build has them; the torch backend is the reference itself.
PACK_BACKENDS = declare(OpBackends("pack_bits", preference=("cuda", "cpu", "torch")))
UNPACK_BACKENDS = declare(OpBackends("unpack_bits", preference=("cuda", "cpu", "torch")))


@functools.lru_cache(maxsize=None)
def _has_element_values(dtype: torch.dtype) -> bool:
    """False for sub-byte, packed and quantised dtypes: no per-element values to convert to or from."""
    try:
        torch.zeros(1, dtype=torch.uint8).to(dtype).to(torch.float64)
    except (NotImplementedError, RuntimeError, TypeError):
        return False
    return True


def packed_width(nbits: int) -> int:
    """Bytes per packed row of ``nbits`` bits."""
    return (nbits + 7) // 8


# Dtypes the kernels read and write directly; others (uint16/32/64, float8) go through one of these.
_NATIVE = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
           torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _as_native(name: str, t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when the kernels read its dtype, else a float copy holding the same values exactly."""
    if t.dtype in _NATIVE:
        return t
    if not _has_element_values(t.dtype):
        raise TypeError(f"{name} has dtype {dtype_name(t.dtype)}, whose elements cannot be read one by one; "
                        "pass bool, an integer or a floating-point dtype")
    # float64 holds every uint16/32 and float8 value exactly, and no uint64 value other than 0 and 1 becomes 0 or 1.
    return t.to(torch.float64)


def _check_binary_values(name: str, codes: torch.Tensor) -> None:
    """Values must all be in {-1, +1} or all in {0, 1}: anything else has no bit to map to."""
    if codes.dtype == torch.bool or codes.numel() == 0 or torch.compiler.is_compiling():
        return
    low, high = torch.aminmax(codes)
    if low == -1:
        ok = bool((codes.abs() == 1).all())
        expected = "±1 codes (values in {-1, +1})"
    else:
        ok = bool(((codes == 0) | (codes == 1)).all())
        expected = "{0, 1} codes"
    if not ok:
        raise ValueError(
            f"{name} must hold binary values, all in {{-1, +1}} or all in {{0, 1}} (or be bool); "
            f"got values in [{low.item()}, {high.item()}] that are not {expected}. "
            "Binarise first, e.g. with hashkern.sign_ste(x)."
        )


def check_codes(name: str, codes) -> torch.Tensor:
    """Binary codes ``[..., K]`` of any real dtype or bool, checked; returned in a dtype the kernels read."""
    check_tensor(name, codes)
    if codes.is_complex():
        raise TypeError(f"{name} must be real or bool, got {dtype_name(codes.dtype)}")
    if codes.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (no data): binary codes need values to pack")
    if codes.dim() < 1 or codes.shape[-1] < 1:
        raise ValueError(f"{name} must have a last dimension K >= 1 (the bits), got shape {tuple(codes.shape)}")
    codes = _as_native(name, codes)
    _check_binary_values(name, codes)
    return codes


def pack_codes(name: str, codes, *, out: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """:func:`pack_bits` with errors naming the caller's argument ``name`` (index, metrics)."""
    codes = check_codes(name, codes)
    shape = (*codes.shape[:-1], packed_width(codes.shape[-1]))
    out = output_buffer(out, shape=shape, dtype=torch.uint8, device=codes.device, inputs={name: codes})
    chosen = resolve_backend(backend, PACK_BACKENDS, codes.device)
    if chosen == "torch":
        return out.copy_(pack_bits_reference(codes))
    torch.ops.hashkern.pack_bits(codes.contiguous(), out)
    return out


def pack_bits(codes: torch.Tensor, *, out: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """Pack binary codes into bytes.

    Args:
        codes: ``[..., K]``, K >= 1: ±1 or {0, 1} values of any real dtype (uint16/32/64 and
            float8 included), or bool. Any strides (non-contiguous input is copied).
        out: optional ``[..., ceil(K/8)]`` uint8 contiguous buffer to write into (not overlapping ``codes``).
        backend: ``"auto" | "cuda" | "cpu" | "torch"``.

    Returns:
        ``[..., ceil(K/8)]`` uint8; bit ``j`` -> byte ``j // 8``, bit ``j % 8``; +1 / 1 / True is a 1 bit.
    """
    return pack_codes("codes", codes, out=out, backend=backend)


def unpack_bits(packed: torch.Tensor, nbits: int, *, dtype: torch.dtype = torch.float32, signed: bool = True,
                out: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """Unpack bytes into codes: the exact inverse of :func:`pack_bits`.

    Args:
        packed: ``[..., ceil(nbits/8)]`` uint8.
        nbits: K, the number of code bits per row (>= 1).
        dtype: output dtype; bool gives True/False.
        signed: 1 bits become +1 and 0 bits -1 (the default); ``False`` gives {0, 1}.
        out: optional ``[..., nbits]`` contiguous buffer of ``dtype`` (not overlapping ``packed``).
        backend: ``"auto" | "cuda" | "cpu" | "torch"``.

    Returns:
        ``[..., nbits]`` of ``dtype``.
    """
    check_tensor("packed", packed, dtypes=(torch.uint8,))
    nbits = check_int("nbits", nbits, low=1)
    if packed.dim() < 1 or packed.shape[-1] != packed_width(nbits):
        raise ValueError(
            f"packed must have {packed_width(nbits)} bytes per row for nbits={nbits}, got shape {tuple(packed.shape)}"
        )
    if not isinstance(dtype, torch.dtype) or dtype.is_complex or not _has_element_values(dtype):
        raise TypeError(f"dtype must be a real or bool torch.dtype, got {dtype!r}")
    if not isinstance(signed, bool):
        raise TypeError(f"signed must be True or False, got {signed!r}")
    if packed.device.type == "meta":
        raise ValueError("packed is a meta tensor (no data): there are no bits to unpack")
    signed = signed and dtype != torch.bool
    if signed and not dtype.is_signed:
        raise ValueError(f"signed=True gives -1 values, which dtype={dtype} cannot hold; pass signed=False")
    shape = (*packed.shape[:-1], nbits)
    out = output_buffer(out, shape=shape, dtype=dtype, device=packed.device, inputs={"packed": packed})
    if dtype not in _NATIVE:  # uint16/32/64, float8: unpack into a dtype the kernels write, then convert exactly
        native = torch.float32 if dtype.is_floating_point else torch.uint8
        return out.copy_(unpack_bits(packed, nbits, dtype=native, signed=signed, backend=backend))
    chosen = resolve_backend(backend, UNPACK_BACKENDS, packed.device)
    if chosen == "torch":
        return out.copy_(unpack_bits_reference(packed, nbits, dtype, signed))
    torch.ops.hashkern.unpack_bits(packed.contiguous(), nbits, signed, out)
    return out

