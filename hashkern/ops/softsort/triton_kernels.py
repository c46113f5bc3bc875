"""Triton kernels of the SoftSort Laplace scans (the CUDA path; launchers in ``triton_launch.py``).
Scan state names (``il_g``, ``gp_g``, ``er_g``, ...): the glossary atop ``csrc/cpu/softsort_scan_isa.h``.

One program owns ``BA`` rows (anchors) x ``BD`` features and walks the ``n`` sorted positions
sequentially, the ``[BA, BD]`` scan states in registers; every step loads ``BA`` gathered value
rows at once. ``E_r`` needs the left scan ``A_r`` and the right scan ``B_r`` together, so the
right scan is checkpointed: a first reverse walk stores ``B`` (and its scan of ones) at the end of
every chunk of ``chunk`` positions; each chunk is then rebuilt backwards into a small
program-private scratch and consumed forwards. The backward does the same for ``A`` on its way
back. Memory: ``O(b d (n / chunk + chunk))`` of checkpoints and scratch, never ``b n d``.

Readiness notes (what the interpreter cannot show):
* scratch written by one thread is read by others (slice layouts replicate ``[BA]`` scalars), so
  every hand-over goes through ``tl.debug_barrier()`` (``bar.sync`` orders global memory in the CTA);
* offsets are int64 wherever ``b n d`` or ``b n`` can pass 2^31; the grid is one flat axis;
* ``tau`` is typed ``fp64`` and every decay is computed in fp64, so fp64 inputs keep full
  precision and a temperature below fp32's range gives 0, never 0/0;
* ``dv`` of values shared by all rows is accumulated with relaxed float atomics (run-to-run
  rounding differences; the launcher refuses it under ``torch.use_deterministic_algorithms``).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _decay(q_ptr, row_off, r, rmask, tau: tl.float64):
    """``gamma_r = exp(-(q[r-1] - q[r]) / tau)`` (0 at r = 0) and the tie flag ``q[r-1] == q[r]``, ``[BA]``."""
    qa = tl.load(q_ptr + row_off + tl.maximum(r - 1, 0), mask=rmask, other=0.0)
    qb = tl.load(q_ptr + row_off + r, mask=rmask, other=0.0)
    gap = qa.to(tl.float64) - qb.to(tl.float64)
    gamma = tl.where(gap > 0, tl.exp(-gap / tau), 1.0)
    gamma = tl.where(r > 0, gamma, 0.0).to(qb.dtype)
    tie = tl.where((qa == qb) & (r > 0), 1.0, 0.0).to(qb.dtype)
    return gamma, tie


@triton.jit
def _values(v_ptr, v_off, idx_ptr, row_off, r, rmask, cols, cmask, d):
    """The values at sorted position r, ``[BA, BD]``, and their sample indices ``[BA]``."""
    j = tl.load(idx_ptr + row_off + r, mask=rmask, other=0)
    z = tl.load(v_ptr + v_off[:, None] + j[:, None] * d + cols[None, :],
                mask=rmask[:, None] & cmask[None, :], other=0.0)
    return z, j


@triton.jit
def _right_checkpoints(q_ptr, idx_ptr, v_ptr, v_off, row_off, rmask, cols, cmask, n, d, tau: tl.float64, chunk,
                       ck_ptr, ck_off, cks_ptr, cks_off, BA: tl.constexpr, BD: tl.constexpr):
    """Reverse walk: store ``B_r`` and ``b_r`` at the last position r of every chunk."""
    vec = tl.zeros([BA, BD], dtype=ck_ptr.dtype.element_ty)
    ones = tl.zeros([BA], dtype=ck_ptr.dtype.element_ty)
    m2 = rmask[:, None] & cmask[None, :]
    for step in range(0, n):
        r = n - 1 - step
        if (r % chunk == chunk - 1) | (r == n - 1):
            c = r // chunk
            tl.store(ck_ptr + ck_off[:, None] + c * d + cols[None, :], vec, mask=m2)
            tl.store(cks_ptr + cks_off + c, ones, mask=rmask)
        gamma, _ = _decay(q_ptr, row_off, r, rmask, tau)
        z, _ = _values(v_ptr, v_off, idx_ptr, row_off, r, rmask, cols, cmask, d)
        vec = gamma[:, None] * (vec + z)
        ones = gamma * (ones + 1.0)


@triton.jit
def _rebuild_right(q_ptr, idx_ptr, v_ptr, v_off, row_off, rmask, cols, cmask, n, d, tau: tl.float64, chunk,
                   c, start, end, ck_ptr, ck_off, cks_ptr, cks_off, loc_ptr, loc_off, locs_ptr, locs_off):
    """Chunk c, backwards from its checkpoint: ``loc[r - start] = B_r``, ``locs[r - start] = b_r``."""
    m2 = rmask[:, None] & cmask[None, :]
    tl.debug_barrier()  # the previous chunk's readers are done with the scratch
    vec = tl.load(ck_ptr + ck_off[:, None] + c * d + cols[None, :], mask=m2, other=0.0)
    ones = tl.load(cks_ptr + cks_off + c, mask=rmask, other=0.0)
    for step in range(0, end - start + 1):
        r = end - step
        tl.store(loc_ptr + loc_off[:, None] + (r - start) * d + cols[None, :], vec, mask=m2)
        tl.store(locs_ptr + locs_off + (r - start), ones, mask=rmask)
        gamma, _ = _decay(q_ptr, row_off, r, rmask, tau)
        z, _ = _values(v_ptr, v_off, idx_ptr, row_off, r, rmask, cols, cmask, d)
        vec = gamma[:, None] * (vec + z)
        ones = gamma * (ones + 1.0)
    tl.debug_barrier()  # written by some threads, read by others


@triton.jit
def _program_tile(b, n, d, chunk, nchunks, SHARED_V: tl.constexpr, BA: tl.constexpr, BD: tl.constexpr):
    """This program's feature block, rows [BA] (int64), columns [BD], masks and base offsets."""
    pid = tl.program_id(0)  # one flat axis: (row block, feature block), no 65,535 limit
    nblk_d = tl.cdiv(d, BD)
    blk_r, blk_d = pid // nblk_d, pid % nblk_d
    rows = (blk_r * BA + tl.arange(0, BA)).to(tl.int64)
    cols = blk_d * BD + tl.arange(0, BD)
    rmask, cmask = rows < b, cols < d
    m2 = rmask[:, None] & cmask[None, :]
    v_off = rows * 0 if SHARED_V else rows * n * d
    return (blk_d, rows, cols, rmask, cmask, m2, rows * n, v_off, rows * nchunks * d, rows * chunk * d,
            (blk_d * b + rows) * nchunks, (blk_d * b + rows) * chunk)


