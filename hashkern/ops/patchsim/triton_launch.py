"""Launchers of the patch-similarity Triton kernels (``triton_kernels.py``): tiles, grids, glue.

One fixed tile set per (kernel, dtype) on CUDA, no autotuning: the same inputs give bitwise-identical
results in every process (reduction orders never depend on a timing run). ``cuda_tiles`` lists them and
``tests/ops/test_patchsim_compile.py`` compiles every one for sm_90 with the JIT's real specialisation.
CPU tensors (the interpreter) get small tiles: few programs, few loop trips. Every launch runs under
``on_device_of`` (tensors on ``cuda:1`` launch there). This module imports triton; import it lazily.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from hashkern.ops._device_guard import on_device_of
from hashkern.ops._precision import dot_precision
from hashkern.ops.patchsim import triton_kernels as kernels
from hashkern.ops.patchsim._common import (
    acc_dtype,
    argmax_csr_torch,
    empty_stats,
    inverse_temperature,
    mean_over_patches,
    row_coefficients,
    softmax_backward,
)

SPLIT = 1024         # rows of a dx2 segment one program sums; longer (hub) segments are split
CSR_WINDOW = 4096    # rows of x1 per counting-sort program
MAX_CSR_BINS = 4096  # larger Q (more patches than that) falls back to a torch sort for the CSR
DS_CHUNK_ELEMENTS = 1 << 25  # softmaxmean backward: dS entries per chunk on CUDA (<= 128 MiB in fp32)


def cuda_tiles(kind: str, dtype: torch.dtype) -> dict:
    """The tile constexprs, num_warps and num_stages of kernel ``kind`` for CUDA inputs of ``dtype``."""
    k = 32 if dtype == torch.float32 else 64  # 4-byte operands: half the K step, the same shared memory
    if dtype == torch.float64:  # for checking, not speed: small FMA tiles
        fwd = dss = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=1)
    else:  # the largest tiles ptxas keeps free of spills (128 x 128 spills in the epilogue; dS holds 4 gathers)
        fwd = dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=k, num_warps=8, num_stages=3)
        dss = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=k, num_warps=4, num_stages=3)
    return {"fwd": dict(fwd, GROUP_M=8), "softmax_weights": dss,
            "dx1": dict(BLOCK_M=64, BLOCK_D=128, num_warps=4, num_stages=2),
            "csr": dict(BLOCK_T=32, num_warps=4, num_stages=1),
            "dx2": dict(BLOCK_T=32, BLOCK_D=128, num_warps=4, num_stages=2)}[kind]


def _tiles(kind: str, u: torch.Tensor, D: int) -> dict:
    if u.is_cuda:
        return cuda_tiles(kind, u.dtype)
    block_d = max(16, min(128, triton.next_power_of_2(D)))  # few programs: ~1 ms each in the interpreter
    return {"fwd": dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=block_d, GROUP_M=2),
            "softmax_weights": dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=block_d),
            "dx1": dict(BLOCK_M=32, BLOCK_D=block_d), "csr": dict(BLOCK_T=16),
            "dx2": dict(BLOCK_T=16, BLOCK_D=block_d)}[kind]


def csr_bins(Q: int) -> int:
    """Histogram bins of the counting sort: keys 0..Q (Q = padded patch), a power of two."""
    return triton.next_power_of_2(Q + 1)


def csr_block(bins: int, block_t: int) -> int:
    """Rows per counting-sort step: the [BLOCK_T, BINS] one-hot stays at most 8192 entries (no spills)."""
    return max(2, min(block_t, 8192 // bins))


def images_per_program(b2: int, Q: int, block_n: int) -> int:
    """x2 images per forward program: at least 4 column chunks of work where there are that many columns,
    and the fewest columns wasted in the program's partial last chunk."""
    low = min(b2, max(1, -(-4 * block_n // Q)))
    waste = lambda n: -(-n * Q // block_n) * block_n / (n * Q)  # noqa: E731
    return min(range(low, min(b2, 4 * low) + 1), key=lambda n: (round(waste(n), 3), n))


def _mask_arg(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return like if mask is None else mask.reshape(-1).view(torch.int8)


def _inverse_temperature_arg(temperature: float, acc: torch.dtype, like: torch.Tensor) -> torch.Tensor:
    """1 / T as a one-element tensor of the accumulation dtype (exact for fp64 on the GPU and in the interpreter),
    finite even where T is below the dtype's smallest normal number."""
    return torch.full((1,), inverse_temperature(temperature, acc), dtype=acc, device=like.device)


def _precision(u: torch.Tensor) -> tuple:
    """(accumulator dtype, DOT_PRECISION); bf16 under the interpreter multiplies in fp32 (its bf16 tl.dot is wrong)."""
    dot = "upcast" if u.dtype == torch.bfloat16 and not u.is_cuda else dot_precision(u.dtype, u.is_cuda)
    return (tl.float64 if u.dtype == torch.float64 else tl.float32), dot


def patch_similarity_fwd(u1, u2, mask1, mask2, inv_count, reduce: str, temperature: float):
    """u1 [b1, P, D], u2 [b2, Q, D] -> s [b1, b2] (fp32; fp64 for fp64 input), aux_a, aux_b (``empty_stats``)."""
    (b1, P, D), (b2, Q, _) = u1.shape, u2.shape
    R1, acc = b1 * P, acc_dtype(u1.dtype)
    X1, X2 = u1.reshape(R1, D), u2.reshape(b2 * Q, D)
    aux_a, aux_b = empty_stats(reduce, b2, R1, acc, u1.device)
    # per-(image, patch) values: the max, or the smooth max that softmaxmean also saves for backward
    values = torch.empty(b2, R1, dtype=acc, device=u1.device) if reduce == "maxmean" else aux_b
    acc_tl, dot = _precision(u1)
    meta = _tiles("fwd", u1, D)
    images = images_per_program(b2, Q, meta["BLOCK_N"])
    grid = (triton.cdiv(R1, meta["BLOCK_M"]) * triton.cdiv(b2, images),)
    inv_t = _inverse_temperature_arg(temperature, acc, u1)
    with on_device_of(u1):
        kernels._patch_similarity_fwd_kernel[grid](
            X1, X2, _mask_arg(mask1, X1), _mask_arg(mask2, X1), values, aux_a, inv_t, R1, b2, Q, D, *X1.stride(),
            *X2.stride(), images, REDUCE_MAX=reduce == "maxmean", HAS_MASK1=mask1 is not None,
            HAS_MASK2=mask2 is not None, ACC=acc_tl, DOT_PRECISION=dot, **meta)
    return mean_over_patches(values, inv_count, mask1, b1, P), aux_a, aux_b


def argmax_csr(argmax: torch.Tensor, Q: int) -> tuple[torch.Tensor, torch.Tensor]:
    """argmax [b2, R1] int32 (keys 0..Q) -> order [b2, R1] int32 (row indices stably sorted by key within each
    image), offsets [b2, Q + 1] int32 (key j of image m occupies order[m, offsets[m, j]:offsets[m, j + 1]])."""
    b2, R1 = argmax.shape
    bins = csr_bins(Q)
    if bins > MAX_CSR_BINS:  # the one-hot histogram would not fit: a stable torch sort instead
        order, offsets = argmax_csr_torch(argmax, Q)
        order = (order % R1).to(torch.int32).view(b2, R1)
        return order, (offsets[:-1].view(b2, Q + 1) - torch.arange(b2, device=argmax.device)[:, None] * R1).int()
    meta = _tiles("csr", argmax, 0)
    meta["BLOCK_T"] = csr_block(bins, meta["BLOCK_T"])
    window = min(CSR_WINDOW, R1)
    n_windows = triton.cdiv(R1, window)
    counts = torch.empty(b2, n_windows, bins, dtype=torch.int32, device=argmax.device)
    with on_device_of(argmax):
        kernels._patch_similarity_csr_count_kernel[(b2 * n_windows,)](argmax, counts, R1, window, n_windows,
                                                                      BINS=bins, **meta)
        # exclusive scan over (key, window) inside each image: the start of each window's run of each key
        by_key = counts.transpose(1, 2).reshape(b2, -1)
        starts = (torch.cumsum(by_key, 1, dtype=torch.int32) - by_key).view(b2, bins, n_windows)
        starts = starts.transpose(1, 2).contiguous()
        order = torch.empty(b2, R1, dtype=torch.int32, device=argmax.device)
        kernels._patch_similarity_csr_place_kernel[(b2 * n_windows,)](argmax, starts, order, R1, window, n_windows,
                                                                      BINS=bins, **meta)
    return order, starts[:, 0, :Q + 1].contiguous()


def _extra_pieces(offsets: torch.Tensor, b2: int, Q: int, R1: int):
    """Work list of the segments' pieces after the first: (piece_seg [E], piece_start [E], first [b2 Q],
    count [b2 Q]); E = b2 * (R1 // SPLIT) bounds the total, unused entries have piece_seg = -1."""
    lengths = (offsets[:, 1:] - offsets[:, :-1]).reshape(-1)  # [b2 Q]
    count = (torch.clamp(lengths - 1, min=0) // SPLIT).to(torch.int32)
    first = (torch.cumsum(count, 0, dtype=torch.int32) - count)
    E = max(1, b2 * (R1 // SPLIT))
    e = torch.arange(E, dtype=torch.int32, device=offsets.device)
    seg = torch.searchsorted(first + count, e, right=True).to(torch.int32)  # the segment whose pieces hold e
    used = e < count.sum()
    seg = torch.where(used, seg, -1)
    safe = seg.clamp(min=0).long()
    k = e - first[safe] + 1  # piece index within its segment (>= 1)
    seg_start = offsets[:, :-1].reshape(-1)[safe]
    return seg, torch.where(used, seg_start + k * SPLIT, 0).to(torch.int32), first, count


def patch_similarity_bwd(grad_s, u1, u2, mask1, mask2, inv_count, aux_a, aux_b, reduce: str, temperature: float):
    """grad_s [b1, b2] -> du1 [b1, P, D], du2 [b2, Q, D] (dtypes of u1, u2)."""
    (b1, P, D), (b2, Q, _) = u1.shape, u2.shape
    R1, acc = b1 * P, acc_dtype(u1.dtype)
    X1, X2 = u1.reshape(R1, D), u2.reshape(b2 * Q, D)
    c = row_coefficients(grad_s, inv_count, mask1, P, acc)  # [b2, R1]
    acc_tl, dot = _precision(u1)
    if reduce != "maxmean":
        meta = _tiles("softmax_weights", u1, D)
        ds_dtype = u1.dtype if u1.is_cuda else acc  # half dS on CUDA: the two GEMMs run on tensor cores
        inv_t = _inverse_temperature_arg(temperature, acc, u1)

        def weights(r0, r1, m0, m1):
            ds = torch.empty(r1 - r0, (m1 - m0) * Q, dtype=ds_dtype, device=u1.device)
            grid = (triton.cdiv(r1 - r0, meta["BLOCK_M"]) * triton.cdiv((m1 - m0) * Q, meta["BLOCK_N"]),)
            with on_device_of(u1):
                kernels._patch_similarity_softmax_weights_kernel[grid](
                    X1, X2, _mask_arg(mask2, X1), c, aux_a, aux_b, ds, inv_t, r0, r1, m0 * Q, m1 * Q, R1, b2, Q,
                    D, *X1.stride(), *X2.stride(),
                    HAS_MASK2=mask2 is not None, ACC=acc_tl, DOT_PRECISION=dot, **meta)
            return ds

        X1g, X2g = (X1, X2) if u1.is_cuda else (X1.to(acc), X2.to(acc))
        du1, du2 = softmax_backward(X1g, X2g, b1, P, b2, Q, weights,
                                    DS_CHUNK_ELEMENTS if u1.is_cuda else 1 << 16)
        return du1.view(b1, P, D).to(u1.dtype), du2.view(b2, Q, D).to(u2.dtype)
    du1 = torch.empty(b1, P, D, dtype=u1.dtype, device=u1.device)
    du2 = torch.empty(b2, Q, D, dtype=u2.dtype, device=u1.device)
    meta = _tiles("dx1", u1, D)
    with on_device_of(u1):
        kernels._patch_similarity_dx1_kernel[(triton.cdiv(R1, meta["BLOCK_M"]) * triton.cdiv(D, meta["BLOCK_D"]),)](
            X2, aux_a, c, du1, R1, b2, Q, D, *X2.stride(), ACC=acc_tl, **meta)
    order, offsets = argmax_csr(aux_a, Q)
    piece_seg, piece_start, first, count = _extra_pieces(offsets, b2, Q, R1)
    partial = torch.empty(piece_seg.numel(), D, dtype=acc, device=u1.device)
    meta = _tiles("dx2", u1, D)
    d_tiles = triton.cdiv(D, meta["BLOCK_D"])
    with on_device_of(u1):
        kernels._patch_similarity_dx2_pieces_kernel[(piece_seg.numel() * d_tiles,)](
            X1, c, order, piece_seg, piece_start, offsets, partial, R1, Q, D, *X1.stride(), SPLIT,
            ACC=acc_tl, **meta)
        kernels._patch_similarity_dx2_kernel[(b2 * Q * d_tiles,)](
            X1, c, order, offsets, first, count, partial, du2, R1, Q, D, *X1.stride(), SPLIT, ACC=acc_tl, **meta)
    return du1, du2
