"""Launchers of the patch-similarity Triton kernels: tile choices, autotuning on CUDA, the CSR inverse.

CPU tensors (interpreter): one tile set, as few programs and loop trips as possible. CUDA fp64:
one small FMA tile set (fp64 is for checking). CUDA fp16/bf16/fp32: ``triton.autotune`` over
the candidate tiles below, keyed on the shapes (and, by Triton, the dtypes); every candidate is
compiled for sm_90 by ``tests/ops/test_patchsim.py`` so none can abort the process while tuning.
All kernels only write their outputs, so re-running them while tuning is harmless.

Not yet measured on a GPU. Expected cost at b = 256, P = Q = 196, D = 768, bf16: the forward
is one tensor-core pass over b² P Q D (~3.9 TFLOP, padded to 256 x 256 patches per pair by
64-wide tiles); dx1 and dx2 are gathers of b² P rows of D (~20 GB of L2/HBM reads each), plus one
sort of b² P int32 keys. If the 15 ms target is missed, first candidates: flatten the patch axes
across images (no padding waste), and order the dx2 gather by n for L2 reuse.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from hashkern.ops.patchsim.triton import (
    _patch_similarity_bwd_dx1_kernel,
    _patch_similarity_bwd_dx2_gather_kernel,
    _patch_similarity_bwd_dx2_kernel,
    _patch_similarity_fwd_kernel,
)

# candidate tiles per kernel on CUDA: (tile constexprs, num_warps, num_stages)
CUDA_TILES = {
    "fwd": [(dict(BLOCK_P=p, BLOCK_Q=q, BLOCK_K=k), w, s) for p, q, k, w, s in
            [(64, 64, 64, 4, 3), (128, 64, 64, 8, 3), (64, 128, 64, 8, 3), (64, 64, 32, 4, 4), (32, 64, 64, 4, 3)]],
    "dx1_max": [(dict(BLOCK_P=p, BLOCK_D=d, BLOCK_Q=16, BLOCK_K=16), w, 1) for p, d, w in
                [(32, 128, 4), (64, 64, 4), (16, 256, 4)]],
    "dx1_soft": [(dict(BLOCK_P=p, BLOCK_Q=q, BLOCK_K=k, BLOCK_D=d), w, s) for p, q, k, d, w, s in
                 [(64, 64, 32, 64, 8, 3), (64, 64, 32, 64, 4, 2)]],
    "dx2_gather": [(dict(BLOCK_T=t, BLOCK_D=d), w, 1) for t, d, w in [(16, 256, 4), (64, 64, 4), (16, 128, 4)]],
    "dx2_soft": [(dict(BLOCK_P=p, BLOCK_Q=q, BLOCK_K=k, BLOCK_D=d), w, s) for p, q, k, d, w, s in
                 [(64, 64, 64, 64, 4, 3), (64, 32, 64, 64, 4, 3)]],
}
# fp32 (tf32) tiles hold twice the bytes: shorter K steps and fewer stages keep ptxas from spilling
CUDA_TILES_FP32 = dict(
    CUDA_TILES,
    fwd=[(dict(BLOCK_P=p, BLOCK_Q=q, BLOCK_K=k), w, s) for p, q, k, w, s in
         [(64, 64, 32, 8, 3), (64, 64, 32, 4, 2), (64, 64, 16, 4, 3), (128, 64, 32, 8, 2)]],
    dx1_soft=[(dict(BLOCK_P=p, BLOCK_Q=q, BLOCK_K=k, BLOCK_D=d), w, s) for p, q, k, d, w, s in
              [(64, 64, 32, 64, 8, 2), (32, 64, 32, 64, 4, 2)]],
    dx2_soft=[(dict(BLOCK_P=p, BLOCK_Q=q, BLOCK_K=k, BLOCK_D=d), w, s) for p, q, k, d, w, s in
              [(64, 64, 32, 64, 8, 2), (64, 32, 32, 64, 4, 2)]],
)
_KERNELS = {"fwd": _patch_similarity_fwd_kernel, "dx1_max": _patch_similarity_bwd_dx1_kernel,
            "dx1_soft": _patch_similarity_bwd_dx1_kernel, "dx2_gather": _patch_similarity_bwd_dx2_gather_kernel,
            "dx2_soft": _patch_similarity_bwd_dx2_kernel}
_KEYS = ["P", "Q", "D", "REDUCE_MAX", "HAS_MASK1", "HAS_MASK2"]
_tuned: dict = {}


def precision(u1: torch.Tensor) -> tuple:
    """(accumulator dtype, DOT_PRECISION): tf32 tensor cores for fp32 on CUDA, FMA for fp64."""
    acc = tl.float64 if u1.dtype == torch.float64 else tl.float32
    dot = {torch.float64: "fma", torch.float32: "tf32" if u1.is_cuda else "ieee"}.get(u1.dtype, "ieee")
    return acc, dot


def tiles(kind: str, u1: torch.Tensor, P: int, Q: int, D: int) -> list:
    """Candidate (tile constexprs, num_warps, num_stages) for a kernel; one entry unless CUDA fp16/bf16/fp32."""
    if not u1.is_cuda:
        pow2 = triton.next_power_of_2
        block_d = max(16, min(256, pow2(D)))
        meta = dict(BLOCK_P=max(16, min(64, pow2(P))), BLOCK_Q=max(16, min(64, pow2(Q))), BLOCK_K=block_d,
                    BLOCK_D=block_d, BLOCK_T=16)
        return [(meta, None, None)]
    if u1.dtype == torch.float64:  # fp64 is for checking, not speed: small FMA tiles
        return [(dict(BLOCK_P=16, BLOCK_Q=16, BLOCK_K=16, BLOCK_D=16, BLOCK_T=16), 4, 1)]
    return (CUDA_TILES_FP32 if u1.dtype == torch.float32 else CUDA_TILES)[kind]


def _launch(kind: str, u1: torch.Tensor, shape: tuple, grid, args: tuple, kwargs: dict) -> None:
    """Run kernel ``kind`` with grid(meta) -> tuple; autotuned when there is more than one candidate."""
    candidates = tiles(kind, u1, *shape)
    kernel = _KERNELS[kind]
    names = set(kernel.arg_names)
    if len(candidates) == 1:
        meta, warps, stages = candidates[0]
        meta = {k: v for k, v in meta.items() if k in names}
        launch = {} if warps is None else dict(num_warps=warps, num_stages=stages)
        kernel[grid(meta)](*args, **kwargs, **meta, **launch)
        return
    tuned_key = (kind, u1.dtype == torch.float32)
    if tuned_key not in _tuned:
        configs = [triton.Config(meta, num_warps=w, num_stages=s) for meta, w, s in candidates]
        _tuned[tuned_key] = triton.autotune(configs=configs, key=[k for k in _KEYS if k in names])(kernel)
    _tuned[tuned_key][grid](*args, **kwargs)


def _mask_arg(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return like if mask is None else mask.contiguous().view(torch.int8)


def patch_similarity_fwd(u1, u2, mask1, mask2, inv_count, reduce: str, temperature: float):
    """u1 [b1, P, D], u2 [b2, Q, D] (normalised or raw), masks bool or None, inv_count [b1]
    -> s [b1, b2] (fp32; fp64 for fp64 input), aux_a, aux_b (layouts as in the chunked path)."""
    b1, P, D = u1.shape
    b2, Q, _ = u2.shape
    acc, dot = precision(u1)
    acc_dtype = torch.float64 if u1.dtype == torch.float64 else torch.float32
    s = torch.empty(b1, b2, dtype=acc_dtype, device=u1.device)
    reduce_max = reduce == "maxmean"
    if reduce_max:
        aux_a = torch.empty(b2, b1, P, dtype=torch.int32, device=u1.device)
        aux_b = torch.empty(0, dtype=acc_dtype, device=u1.device)
    else:
        aux_a = torch.empty(b1, b2, P, dtype=acc_dtype, device=u1.device)
        aux_b = torch.empty(b1, b2, P, dtype=acc_dtype, device=u1.device)
    args = (u1, u2, _mask_arg(mask1, u1), _mask_arg(mask2, u1), inv_count, s, aux_a, aux_a if reduce_max else aux_b,
            b1, b2, P, Q, D, *u1.stride(), *u2.stride(), 1.0 / temperature)
    flags = dict(REDUCE_MAX=reduce_max, HAS_MASK1=mask1 is not None, HAS_MASK2=mask2 is not None,
                 ACC=acc, DOT_PRECISION=dot, GROUP=8 if u1.is_cuda else 2)
    _launch("fwd", u1, (P, Q, D), lambda meta: (b1 * b2,), args, flags)
    return s, aux_a, aux_b


def _argmax_csr(argmax: torch.Tensor, Q: int) -> tuple[torch.Tensor, torch.Tensor]:
    """argmax [b2, b1, P] (Q at padded patches) -> order [b2, b1 * P] int32, offsets [b2, Q + 1] int32.

    A stable sort keeps each segment in (n, i) order, so the gradient sums are deterministic;
    padded patches (key Q) sort past the last segment.
    """
    keys = argmax.view(argmax.shape[0], -1)
    sorted_keys, order = torch.sort(keys, dim=1, stable=True)
    bounds = torch.arange(Q + 1, dtype=keys.dtype, device=keys.device).expand(keys.shape[0], Q + 1).contiguous()
    offsets = torch.searchsorted(sorted_keys, bounds).to(torch.int32)
    return order.to(torch.int32), offsets


def patch_similarity_bwd(grad_s, u1, u2, mask1, mask2, inv_count, aux_a, aux_b, reduce: str, temperature: float):
    """grad_s [b1, b2] -> du1 [b1, P, D], du2 [b2, Q, D] (dtypes of u1, u2)."""
    b1, P, D = u1.shape
    b2, Q, _ = u2.shape
    acc, dot = precision(u1)
    grad_s = grad_s.contiguous()
    du1 = torch.empty_like(u1, memory_format=torch.contiguous_format)
    du2 = torch.empty_like(u2, memory_format=torch.contiguous_format)
    masks = (_mask_arg(mask1, u1), _mask_arg(mask2, u1))
    shapes = (b1, b2, P, Q, D, *u1.stride(), *u2.stride(), 1.0 / temperature)
    flags = dict(HAS_MASK1=mask1 is not None, HAS_MASK2=mask2 is not None, ACC=acc, DOT_PRECISION=dot)
    dx1_grid = lambda meta: (triton.cdiv(D, meta["BLOCK_D"]), triton.cdiv(P, meta["BLOCK_P"]), b1)  # noqa: E731
    if reduce == "maxmean":
        # dx1: gather x2 at the saved argmax; dx2: gather x1 through the argmax sorted by j
        _launch("dx1_max", u1, (P, Q, D), dx1_grid,
                (grad_s, u1, u2, *masks, inv_count, aux_a, aux_a, du1, *shapes), dict(flags, REDUCE_MAX=True))
        order, offsets = _argmax_csr(aux_a, Q)
        _launch("dx2_gather", u1, (P, Q, D), lambda meta: (triton.cdiv(D, meta["BLOCK_D"]), Q, b2),
                (grad_s, u1, inv_count, order, offsets, du2, b1, b2, P, Q, D, *u1.stride()), dict(ACC=acc))
        return du1, du2
    _launch("dx1_soft", u1, (P, Q, D), dx1_grid,
            (grad_s, u1, u2, *masks, inv_count, aux_a, aux_b, du1, *shapes), dict(flags, REDUCE_MAX=False))
    _launch("dx2_soft", u1, (P, Q, D), lambda meta: (triton.cdiv(D, meta["BLOCK_D"]), triton.cdiv(Q, meta["BLOCK_Q"]), b2),
            (grad_s, u1, u2, *masks, inv_count, aux_a, aux_b, du2, *shapes), flags)
    return du1, du2
