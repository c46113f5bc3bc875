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

The cost model, its predictions against the goals and the GEMM-then-epilogue alternative
(``triton_epilogue.py``) are in benchmarks/notes/patch_similarity.md.
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
    col_end = tl.minimum(col_begin + IMAGES * Q, tl.cast(b2, tl.int64) * Q)
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
                tl.store(stat_ptr + tl.cast(b2, tl.int64) * R1 + out, tl.log(run_sum), mask=row_ok & closes)
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
    log_sum = tl.load(stat_ptr + tl.cast(b2, tl.int64) * R1 + stat, mask=ok, other=0.0)
    f = tl.load(smooth_ptr + stat, mask=ok, other=0.0)
    c = tl.load(coef_ptr + stat, mask=ok, other=0.0)
    scale = tl.load(inv_t_ptr)
    d = tl.minimum(sim - row_max, 0.0)  # a recomputed sim an ulp above the forward's max must not give p > 1
    p = tl.exp(tl.where(ok, d * scale - log_sum, float("-inf")))
    ds = tl.where(p > 0, c * p * (1.0 + (d - (f - row_max)) * scale), 0.0)
    out = (rows - r0)[:, None] * (c1 - c0) + (cols - c0)[None, :]
    tl.store(ds_ptr + out, ds.to(ds_ptr.dtype.element_ty), mask=row_ok[:, None] & in_range[None, :])