@triton.jit
def _softsort_scan_fwd_kernel(
    q_ptr, idx_ptr, v_ptr, u_ptr,      # q, idx [b, n]; v [1 or b, n, d]; u [b, d] (cosine)
    out_ptr,                           # gather: E [b, n, d]
    pee_ptr, peu_ptr,                  # cosine: per feature block, |E_r|^2 and E_r.u [nblk_d, b, n]
    ck_ptr, cks_ptr,                   # checkpoints [b, nchunks, d], [nblk_d, b, nchunks]
    loc_ptr, locs_ptr,                 # scratch [b, chunk, d], [nblk_d, b, chunk]
    b, n, d, chunk, nchunks, tau: tl.float64,
    SHARED_V: tl.constexpr, COSINE: tl.constexpr, BA: tl.constexpr, BD: tl.constexpr,
):
    blk_d, rows, cols, rmask, cmask, m2, row_off, v_off, ck_off, loc_off, cks_off, locs_off = _program_tile(
        b, n, d, chunk, nchunks, SHARED_V, BA, BD)
    _right_checkpoints(q_ptr, idx_ptr, v_ptr, v_off, row_off, rmask, cols, cmask, n, d, tau, chunk,
                       ck_ptr, ck_off, cks_ptr, cks_off, BA, BD)
    vec = tl.zeros([BA, BD], dtype=ck_ptr.dtype.element_ty)
    ones = tl.zeros([BA], dtype=ck_ptr.dtype.element_ty)
    if COSINE:
        u = tl.load(u_ptr + rows[:, None] * d + cols[None, :], mask=m2, other=0.0)
    for c in range(0, nchunks):
        start = c * chunk
        end = tl.minimum(start + chunk, n) - 1
        _rebuild_right(q_ptr, idx_ptr, v_ptr, v_off, row_off, rmask, cols, cmask, n, d, tau, chunk, c, start,
                       end, ck_ptr, ck_off, cks_ptr, cks_off, loc_ptr, loc_off, locs_ptr, locs_off)
        for r in range(start, end + 1):
            gamma, _ = _decay(q_ptr, row_off, r, rmask, tau)
            z, _ = _values(v_ptr, v_off, idx_ptr, row_off, r, rmask, cols, cmask, d)
            vec = gamma[:, None] * vec + z
            ones = gamma * ones + 1.0
            right = tl.load(loc_ptr + loc_off[:, None] + (r - start) * d + cols[None, :], mask=m2, other=0.0)
            right_ones = tl.load(locs_ptr + locs_off + (r - start), mask=rmask, other=0.0)
            inv = 1.0 / (ones + right_ones)
            e = (vec + right) * inv[:, None]
            if COSINE:
                tl.store(pee_ptr + (blk_d * b + rows) * n + r, tl.sum(e * e, axis=1), mask=rmask)
                tl.store(peu_ptr + (blk_d * b + rows) * n + r, tl.sum(e * u, axis=1), mask=rmask)
            else:
                tl.store(out_ptr + (row_off[:, None] + r) * d + cols[None, :], e, mask=m2)


