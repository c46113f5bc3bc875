"""Fake (meta) implementations of the compiled search ops (not differentiable): they write caller-allocated outputs."""
from __future__ import annotations

from hashkern.ops._registration import register_fake


@register_fake("hashkern::hamming_topk")
def _hamming_topk_fake(q_packed, db_packed, k, dist, idx):
    return None


@register_fake("hashkern::hamming_radius_count")
def _hamming_radius_count_fake(q_packed, db_packed, r, counts):
    return None


@register_fake("hashkern::hamming_radius_fill")
def _hamming_radius_fill_fake(q_packed, db_packed, r, offsets, idx, dist):
    return None
