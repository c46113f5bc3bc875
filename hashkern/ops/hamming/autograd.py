"""Fake (meta) implementation of the compiled ``hashkern::hamming_distance`` (not differentiable)."""
from __future__ import annotations

from hashkern.ops._registration import register_fake


@register_fake("hashkern::hamming_distance")
def _hamming_distance_fake(a, b, out):  # writes the caller-allocated out
    return None