@triton.jit
def _rebuild_left(q_ptr, idx_ptr, v_ptr, v_off, row_off, rmask, cols, cmask, d, tau: tl.float64, c, start, end,
                  ck_ptr, ck_off, cks_ptr, cks_off, loc_ptr, loc_off, locs_ptr, locs_off):
    """Chunk c, forwards from its left carry: ``loc[r - start] = A_r``, ``locs[r - start] = a_r``."""
    m2 = rmask[:, None] & cmask[None, :]
    tl.debug_barrier()
    vec = tl.load(ck_ptr + ck_off[:, None] + c * d + cols[None, :], mask=m2, other=0.0)
    ones = tl.load(cks_ptr + cks_off + c, mask=rmask, other=0.0)
    for r in range(start, end + 1):
        gamma, _ = _decay(q_ptr, row_off, r, rmask, tau)
        z, _ = _values(v_ptr, v_off, idx_ptr, row_off, r, rmask, cols, cmask, d)
        vec = gamma[:, None] * vec + z
        ones = gamma * ones + 1.0
        tl.store(loc_ptr + loc_off[:, None] + (r - start) * d + cols[None, :], vec, mask=m2)
        tl.store(locs_ptr + locs_off + (r - start), ones, mask=rmask)
    tl.debug_barrier()


@triton.jit
def _add_dv(dv_ptr, v_off, j, cols, m2, d, grad, SHARED_V: tl.constexpr):
    ptrs = dv_ptr + v_off[:, None] + j[:, None] * d + cols[None, :]
    if SHARED_V:  # rows of one program may pick the same sample at one rank
        tl.atomic_add(ptrs, grad, mask=m2, sem="relaxed")
    else:  # a row's own values: each (row, sample) once per walk, by this program only
        tl.store(ptrs, tl.load(ptrs, mask=m2, other=0.0) + grad, mask=m2)


@triton.jit
def _grad_e(grad_ptr, alpha_ptr, beta_ptr, rows, row_off, r, rmask, cols, m2, d, u, e, COSINE: tl.constexpr):
    """``dE_r [BA, BD]``: given (gather), or ``alpha u + beta E`` (sorted cosine)."""
    if COSINE:
        alpha = tl.load(alpha_ptr + row_off + r, mask=rmask, other=0.0)
        beta = tl.load(beta_ptr + row_off + r, mask=rmask, other=0.0)
        return alpha[:, None] * u + beta[:, None] * e
    return tl.load(grad_ptr + (row_off[:, None] + r) * d + cols[None, :], mask=m2, other=0.0)


