"""Patch-to-patch similarity aggregation (WCH): ``s[n, m] = mean_i max_j cos(x1[n, i], x2[m, j])``.

A batched all-pairs MaxSim (ColBERT late interaction) over ViT patch tokens, computed as one GEMM
``[b1 P, D] x [D, b2 Q]`` whose tiles are reduced at once to a max (or smooth max) per (patch, image),
so that ``[b1, b2, P, Q]`` is never stored. Backends: ``triton`` (CUDA, or CPU tensors under
``TRITON_INTERPRET=1``; cost model in benchmarks/notes/patch_similarity.md) and ``torch`` (the same GEMM form with
the BLAS, chunked over images so memory stays bounded; the CPU default).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from hashkern._dispatch import Support, resolve_backend
from hashkern._validation import check_bool, check_positive, check_same_device, check_tensor
from hashkern.ops._numerics import unit_rows
from hashkern.ops.patchsim.torch_gemm import empty_stats, patch_similarity_torch_bwd, patch_similarity_torch_fwd
from hashkern.ops.patchsim.reference import REDUCTIONS, patch_similarity_reference

__all__ = ["PatchSimilarityFunction", "patch_similarity", "patch_similarity_reference", "REDUCTIONS"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Triton: every float dtype, any size (1-D grids, int64 offsets); bf16/fp16 tensor cores need sm_80+.
_SUPPORT = {"triton": Support(min_capability=(8, 0))}


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


@_patch_similarity_fwd_op.register_fake
def _(u1, u2, mask1, mask2, inv_count, reduce, temperature, backend):
    acc = torch.float64 if u1.dtype == torch.float64 else torch.float32
    b1, P, b2 = u1.shape[0], u1.shape[1], u2.shape[0]
    return (u1.new_empty((b1, b2), dtype=acc), *empty_stats(reduce, b2, b1 * P, acc, u1.device))


@torch.library.custom_op("hashkern::patch_similarity_bwd", mutates_args=())
def _patch_similarity_bwd_op(grad_s: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor,
                             mask1: Optional[torch.Tensor], mask2: Optional[torch.Tensor],
                             inv_count: torch.Tensor, aux_a: torch.Tensor, aux_b: torch.Tensor, reduce: str,
                             temperature: float, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_s [b1, b2] -> du1 [b1, P, D], du2 [b2, Q, D]."""
    return _impl(backend)[1](grad_s, u1, u2, mask1, mask2, inv_count, aux_a, aux_b, reduce, temperature)


@_patch_similarity_bwd_op.register_fake
def _(grad_s, u1, u2, mask1, mask2, inv_count, aux_a, aux_b, reduce, temperature, backend):
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


def _check_mask(name: str, mask, batch: int, patches: int, device: torch.device):
    if mask is None:
        return None
    check_tensor(name, mask, ndim=2, dtypes=(torch.bool,))
    if tuple(mask.shape) != (batch, patches):
        raise ValueError(f"{name} must have shape {(batch, patches)} (images, patches), got {tuple(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"{name} must be on {device} like the tokens, got {mask.device}")
    empty = (~mask.any(dim=1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"{name} has rows with no real patch (every patch masked) at images "
                         f"{empty[:8].tolist()}; each image needs at least one True entry")
    return mask.contiguous()


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """x / |x| along the last axis without overflow (``unit_rows``); half inputs are normalised in
    fp32 and rounded once."""
    wide = x if x.dtype in (torch.float32, torch.float64) else x.float()
    return unit_rows(wide).to(x.dtype)


def patch_similarity(x1: torch.Tensor, x2: torch.Tensor, normalize: bool = True, reduce: str = "maxmean",
                     mask1: torch.Tensor | None = None, mask2: torch.Tensor | None = None,
                     temperature: float = 0.1, backend: str = "auto") -> torch.Tensor:
    """All-pairs patch similarity of two batches of token sets.

    Args:
        x1: [b1, P, D] tokens (fp16, bf16, fp32 or fp64); x2: [b2, Q, D], same dtype and device.
        normalize: cosine similarity (L2-normalised tokens) when True, raw dot products otherwise.
        reduce: ``"maxmean"`` (``mean_i max_j``; ties send the gradient to the first ``j``) or
            ``"softmaxmean"`` (``mean_i sum_j softmax_j(sim / temperature) * sim``, a smooth max).
        mask1: [b1, P] bool, True for real patches (padded ones are left out of the mean);
            mask2: [b2, Q] bool (padded ones are left out of the max). Every row needs a True.
        temperature: > 0, used by ``softmaxmean``; below the smallest normal number of the compute dtype
            it acts as that number (the result is then the max, ties shared equally), above its inverse as
            that inverse (the result is then the mean).
        backend: ``"auto" | "triton" | "torch"``.
    Returns:
        s [b1, b2], float32 (float64 for float64 input): accumulation stays in fp32 for half inputs.
    Memory: O(b1 b2 P) saved for backward. fp32 input on CUDA multiplies on TF32 tensor cores exactly when
    torch's own matmuls would (``hashkern.ops._precision``; ~1e-3 relative error then).
    Deterministic: the same inputs give bitwise-identical results and gradients (fixed-order sums).
    """
    check_tensor("x1", x1, ndim=3, dtypes=_FLOATS)
    check_tensor("x2", x2, ndim=3, dtypes=_FLOATS)
    device = check_same_device(x1=x1, x2=x2)
    if x1.dtype != x2.dtype:
        raise TypeError(f"x1 and x2 must have the same dtype, got {x1.dtype} and {x2.dtype}")
    (b1, P, D), (b2, Q, D2) = x1.shape, x2.shape
    if D != D2:
        raise ValueError(f"x1 and x2 must have the same feature size D, got x1 [.., {D}] and x2 [.., {D2}]")
    for name, size in (("x1 batch b1", b1), ("x1 patches P", P), ("x2 batch b2", b2), ("x2 patches Q", Q),
                       ("feature size D", D)):
        if size < 1:
            raise ValueError(f"{name} must be >= 1, got shapes x1 {tuple(x1.shape)} and x2 {tuple(x2.shape)}")
    check_bool("normalize", normalize)
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    temperature = check_positive("temperature", temperature)
    mask1 = _check_mask("mask1", mask1, b1, P, device)
    mask2 = _check_mask("mask2", mask2, b2, Q, device)
    preference = ("triton", "torch") if device.type == "cuda" else ("torch", "triton")
    backend = resolve_backend(backend, "patch_similarity", device, preference, support=_SUPPORT)

    acc = torch.float64 if x1.dtype == torch.float64 else torch.float32
    if mask1 is None:
        inv_count = torch.full((b1,), 1.0 / P, dtype=acc, device=device)
    else:
        inv_count = 1.0 / mask1.sum(dim=1).to(acc)
    u1 = _unit_rows(x1) if normalize else x1
    u2 = _unit_rows(x2) if normalize else x2
    return PatchSimilarityFunction.apply(u1.contiguous(), u2.contiguous(), mask1, mask2, inv_count,
                                         reduce, temperature, backend)
