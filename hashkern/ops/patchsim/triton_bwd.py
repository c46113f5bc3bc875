"""Triton kernels of the maxmean backward: two deterministic gathers and an int32 counting-sort CSR.

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
