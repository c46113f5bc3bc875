"""Custom ops (``hashkern::patch_similarity_fwd`` / ``_bwd``), their fakes, and the autograd Function.

The ops take prepared tokens (unit rows when normalising) and an already resolved ``backend``
(``"triton"`` or ``"torch"``); the Triton launchers are imported only when that backend runs.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from hashkern.ops._registration import register_fake
from hashkern.ops.patchsim._common import acc_dtype, empty_stats
from hashkern.ops.patchsim.torch_impl import patch_similarity_torch_bwd, patch_similarity_torch_fwd


def _impl(backend: str):
    if backend == "triton":
        from hashkern.ops.patchsim import triton_launch as kernels  # lazy: the package imports without triton
        return kernels.patch_similarity_fwd, kernels.patch_similarity_bwd
    return patch_similarity_torch_fwd, patch_similarity_torch_bwd


@torch.library.custom_op("hashkern::patch_similarity_fwd", mutates_args=())
def _patch_similarity_fwd_op(u1: torch.Tensor, u2: torch.Tensor, mask1: Optional[torch.Tensor],
                             mask2: Optional[torch.Tensor], inv_count: torch.Tensor, reduce: str,
                             temperature: float, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> s [b1, b2], aux_a (argmax int32 [b2, b1 P] | row max and log-sum [2, b2, b1 P]), aux_b ([0] | smooth
    max [b2, b1 P]): statistics per (x2 image, x1 patch), one contiguous row per x2 image."""
    return _impl(backend)[0](u1, u2, mask1, mask2, inv_count, reduce, temperature)


@register_fake("hashkern::patch_similarity_fwd")
def _patch_similarity_fwd_fake(u1, u2, mask1, mask2, inv_count, reduce, temperature, backend):
    acc = acc_dtype(u1.dtype)
    b1, P, b2 = u1.shape[0], u1.shape[1], u2.shape[0]
    return (u1.new_empty((b1, b2), dtype=acc), *empty_stats(reduce, b2, b1 * P, acc, u1.device))


@torch.library.custom_op("hashkern::patch_similarity_bwd", mutates_args=())
def _patch_similarity_bwd_op(grad_s: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor,
                             mask1: Optional[torch.Tensor], mask2: Optional[torch.Tensor],
                             inv_count: torch.Tensor, aux_a: torch.Tensor, aux_b: torch.Tensor, reduce: str,
                             temperature: float, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_s [b1, b2] -> du1 [b1, P, D], du2 [b2, Q, D]."""
    return _impl(backend)[1](grad_s, u1, u2, mask1, mask2, inv_count, aux_a, aux_b, reduce, temperature)


@register_fake("hashkern::patch_similarity_bwd")
def _patch_similarity_bwd_fake(grad_s, u1, u2, mask1, mask2, inv_count, aux_a, aux_b, reduce, temperature, backend):
    return torch.empty_like(u1), torch.empty_like(u2)


class PatchSimilarityFunction(torch.autograd.Function):
    """Autograd of the aggregation on prepared tokens u1 [b1, P, D], u2 [b2, Q, D] -> s [b1, b2]."""

    @staticmethod
    def forward(ctx, u1, u2, mask1, mask2, inv_count, reduce, temperature, backend):
        s, aux_a, aux_b = torch.ops.hashkern.patch_similarity_fwd(
            u1, u2, mask1, mask2, inv_count, reduce, temperature, backend)
        ctx.save_for_backward(u1, u2, mask1, mask2, inv_count, aux_a, aux_b)
        ctx.config = (reduce, temperature, backend)
        return s

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_s):
        u1, u2, mask1, mask2, inv_count, aux_a, aux_b = ctx.saved_tensors
        du1, du2 = torch.ops.hashkern.patch_similarity_bwd(
            grad_s, u1, u2, mask1, mask2, inv_count, aux_a, aux_b, *ctx.config)
        return du1, du2, None, None, None, None, None, None
