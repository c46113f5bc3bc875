"""Triton GEMM kernels of patch similarity: the forward with a segmented max epilogue, and softmaxmean's dS.

The patches of all images are rows of ``X1 [R1 = b1 P, D]`` and ``X2 [R2 = b2 Q, D]``; ``sim = X1 X2ᵀ``
is one GEMM. A forward program owns a tile of ``BLOCK_M`` rows (any images of x1: no padding of P) and a
run of ``IMAGES`` whole x2 images, whose ``IMAGES Q`` columns it walks in ``BLOCK_N``-wide chunks (Q is not
padded either, only the program's last chunk is partial). Each chunk is a ``tl.dot`` tile over D
(tensor cores for bf16/fp16, TF32 for fp32 by ``hashkern.ops._precision``, FMA for fp64); its epilogue
reduces every x2 image the chunk touches (``<= BLOCK_N / Q + 2`` segments) to a per-row max and first
argmax (or the online-softmax triple), merged with the running value of the image open from the previous
chunk, and stored once the image's last column is seen: ``[b2, R1]`` per-(image, patch) statistics. The
mean over P (and the masks of x1) is a cheap ``[b2, b1, P]`` sum outside. Programs are ordered in groups of
``GROUP_M`` row tiles so that concurrent ones share x2 columns and x1 rows in L2. No atomics: every
output element is written by one program.

Cost model (nothing here is measured on a GPU; H100 SXM: 989 dense bf16 TFLOP/s, 3.35 TB/s HBM, 50 MB
L2 at ~6 TB/s; H200: the same compute, 4.8 TB/s HBM, 60 MB L2; a Triton GEMM reaches ~60 % of peak):

* forward: ``2 R1 R2 D`` FLOP. The CUDA tile is 128 x 64 x 64 (8 warps, 3 stages, 72 KiB shared memory;
  128 x 128 spills in the epilogue), so each chunk loads ``(128 + 64) D`` operands from L2 for
  ``2 128 64 D`` FLOP: 43 FLOP/byte in bf16, an L2 ceiling of ~260 TFLOP/s, below the tensor cores'
  ~590. The epilogue adds ~6 CUDA-core ops per similarity and segment (2 segments per 64-wide chunk
  at Q = 196, up to 3 at Q = 49). HBM traffic is small (X1, X2 and ``2 b2 R1`` words of statistics).
* maxmean backward: dx1 gathers ``b2 R1`` rows of x2 (``2 D`` bytes each, L2 hits: all programs walk
  the x2 images in the same order); the counting-sort CSR reads the int32 argmax twice; dx2 gathers
  ``b2 R1`` rows of x1 in segments of at most ``SPLIT`` rows ("hub" patches chosen by more rows are
  split across programs, partial sums added in a fixed order). Extra memory ``12 b2 R1`` bytes (argmax,
  coefficients, CSR order) plus at most ``4 b2 R1 D / SPLIT`` bytes of partial sums.
* softmaxmean backward: ``dS = c p (1 + (sim - f) / T)`` from a GEMM kernel (sim recomputed once, over
  all of D) in column chunks of whole images, then dx1 += dS X2 and dx2 = dSᵀ X1 as cuBLAS GEMMs:
  3 GEMMs of the forward's size in all.

Predictions, maxmean fwd + bwd in bf16 on an H100 (H200 ~10 % faster on the memory-bound parts):

* b = 256, P = Q = 196, D = 768: forward 3.9 TFLOP at the L2 ceiling ~15 ms, epilogue partly hidden;
  dx1 and dx2 move ~19.7 GB of gathered rows each, ~3 ms each; CSR ~0.3 ms: **~20-24 ms, the 12 ms
  goal missed by ~2x**. Extra memory ~0.2 GiB (within 0.5 GiB).
* b = 512, P = Q = 49, D = 512: forward 0.64 TFLOP, ~2.5 ms + epilogue ~1 ms; gathers 13 GB each,
  ~2 ms each: **~7-8 ms against the 4 ms goal**.

What would close the gap, in order: the forward's GEMM on cuBLAS in column chunks (~700 TFLOP/s) with
this epilogue as a separate pass over a bf16 chunk (2 bytes per similarity written and read: ~3 ms at
the first size) or a register-lean 128 x 128 epilogue; at Q = 49, dx1 and dx2 as dense one-hot GEMMs
(``2 R1 R2 D`` FLOP on tensor cores, ~1 ms each) instead of gathers.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _mm(a, b, acc, DOT_PRECISION: tl.constexpr):
    """acc + a @ b: tl.dot (tensor cores, or IEEE fp32), or ("fma") a broadcast product for fp64, whose
    MMA lowering sm_90 rejects ("fp64 don't support largeK MMA")."""
    if DOT_PRECISION == "fma":
        return acc + tl.sum(a[:, :, None].to(acc.dtype) * b[None, :, :].to(acc.dtype), axis=1)
    elif DOT_PRECISION == "upcast":
        # the interpreter's bf16 tl.dot is wrong (triton 3.8): bf16 widened to fp32 is exact in TF32, so this is
        # the same product (and still a tensor-core dot when compiled)
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="tf32")
    else:
        return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


@triton.jit
def _sim_tile(x1_ptr, x2_ptr, rows, cols, row_ok, col_ok, D, s1r, s1d, s2r, s2d, ACC: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """X1[rows] . X2[cols] over all D -> [BLOCK_M, BLOCK_N] in ACC; rows/cols are int64 (offsets may pass 2^31)."""
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    offs_k = tl.arange(0, BLOCK_K)
    for k0 in range(0, D, BLOCK_K):
        k = k0 + offs_k
        a = tl.load(x1_ptr + rows[:, None] * s1r + k[None, :] * s1d,
                    mask=row_ok[:, None] & (k[None, :] < D), other=0.0)  # [BLOCK_M, BLOCK_K]
        b = tl.load(x2_ptr + cols[None, :] * s2r + k[:, None] * s2d,
                    mask=col_ok[None, :] & (k[:, None] < D), other=0.0)  # [BLOCK_K, BLOCK_N]
        acc = _mm(a, b, acc, DOT_PRECISION)
    return acc


@triton.jit
def _sim_chunk(x1_ptr, x2_ptr, mask2_ptr, rows, cols, row_ok, col_end, D, s1r, s1d, s2r, s2d,
               HAS_MASK2: tl.constexpr, ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """The similarity tile of columns cols (< col_end) and which of them are real x2 patches."""
    in_range = cols < col_end
    col_ok = in_range
    if HAS_MASK2:
        col_ok = col_ok & (tl.load(mask2_ptr + cols, mask=in_range, other=0) != 0)
    sim = _sim_tile(x1_ptr, x2_ptr, rows, cols, row_ok, in_range, D, s1r, s1d, s2r, s2d,
                    ACC, BLOCK_M, BLOCK_N, BLOCK_K, DOT_PRECISION)
    return sim, col_ok


@triton.jit
def _patch_similarity_fwd_kernel(
    x1_ptr, x2_ptr,        # [R1 = b1 P, D], [R2 = b2 Q, D] (row strides s1r, s2r; feature strides s1d, s2d)
    mask1_ptr, mask2_ptr,  # [R1], [R2] int8, 1 = real patch (read only with HAS_MASK1 / HAS_MASK2)
    value_ptr,             # [b2, R1] out: max | smooth max f of x1 patch r over x2 image m
    stat_ptr,              # out: argmax j int32 [b2, R1] (Q at padded x1 patches) | [2, b2, R1] row max, log-sum
    inv_t_ptr,             # [1] ACC: 1 / T (finite); a typed tensor, not a Python float the JIT would make fp32
    R1, b2, Q, D, s1r, s1d, s2r, s2d, IMAGES,
    REDUCE_MAX: tl.constexpr, HAS_MASK1: tl.constexpr, HAS_MASK2: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    # 1-D grid (no 65,535 limit): groups of GROUP_M row tiles x all image runs, row tiles fastest
    pid = tl.program_id(0)
    n_runs = tl.cdiv(b2, IMAGES)
    per_group = GROUP_M * n_runs
    first_tile = (pid // per_group) * GROUP_M
    group_size = tl.minimum(tl.cdiv(R1, BLOCK_M) - first_tile, GROUP_M)
    row_tile = first_tile + (pid % per_group) % group_size
    run = (pid % per_group) // group_size
    rows = row_tile.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < R1
    col_begin = run.to(tl.int64) * IMAGES * Q
    col_end = tl.minimum(col_begin + IMAGES * Q, b2.to(tl.int64) * Q)
    scale = tl.load(inv_t_ptr)
    if REDUCE_MAX:
        best = tl.full([BLOCK_M], float("-inf"), ACC)
        best_j = tl.zeros([BLOCK_M], dtype=tl.int32)
        real_row = row_ok
        if HAS_MASK1:
            real_row = row_ok & (tl.load(mask1_ptr + rows, mask=row_ok, other=0) != 0)
    else:
        run_max = tl.full([BLOCK_M], float("-inf"), ACC)
        run_sum = tl.zeros([BLOCK_M], dtype=ACC)
        run_w = tl.zeros([BLOCK_M], dtype=ACC)
    for c0 in range(col_begin, col_end, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        sim, col_ok = _sim_chunk(x1_ptr, x2_ptr, mask2_ptr, rows, cols, row_ok, col_end, D, s1r, s1d, s2r, s2d,
                                 HAS_MASK2, ACC, BLOCK_M, BLOCK_N, BLOCK_K, DOT_PRECISION)
        chunk_end = tl.minimum(c0 + BLOCK_N, col_end)
        for m in range(c0 // Q, (chunk_end - 1) // Q + 1):  # the x2 images this chunk touches, in order
            seg = col_ok & (cols >= m * Q) & (cols < m * Q + Q)
            closes = m * Q + Q <= chunk_end  # the image's last column is in this chunk
            out = m * R1 + rows
            if REDUCE_MAX:
                tile_best = tl.max(tl.where(seg[None, :], sim, float("-inf")), axis=1)
                # first column holding the max (a min over indices: lighter on registers than tl.argmax)
                hit = seg[None, :] & (sim == tile_best[:, None])
                tile_j = tl.min(tl.where(hit, (cols - m * Q).to(tl.int32)[None, :], Q), axis=1)
                better = tile_best > best  # strict: earlier chunks win ties
                best = tl.where(better, tile_best, best)
                best_j = tl.where(better, tile_j, best_j)
                tl.store(value_ptr + out, best, mask=row_ok & closes)
                tl.store(stat_ptr + out, tl.where(real_row, best_j, Q), mask=row_ok & closes)
                best = tl.where(closes, float("-inf"), best)
                best_j = tl.where(closes, 0, best_j)
            else:
                new_max = tl.maximum(run_max, tl.max(tl.where(seg[None, :], sim, float("-inf")), axis=1))
                safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)  # nothing real seen yet
                # shift before scaling: (sim - max) / T stays finite for tiny T, masked lanes never reach exp
                shift = run_max - safe_max  # <= 0; -inf when nothing was seen (then run_sum = 0)
                alpha = tl.exp(shift * scale)
                d = tl.where(seg[None, :], sim - safe_max[:, None], float("-inf"))
                p = tl.exp(d * scale)
                # run_w = sum p (sim - max), kept relative to the running max: f - max is exactly 0 at ties
                run_w = alpha * (run_w + run_sum * tl.where(run_sum > 0, shift, 0.0)) + \
                    tl.sum(tl.where(seg[None, :], p * tl.where(seg[None, :], d, 0.0), 0.0), axis=1)
                run_sum = run_sum * alpha + tl.sum(p, axis=1)
                run_max = new_max
                tl.store(value_ptr + out, run_max + run_w / run_sum, mask=row_ok & closes)
                tl.store(stat_ptr + out, run_max, mask=row_ok & closes)
                tl.store(stat_ptr + b2.to(tl.int64) * R1 + out, tl.log(run_sum), mask=row_ok & closes)
                run_max = tl.where(closes, float("-inf"), run_max)
                run_sum = tl.where(closes, 0.0, run_sum)
                run_w = tl.where(closes, 0.0, run_w)


@triton.jit
def _patch_similarity_softmax_weights_kernel(
    x1_ptr, x2_ptr, mask2_ptr,  # as in the forward
    coef_ptr,              # [b2, R1] c = grad_s / count (0 at padded x1 patches)
    stat_ptr,              # [2, b2, R1] row max, log-sum (forward)
    smooth_ptr,            # [b2, R1] smooth max f (forward)
    ds_ptr,                # out [r1 - r0, c1 - c0] contiguous: dS of the chunk
    inv_t_ptr,             # [1] ACC: 1 / T
    r0, r1, c0, c1, R1, b2, Q, D, s1r, s1d, s2r, s2d,
    HAS_MASK2: tl.constexpr, ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dS[r, col] = c p (1 + (sim - f) / T), p = exp((sim - max) / T - logsum), 0 at masked or zero-weight lanes."""
    pid = tl.program_id(0)
    n_col_tiles = tl.cdiv(c1 - c0, BLOCK_N)
    rows = r0 + (pid // n_col_tiles).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = c0 + (pid % n_col_tiles).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < r1
    in_range = cols < c1
    sim, col_ok = _sim_chunk(x1_ptr, x2_ptr, mask2_ptr, rows, cols, row_ok, c1, D, s1r, s1d, s2r, s2d,
                             HAS_MASK2, ACC, BLOCK_M, BLOCK_N, BLOCK_K, DOT_PRECISION)
    ok = row_ok[:, None] & col_ok[None, :]
    stat = (cols // Q)[None, :] * R1 + rows[:, None]  # [BLOCK_M, BLOCK_N] index into [b2, R1]
    row_max = tl.load(stat_ptr + stat, mask=ok, other=0.0)
    log_sum = tl.load(stat_ptr + b2.to(tl.int64) * R1 + stat, mask=ok, other=0.0)
    f = tl.load(smooth_ptr + stat, mask=ok, other=0.0)
    c = tl.load(coef_ptr + stat, mask=ok, other=0.0)
    scale = tl.load(inv_t_ptr)
    d = tl.minimum(sim - row_max, 0.0)  # a recomputed sim an ulp above the forward's max must not give p > 1
    p = tl.exp(tl.where(ok, d * scale - log_sum, float("-inf")))
    ds = tl.where(p > 0, c * p * (1.0 + (d - (f - row_max)) * scale), 0.0)
    out = (rows - r0)[:, None] * (c1 - c0) + (cols - c0)[None, :]
    tl.store(ds_ptr + out, ds.to(ds_ptr.dtype.element_ty), mask=row_ok[:, None] & in_range[None, :])