@triton.jit
def _softsort_scan_bwd_kernel(
    q_ptr, idx_ptr, v_ptr, u_ptr,      # as the forward
    grad_ptr,                          # gather: dE [b, n, d]
    alpha_ptr, beta_ptr, duc_ptr,      # cosine: dE = alpha u + beta E, du += duc E  [b, n]
    delta_ptr,                         # dE_r . E_r [b, n]
    dsp_ptr,                           # out: per feature block, tau * d(loss)/d(q or key) [nblk_d, b, n]
    dv_ptr, du_ptr,                    # out: dv like v (zeroed by the caller); du [b, d] (cosine)
    ckr_ptr, ckrs_ptr, ckl_ptr, ckls_ptr,  # right / left checkpoints [b, nchunks, d], [nblk_d, b, nchunks]
    loc_ptr, locs_ptr,                 # scratch [b, chunk, d], [nblk_d, b, chunk]
    b, n, d, chunk, nchunks, tau: tl.float64,
    SHARED_V: tl.constexpr, COSINE: tl.constexpr, BA: tl.constexpr, BD: tl.constexpr,
):
    # Notation and formulas: csrc/cpu/softsort_scan_isa.h. The d-independent terms of the
    # scalar scans (H, tie counts) go into feature block 0's partial only.
    blk_d, rows, cols, rmask, cmask, m2, row_off, v_off, ck_off, loc_off, cks_off, locs_off = _program_tile(
        b, n, d, chunk, nchunks, SHARED_V, BA, BD)
    dsp_off = (blk_d * b + rows) * n
    first = tl.where(blk_d == 0, 1.0, 0.0)
    dt = ckr_ptr.dtype.element_ty
    u = tl.zeros([BA, BD], dtype=dt)
    if COSINE:
        u = tl.load(u_ptr + rows[:, None] * d + cols[None, :], mask=m2, other=0.0)
    _right_checkpoints(q_ptr, idx_ptr, v_ptr, v_off, row_off, rmask, cols, cmask, n, d, tau, chunk,
                       ckr_ptr, ck_off, ckrs_ptr, cks_off, BA, BD)
    # Left walk: E, G = dE / den, the left scans, dv's left part, the left half of ds.
    a_vec, gp_z, il_g, gp_g = (tl.zeros([BA, BD], dtype=dt), tl.zeros([BA, BD], dtype=dt),
                               tl.zeros([BA, BD], dtype=dt), tl.zeros([BA, BD], dtype=dt))
    du = tl.zeros([BA, BD], dtype=dt)
    a, gp, il_h, gp_h = (tl.zeros([BA], dtype=dt), tl.zeros([BA], dtype=dt), tl.zeros([BA], dtype=dt),
                         tl.zeros([BA], dtype=dt))
    for c in range(0, nchunks):
        start = c * chunk
        end = tl.minimum(start + chunk, n) - 1
        tl.store(ckl_ptr + ck_off[:, None] + c * d + cols[None, :], a_vec, mask=m2)  # left carry into c
        tl.store(ckls_ptr + cks_off + c, a, mask=rmask)
        _rebuild_right(q_ptr, idx_ptr, v_ptr, v_off, row_off, rmask, cols, cmask, n, d, tau, chunk, c, start,
                       end, ckr_ptr, ck_off, ckrs_ptr, cks_off, loc_ptr, loc_off, locs_ptr, locs_off)
        for r in range(start, end + 1):
            gamma, tie = _decay(q_ptr, row_off, r, rmask, tau)
            z, j = _values(v_ptr, v_off, idx_ptr, row_off, r, rmask, cols, cmask, d)
            a_vec = gamma[:, None] * a_vec + z
            a = gamma * a + 1.0
            gp_z = tie[:, None] * gp_z + z
            gp = tie * gp + 1.0
            right = tl.load(loc_ptr + loc_off[:, None] + (r - start) * d + cols[None, :], mask=m2, other=0.0)
            right_ones = tl.load(locs_ptr + locs_off + (r - start), mask=rmask, other=0.0)
            inv = 1.0 / (a + right_ones)
            e = (a_vec + right) * inv[:, None]
            g = _grad_e(grad_ptr, alpha_ptr, beta_ptr, rows, row_off, r, rmask, cols, m2, d, u, e, COSINE) * inv[:, None]
            if COSINE:
                du += tl.load(duc_ptr + row_off + r, mask=rmask, other=0.0)[:, None] * e
            h = tl.load(delta_ptr + row_off + r, mask=rmask, other=0.0) * inv
            pq = tl.sum(g * (right - a_vec + gp_z), axis=1)
            il_g = gamma[:, None] * il_g + g
            gp_g = tie[:, None] * gp_g + g
            pk = tl.sum(z * (il_g - gp_g), axis=1)
            il_h = gamma * il_h + h
            gp_h = tie * gp_h + h
            _add_dv(dv_ptr, v_off, j, cols, m2, d, il_g, SHARED_V)
            part = -(pq - first * h * (right_ones - a + gp)) + (pk - first * (il_h - gp_h))
            tl.store(dsp_ptr + dsp_off + r, part, mask=rmask)
    if COSINE:
        tl.store(du_ptr + rows[:, None] * d + cols[None, :], du, mask=m2)
    # Right walk, chunk by chunk backwards: B runs backwards, A is rebuilt from the left carries.
    b_vec, er_g, gs_g, gs_z = (tl.zeros([BA, BD], dtype=dt), tl.zeros([BA, BD], dtype=dt),
                               tl.zeros([BA, BD], dtype=dt), tl.zeros([BA, BD], dtype=dt))
    bs, er_h, gs_h, gs = (tl.zeros([BA], dtype=dt), tl.zeros([BA], dtype=dt), tl.zeros([BA], dtype=dt),
                          tl.zeros([BA], dtype=dt))
    for cc in range(0, nchunks):
        c = nchunks - 1 - cc
        start = c * chunk
        end = tl.minimum(start + chunk, n) - 1
        _rebuild_left(q_ptr, idx_ptr, v_ptr, v_off, row_off, rmask, cols, cmask, d, tau, c, start, end,
                      ckl_ptr, ck_off, ckls_ptr, cks_off, loc_ptr, loc_off, locs_ptr, locs_off)
        for step in range(0, end - start + 1):
            r = end - step
            gamma, tie = _decay(q_ptr, row_off, r, rmask, tau)
            z, j = _values(v_ptr, v_off, idx_ptr, row_off, r, rmask, cols, cmask, d)
            left = tl.load(loc_ptr + loc_off[:, None] + (r - start) * d + cols[None, :], mask=m2, other=0.0)
            left_ones = tl.load(locs_ptr + locs_off + (r - start), mask=rmask, other=1.0)  # a_r >= 1
            inv = 1.0 / (left_ones + bs)
            e = (left + b_vec) * inv[:, None]
            g = _grad_e(grad_ptr, alpha_ptr, beta_ptr, rows, row_off, r, rmask, cols, m2, d, u, e, COSINE) * inv[:, None]
            h = tl.load(delta_ptr + row_off + r, mask=rmask, other=0.0) * inv
            q2 = tl.sum(g * gs_z, axis=1)
            k2 = tl.sum(z * (er_g - gs_g), axis=1)
            _add_dv(dv_ptr, v_off, j, cols, m2, d, er_g, SHARED_V)
            part = tl.load(dsp_ptr + dsp_off + r, mask=rmask, other=0.0)
            part += (q2 - first * h * gs) + (-k2 + first * (er_h - gs_h))
            tl.store(dsp_ptr + dsp_off + r, part, mask=rmask)
            er_g = gamma[:, None] * (er_g + g)
            gs_g = tie[:, None] * (gs_g + g)
            gs_z = tie[:, None] * (gs_z + z)
            er_h = gamma * (er_h + h)
            gs_h = tie * (gs_h + h)
            gs = tie * (gs + 1.0)
            b_vec = gamma[:, None] * (b_vec + z)
            bs = gamma * (bs + 1.0)
