"""Triton kernels of patch similarity (launchers: ``triton_launch.py``; cost model: benchmarks/notes/patchsim.md).

Forward: a GEMM with a segmented max epilogue, and softmaxmean's dS.

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

Backward of maxmean: two deterministic gathers and an int32 counting-sort CSR.

``c [b2, R1]`` is ``grad_s[n, m] / count[n]`` per (x2 image m, x1 patch r = n P + i), 0 at padded patches;
``argmax [b2, R1]`` is the forward's first argmax j (Q at padded patches).

* dx1[r] = sum_m c[m, r] X2[m Q + argmax[m, r]]: one program per (row tile, D tile) walks m in order.
* CSR: per x2 image m, the x1 patches sorted by their argmax (stable, so in row order): a histogram per
  (image, window of rows), an exclusive scan over (bin, window) in torch, and a stable placement whose
  rank among equal keys comes from the window's running counts plus a triangular comparison within the
  tile. int32 throughout, no sort, no atomics.
* dx2[m Q + j] = sum over its segment of c[m, r] X1[r]: segments are cut into pieces of at most SPLIT
  rows; pieces after the first (only "hub" patches chosen by more than SPLIT rows have them) are summed
  by their own programs into a partial buffer, which the segment's main program then adds in piece order.
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



@triton.jit
def _patch_similarity_dx1_kernel(
    x2_ptr,                # [R2 = b2 Q, D] (strides s2r, s2d)
    argmax_ptr, coef_ptr,  # [b2, R1] int32, [b2, R1] ACC
    dx1_ptr,               # [R1, D] out, contiguous
    R1, b2, Q, D, s2r, s2d,
    ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    n_d_tiles = tl.cdiv(D, BLOCK_D)
    rows = (pid // n_d_tiles).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = (pid % n_d_tiles) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < R1
    d_ok = offs_d < D
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=ACC)
    for m in range(0, b2):
        at = m * R1 + rows  # int64
        j = tl.load(argmax_ptr + at, mask=row_ok, other=Q)
        real = row_ok & (j < Q)
        c = tl.load(coef_ptr + at, mask=real, other=0.0)
        src = m * Q + j.to(tl.int64)
        x = tl.load(x2_ptr + src[:, None] * s2r + offs_d[None, :] * s2d, mask=real[:, None] & d_ok[None, :],
                    other=0.0)  # [BLOCK_M, BLOCK_D] gathered argmax rows of image m
        acc += c[:, None] * x.to(ACC)
    tl.store(dx1_ptr + rows[:, None] * D + offs_d[None, :], acc.to(dx1_ptr.dtype.element_ty),
             mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _csr_window_keys(argmax_ptr, m, t, w_end, R1, BINS: tl.constexpr):
    """Keys of rows t (< w_end) of image m, and their one-hot [BLOCK_T, BINS] (all-false outside the window)."""
    ok = t < w_end
    keys = tl.load(argmax_ptr + m * R1 + t, mask=ok, other=0)
    onehot = (keys[:, None] == tl.arange(0, BINS)[None, :]) & ok[:, None]
    return keys, ok, onehot


@triton.jit
def _csr_window(pid, R1, WINDOW, n_windows):
    """Program pid -> (image m, first row, end row) of its window of x1 rows."""
    w_start = (pid % n_windows).to(tl.int64) * WINDOW
    return (pid // n_windows).to(tl.int64), w_start, tl.minimum(w_start + WINDOW, R1)


@triton.jit
def _patch_similarity_csr_count_kernel(
    argmax_ptr,            # [b2, R1] int32 keys in [0, Q]
    counts_ptr,            # [b2, W, BINS] int32 out: histogram of each window of WINDOW rows
    R1, WINDOW, n_windows,
    BINS: tl.constexpr, BLOCK_T: tl.constexpr,
):
    pid = tl.program_id(0)
    m, w_start, w_end = _csr_window(pid, R1, WINDOW, n_windows)
    counts = tl.zeros([BINS], dtype=tl.int32)
    for t0 in range(w_start, w_end, BLOCK_T):
        _, _, onehot = _csr_window_keys(argmax_ptr, m, t0 + tl.arange(0, BLOCK_T), w_end, R1, BINS)
        counts += tl.sum(onehot.to(tl.int32), axis=0)
    tl.store(counts_ptr + pid.to(tl.int64) * BINS + tl.arange(0, BINS), counts)


@triton.jit
def _patch_similarity_csr_place_kernel(
    argmax_ptr,            # [b2, R1] int32 keys in [0, Q]
    starts_ptr,            # [b2, W, BINS] int32: where (image m, window w)'s rows of each key begin in order[m]
    order_ptr,             # [b2, R1] int32 out: row indices r, stably sorted by key within each image
    R1, WINDOW, n_windows,
    BINS: tl.constexpr, BLOCK_T: tl.constexpr,
):
    pid = tl.program_id(0)
    m, w_start, w_end = _csr_window(pid, R1, WINDOW, n_windows)
    running = tl.load(starts_ptr + pid.to(tl.int64) * BINS + tl.arange(0, BINS))
    lane = tl.arange(0, BLOCK_T)
    earlier = lane[None, :] < lane[:, None]  # [BLOCK_T, BLOCK_T]: lane j precedes lane i
    for t0 in range(w_start, w_end, BLOCK_T):
        t = t0 + lane
        keys, ok, onehot = _csr_window_keys(argmax_ptr, m, t, w_end, R1, BINS)
        same_before = (keys[:, None] == keys[None, :]) & earlier & ok[None, :]
        rank = tl.sum(same_before.to(tl.int32), axis=1)
        base = tl.sum(tl.where(onehot, running[None, :], 0), axis=1)
        tl.store(order_ptr + m * R1 + base + rank, t.to(tl.int32), mask=ok)
        running += tl.sum(onehot.to(tl.int32), axis=0)


@triton.jit
def _segment_piece_sum(x1_ptr, coef_ptr, order_ptr, m, start, end, offs_d, d_ok, R1, s1r, s1d,
                       ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """sum over t in [start, end) of c[m, order[m, t]] X1[order[m, t], offs_d] -> [BLOCK_D] (fixed order)."""
    acc = tl.zeros([BLOCK_T, BLOCK_D], dtype=ACC)
    for t0 in range(start, end, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        ok = t < end
        r = tl.load(order_ptr + m * R1 + t, mask=ok, other=0).to(tl.int64)
        c = tl.load(coef_ptr + m * R1 + r, mask=ok, other=0.0)
        x = tl.load(x1_ptr + r[:, None] * s1r + offs_d[None, :] * s1d, mask=ok[:, None] & d_ok[None, :], other=0.0)
        acc += c[:, None] * x.to(ACC)
    return tl.sum(acc, axis=0)


@triton.jit
def _patch_similarity_dx2_pieces_kernel(
    x1_ptr, coef_ptr, order_ptr,  # [R1, D], [b2, R1], [b2, R1] int32
    piece_seg_ptr,         # [E] int32: segment m Q + j of extra piece e (-1: no piece)
    piece_start_ptr,       # [E] int32: first position of the piece in order[m]
    offsets_ptr,           # [b2, Q + 1] int32: segment (m, j) is order[m, offsets[m, j]:offsets[m, j + 1]]
    partial_ptr,           # [E, D] ACC out
    R1, Q, D, s1r, s1d, SPLIT,
    ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    n_d_tiles = tl.cdiv(D, BLOCK_D)
    e = (pid // n_d_tiles).to(tl.int64)
    offs_d = (pid % n_d_tiles) * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    seg = tl.load(piece_seg_ptr + e)
    if seg >= 0:
        m = (seg // Q).to(tl.int64)
        start = tl.load(piece_start_ptr + e)
        end = tl.minimum(start + SPLIT, tl.load(offsets_ptr + seg + m + 1))
        total = _segment_piece_sum(x1_ptr, coef_ptr, order_ptr, m, start, end, offs_d, d_ok, R1, s1r, s1d,
                                   ACC, BLOCK_T, BLOCK_D)
        tl.store(partial_ptr + e * D + offs_d, total, mask=d_ok)


@triton.jit
def _patch_similarity_dx2_kernel(
    x1_ptr, coef_ptr, order_ptr, offsets_ptr,  # as in the pieces kernel
    first_piece_ptr,       # [b2 Q] int32: index e of the segment's first extra piece
    n_pieces_ptr,          # [b2 Q] int32: its number of extra pieces
    partial_ptr,           # [E, D] ACC (from the pieces kernel)
    dx2_ptr,               # [b2 Q, D] out, contiguous
    R1, Q, D, s1r, s1d, SPLIT,
    ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    n_d_tiles = tl.cdiv(D, BLOCK_D)
    seg = (pid // n_d_tiles).to(tl.int64)  # m Q + j
    offs_d = (pid % n_d_tiles) * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    m = seg // Q
    start = tl.load(offsets_ptr + seg + m)
    end = tl.minimum(start + SPLIT, tl.load(offsets_ptr + seg + m + 1))
    total = _segment_piece_sum(x1_ptr, coef_ptr, order_ptr, m, start, end, offs_d, d_ok, R1, s1r, s1d,
                               ACC, BLOCK_T, BLOCK_D)
    first = tl.load(first_piece_ptr + seg).to(tl.int64)
    for e in range(first, first + tl.load(n_pieces_ptr + seg)):  # fixed order: deterministic
        total += tl.load(partial_ptr + e * D + offs_d, mask=d_ok, other=0.0)
    tl.store(dx2_ptr + seg * D + offs_d, total.to(dx2_ptr.dtype.element_ty), mask=d_ok)
