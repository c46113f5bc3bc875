"""Triton kernels of patch similarity: forward (running max / online softmax over patch tiles)
and backward (gather at the saved argmax, or recompute for the smooth max).

Never writes ``[b1, b2, P, Q]``: the forward keeps a ``[BLOCK_P, BLOCK_Q]`` tile of
similarities in registers and saves only per-patch statistics ``[b1, b2, P]`` (the argmax
``j``, or the softmax log-normaliser and the smooth max). For ``maxmean`` both input gradients
are gathers: dx1 reads x2 at the saved argmax, dx2 reads x1 through the argmax sorted by ``j``
(a CSR inverse built with one ``torch.sort``), so no atomics and no second dense matmul. Patch dot products use ``tl.dot``:
tensor cores for bf16/fp16 with fp32 accumulation, tf32 for fp32 input on CUDA (about 1e-3
relative error), FMA units for fp64 input. Launchers and tile choices: ``triton_launch.py``.
This module imports triton; import it lazily.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _mm(a, b, acc, DOT_PRECISION: tl.constexpr):
    """acc + a @ b: tensor cores via tl.dot, or ("fma") a broadcast product for fp64, whose MMA
    lowering rejects these kernels on sm_90 ("fp64 don't support largeK MMA")."""
    if DOT_PRECISION == "fma":
        return acc + tl.sum(a[:, :, None].to(acc.dtype) * b[None, :, :].to(acc.dtype), axis=1)
    else:
        return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


@triton.jit
def _sim_tile(x1_ptr, x2_ptr, offs_i, offs_j, P, Q, D, s1p, s1d, s2q, s2d,
              ACC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
              DOT_PRECISION: tl.constexpr):
    """x1_ptr -> tokens of one image [P, D], x2_ptr -> [Q, D]; returns x1[offs_i] . x2[offs_j] [BLOCK_P, BLOCK_Q]."""
    acc = tl.zeros([BLOCK_P, BLOCK_Q], dtype=ACC)
    offs_k = tl.arange(0, BLOCK_K)
    for k0 in range(0, D, BLOCK_K):
        k = k0 + offs_k
        a = tl.load(x1_ptr + offs_i[:, None] * s1p + k[None, :] * s1d,
                    mask=(offs_i[:, None] < P) & (k[None, :] < D), other=0.0)  # [BLOCK_P, BLOCK_K]
        b = tl.load(x2_ptr + offs_j[None, :] * s2q + k[:, None] * s2d,
                    mask=(offs_j[None, :] < Q) & (k[:, None] < D), other=0.0)  # [BLOCK_K, BLOCK_Q]
        acc = _mm(a, b, acc, DOT_PRECISION)
    return acc


@triton.jit
def _row_mask(mask_ptr, offs, L, HAS_MASK: tl.constexpr):
    """In-range patches, minus the padded ones of a boolean (int8) mask row [L]."""
    ok = offs < L
    if HAS_MASK:
        ok = ok & (tl.load(mask_ptr + offs, mask=offs < L, other=0) != 0)
    return ok


@triton.jit
def _softmax_dsim(sim, lse, f, c, scale, valid):
    """d(c * sum_j p_j sim_j)/d sim_j = c p_j (1 + (sim_j - f) / T), p = softmax_j(sim / T); 0 where invalid."""
    # Masked-out columns may score above the row's logsumexp: keep them out of the exp (no inf).
    p = tl.exp(tl.where(valid, sim * scale - lse[:, None], float("-inf")))
    return tl.where(valid, c * p * (1.0 + (sim - f[:, None]) * scale), 0.0)


@triton.jit
def _patch_similarity_fwd_kernel(
    x1_ptr, x2_ptr,        # [b1, P, D], [b2, Q, D]
    mask1_ptr, mask2_ptr,  # [b1, P], [b2, Q] int8, 1 = real patch (read only with HAS_MASK*)
    inv_count_ptr,         # [b1] 1 / number of real patches of x1[n]
    s_ptr,                 # [b1, b2] out
    aux_a_ptr, aux_b_ptr,  # out: argmax j int32 [b2, b1, P] (Q at padded i) | logsumexp(sim/T), smooth max [b1, b2, P]
    b1, b2, P, Q, D, s1b, s1p, s1d, s2b, s2q, s2d, scale,
    REDUCE_MAX: tl.constexpr, HAS_MASK1: tl.constexpr, HAS_MASK2: tl.constexpr, ACC: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
    GROUP: tl.constexpr,
):
    # 1-D grid over the b1 x b2 pairs, swizzled: programs running together cover GROUP images of
    # x1 against a run of images of x2, so both stay in L2 instead of x2 being re-read per n
    pid = tl.program_id(0)
    group_id = pid // (GROUP * b2)
    first_n = group_id * GROUP
    group_size = tl.minimum(b1 - first_n, GROUP)
    n = (first_n + (pid % (GROUP * b2)) % group_size).to(tl.int64)
    m = ((pid % (GROUP * b2)) // group_size).to(tl.int64)
    x1_n = x1_ptr + n * s1b
    x2_m = x2_ptr + m * s2b
    aux_row = (n * b2 + m) * P
    idx_row = (m * b1 + n) * P  # m-major: the argmax of one x2 image is one row to sort for dx2
    total = tl.zeros([BLOCK_P], dtype=ACC)
    for p0 in range(0, P, BLOCK_P):
        offs_i = p0 + tl.arange(0, BLOCK_P)
        row_ok = _row_mask(mask1_ptr + n * P, offs_i, P, HAS_MASK1)
        if REDUCE_MAX:
            best = tl.full([BLOCK_P], float("-inf"), ACC)
            best_j = tl.zeros([BLOCK_P], dtype=tl.int32)
        else:
            run_max = tl.full([BLOCK_P], float("-inf"), ACC)
            run_sum = tl.zeros([BLOCK_P], dtype=ACC)
            run_w = tl.zeros([BLOCK_P], dtype=ACC)
        for q0 in range(0, Q, BLOCK_Q):
            offs_j = q0 + tl.arange(0, BLOCK_Q)
            col_ok = _row_mask(mask2_ptr + m * Q, offs_j, Q, HAS_MASK2)
            sim = _sim_tile(x1_n, x2_m, offs_i, offs_j, P, Q, D, s1p, s1d, s2q, s2d,
                            ACC, BLOCK_P, BLOCK_Q, BLOCK_K, DOT_PRECISION)
            masked = tl.where(col_ok[None, :], sim, float("-inf"))
            if REDUCE_MAX:
                tile_best = tl.max(masked, axis=1)
                tile_j = tl.argmax(masked, axis=1).to(tl.int32) + q0
                better = tile_best > best  # strict: earlier tiles win ties, like argmax within a tile
                best = tl.where(better, tile_best, best)
                best_j = tl.where(better, tile_j, best_j)
            else:
                new_max = tl.maximum(run_max, tl.max(masked * scale, axis=1))
                safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)  # tile fully masked so far
                alpha = tl.exp(run_max - safe_max)
                p = tl.exp(tl.where(col_ok[None, :], sim * scale - safe_max[:, None], float("-inf")))
                run_sum = run_sum * alpha + tl.sum(p, axis=1)
                run_w = run_w * alpha + tl.sum(p * sim, axis=1)
                run_max = new_max
        in_range = offs_i < P
        if REDUCE_MAX:
            per_patch = best
            tl.store(aux_a_ptr + idx_row + offs_i, tl.where(row_ok, best_j, Q), mask=in_range)
        else:
            per_patch = run_w / run_sum
            tl.store(aux_a_ptr + aux_row + offs_i, run_max + tl.log(run_sum), mask=in_range)
            tl.store(aux_b_ptr + aux_row + offs_i, per_patch, mask=in_range)
        total += tl.where(row_ok, per_patch, 0.0)
    s = tl.sum(total, axis=0) * tl.load(inv_count_ptr + n)
    tl.store(s_ptr + n * b2 + m, s)


@triton.jit
def _patch_similarity_bwd_dx1_kernel(
    grad_ptr,              # [b1, b2] upstream gradient of s (contiguous)
    x1_ptr, x2_ptr,        # [b1, P, D], [b2, Q, D]
    mask1_ptr, mask2_ptr, inv_count_ptr, aux_a_ptr, aux_b_ptr,
    dx1_ptr,               # [b1, P, D] out, contiguous
    b1, b2, P, Q, D, s1b, s1p, s1d, s2b, s2q, s2d, scale,
    REDUCE_MAX: tl.constexpr, HAS_MASK1: tl.constexpr, HAS_MASK2: tl.constexpr, ACC: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """dx1[n, i] = sum_m c[n, m] * (x2[m, argmax] | sum_j dsim[n, m, i, j] x2[m, j]); c = grad / count."""
    pid_d = tl.program_id(0)
    offs_i = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    n = tl.program_id(2).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    row_ok = _row_mask(mask1_ptr + n * P, offs_i, P, HAS_MASK1)
    inv_count = tl.load(inv_count_ptr + n)
    acc = tl.zeros([BLOCK_P, BLOCK_D], dtype=ACC)
    for m in range(0, b2):
        c = tl.load(grad_ptr + n * b2 + m).to(ACC) * inv_count
        x2_m = x2_ptr + m * s2b
        if REDUCE_MAX:
            j = tl.load(aux_a_ptr + (m * b1 + n) * P + offs_i, mask=row_ok, other=0)
            rows = tl.load(x2_m + j[:, None] * s2q + offs_d[None, :] * s2d,
                           mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # gathered x2[m, argmax]
            acc += c * rows.to(ACC)
        else:
            lse = tl.load(aux_a_ptr + (n * b2 + m) * P + offs_i, mask=row_ok, other=0.0)
            f = tl.load(aux_b_ptr + (n * b2 + m) * P + offs_i, mask=row_ok, other=0.0)
            for q0 in range(0, Q, BLOCK_Q):
                offs_j = q0 + tl.arange(0, BLOCK_Q)
                col_ok = _row_mask(mask2_ptr + m * Q, offs_j, Q, HAS_MASK2)
                sim = _sim_tile(x1_ptr + n * s1b, x2_m, offs_i, offs_j, P, Q, D, s1p, s1d, s2q, s2d,
                                ACC, BLOCK_P, BLOCK_Q, BLOCK_K, DOT_PRECISION)
                ds = _softmax_dsim(sim, lse, f, c, scale, row_ok[:, None] & col_ok[None, :])
                v = tl.load(x2_m + offs_j[:, None] * s2q + offs_d[None, :] * s2d,
                            mask=col_ok[:, None] & d_ok[None, :], other=0.0)  # [BLOCK_Q, BLOCK_D]
                acc = _mm(ds.to(v.dtype), v, acc, DOT_PRECISION)
    out = dx1_ptr + n * P * D + offs_i[:, None] * D + offs_d[None, :]
    tl.store(out, acc.to(dx1_ptr.dtype.element_ty), mask=(offs_i[:, None] < P) & d_ok[None, :])


@triton.jit
def _patch_similarity_bwd_dx2_kernel(
    grad_ptr, x1_ptr, x2_ptr, mask1_ptr, mask2_ptr, inv_count_ptr, lse_ptr, f_ptr,
    dx2_ptr,               # [b2, Q, D] out, contiguous
    b1, b2, P, Q, D, s1b, s1p, s1d, s2b, s2q, s2d, scale,
    HAS_MASK1: tl.constexpr, HAS_MASK2: tl.constexpr, ACC: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """softmaxmean: dx2[m, j] = sum_n c[n, m] sum_i dsim[n, m, i, j] x1[n, i], dsim recomputed per tile."""
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_j = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    m = tl.program_id(2).to(tl.int64)
    d_ok = offs_d < D
    col_ok = _row_mask(mask2_ptr + m * Q, offs_j, Q, HAS_MASK2)
    acc = tl.zeros([BLOCK_Q, BLOCK_D], dtype=ACC)
    for n in range(0, b1):
        c = tl.load(grad_ptr + n * b2 + m).to(ACC) * tl.load(inv_count_ptr + n)
        for p0 in range(0, P, BLOCK_P):
            offs_i = p0 + tl.arange(0, BLOCK_P)
            row_ok = _row_mask(mask1_ptr + n * P, offs_i, P, HAS_MASK1)
            u = tl.load(x1_ptr + n * s1b + offs_i[:, None] * s1p + offs_d[None, :] * s1d,
                        mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # [BLOCK_P, BLOCK_D]
            lse = tl.load(lse_ptr + (n * b2 + m) * P + offs_i, mask=row_ok, other=0.0)
            f = tl.load(f_ptr + (n * b2 + m) * P + offs_i, mask=row_ok, other=0.0)
            sim = _sim_tile(x1_ptr + n * s1b, x2_ptr + m * s2b, offs_i, offs_j, P, Q, D,
                            s1p, s1d, s2q, s2d, ACC, BLOCK_P, BLOCK_Q, BLOCK_K, DOT_PRECISION)
            ds = _softmax_dsim(sim, lse, f, c, scale, row_ok[:, None] & col_ok[None, :])
            acc = _mm(tl.trans(ds).to(u.dtype), u, acc, DOT_PRECISION)
    out = dx2_ptr + m * Q * D + offs_j[:, None] * D + offs_d[None, :]
    tl.store(out, acc.to(dx2_ptr.dtype.element_ty), mask=(offs_j[:, None] < Q) & d_ok[None, :])


@triton.jit
def _patch_similarity_bwd_dx2_gather_kernel(
    grad_ptr, x1_ptr, inv_count_ptr,
    order_ptr,             # [b2, b1 * P] int32: flat x1 patch n * P + i, sorted by its argmax j in x2[m]
    offsets_ptr,           # [b2, Q + 1] int32: patches with argmax j are order[m, offsets[m, j]:offsets[m, j + 1]]
    dx2_ptr,               # [b2, Q, D] out, contiguous
    b1, b2, P, Q, D, s1b, s1p, s1d,
    ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """maxmean: dx2[m, j] = sum over the x1 patches (n, i) whose max is x2[m, j] of c[n, m] x1[n, i]."""
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    j = tl.program_id(1)
    m = tl.program_id(2).to(tl.int64)
    d_ok = offs_d < D
    start = tl.load(offsets_ptr + m * (Q + 1) + j)
    end = tl.load(offsets_ptr + m * (Q + 1) + j + 1)
    acc = tl.zeros([BLOCK_T, BLOCK_D], dtype=ACC)
    for t0 in range(start, end, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        t_ok = t < end
        src = tl.load(order_ptr + m * b1 * P + t, mask=t_ok, other=0).to(tl.int64)
        n = src // P
        c = tl.load(grad_ptr + n * b2 + m, mask=t_ok, other=0.0).to(ACC) * tl.load(inv_count_ptr + n, mask=t_ok, other=0.0)
        rows = tl.load(x1_ptr + n[:, None] * s1b + (src - n * P)[:, None] * s1p + offs_d[None, :] * s1d,
                       mask=t_ok[:, None] & d_ok[None, :], other=0.0)  # [BLOCK_T, BLOCK_D] gathered patches
        acc += c[:, None] * rows.to(ACC)
    tl.store(dx2_ptr + (m * Q + j) * D + offs_d, tl.sum(acc, axis=0).to(dx2_ptr.dtype.element_ty), mask=d_ok)
