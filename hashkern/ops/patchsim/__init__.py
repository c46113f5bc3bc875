"""Patch-to-patch similarity aggregation (WCH): ``s[n, m] = mean_i max_j cos(x1[n, i], x2[m, j])``.

A batched all-pairs MaxSim (ColBERT late interaction) over ViT patch tokens, computed as one GEMM
``[b1 P, D] x [D, b2 Q]`` whose tiles are reduced at once to a max (or smooth max) per (patch, image),
so that ``[b1, b2, P, Q]`` is never stored. Backends: ``triton`` (CUDA, or CPU tensors under
``TRITON_INTERPRET=1``; cost model in ``benchmarks/notes/patchsim.md``), ``torch`` (the same GEMM form with
the BLAS, chunked over images so memory stays bounded). ``backend="auto"`` with ``maxmean`` runs
``hashkern.maxsim(..., reduce="mean", normalize=normalize)``, which shares these kernels and adds a
register-tiled C++ kernel, its choice on the CPU.
"""
from __future__ import annotations

import torch

from hashkern._dispatch import AutoVia, OpBackends, Support, declare, resolve_backend
from hashkern._validation import FLOAT_DTYPES, check_bool, check_positive, check_same_device, check_tensor
from hashkern.ops._numerics import unit_tokens
from hashkern.ops.patchsim._common import acc_dtype
from hashkern.ops.patchsim.autograd import PatchSimilarityFunction
from hashkern.ops.patchsim.reference import REDUCTIONS, patch_similarity_reference

__all__ = ["PatchSimilarityFunction", "patch_similarity", "patch_similarity_reference", "REDUCTIONS", "BACKENDS"]

# Triton first on CUDA, the BLAS (torch) first on the CPU. Triton: every float dtype, any size
# (1-D grids, int64 offsets); bf16/fp16 tensor cores need sm_80+. Both backends are deterministic.
# backend="auto" with reduce="maxmean" is hashkern.maxsim's own choice (its C++ kernel on the CPU).
BACKENDS = declare(OpBackends("patch_similarity", preference=("torch", "triton"),
                              preference_by_device={"cuda": ("triton", "torch")},
                              support={"triton": Support(min_capability=(8, 0))},
                              auto_via=AutoVia("reduce", ("maxmean",), "maxsim", default="maxmean")))


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


_unit_rows = unit_tokens  # x / |x| along the last axis without overflow, rounded once to x's dtype


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
        backend: ``"auto" | "triton" | "torch"``. ``auto`` with ``maxmean`` is ``hashkern.maxsim(x1, x2, mask1,
            mask2, reduce="mean", normalize=normalize)``: MaxSim's C++ kernel on the CPU, these Triton kernels on
            CUDA.
    Returns:
        s [b1, b2] in the accumulation dtype (``ops._numerics.at_least_float32``): float64 for float64
        input, else float32.
    Memory: O(b1 b2 P) saved for backward. fp32 input on CUDA multiplies on TF32 tensor cores exactly when
    torch's own matmuls would (``hashkern.ops._precision``; ~1e-3 relative error then).
    Deterministic: the same inputs give bitwise-identical results and gradients (fixed-order sums).
    """
    check_tensor("x1", x1, ndim=3, dtypes=FLOAT_DTYPES)
    check_tensor("x2", x2, ndim=3, dtypes=FLOAT_DTYPES)
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
    if backend == "auto" and reduce in BACKENDS.auto_via.values:  # MaxSim's mean of cosines: its kernels and choice
        from hashkern.ops.maxsim import maxsim
        return maxsim(x1, x2, mask1, mask2, reduce="mean", normalize=normalize)
    backend = resolve_backend(backend, BACKENDS, device)

    acc = acc_dtype(x1.dtype)
    if mask1 is None:
        inv_count = torch.full((b1,), 1.0 / P, dtype=acc, device=device)
    else:
        inv_count = 1.0 / mask1.sum(dim=1).to(acc)
    u1 = _unit_rows(x1) if normalize else x1
    u2 = _unit_rows(x2) if normalize else x2
    return PatchSimilarityFunction.apply(u1.contiguous(), u2.contiguous(), mask1, mask2, inv_count,
                                         reduce, temperature, backend)
