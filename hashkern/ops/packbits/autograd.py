"""Fake (meta) implementations of the compiled ``hashkern::pack_bits`` / ``unpack_bits`` (not differentiable)."""
from __future__ import annotations

from hashkern.ops._registration import register_fake


@register_fake("hashkern::pack_bits")
def _pack_bits_fake(codes, out):  # writes the caller-allocated out
    return None


@register_fake("hashkern::unpack_bits")
def _unpack_bits_fake(packed, nbits, signed, out):
    return None
