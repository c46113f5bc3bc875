"""Triton SoftSort kernels for rows with many distinct values; launched by ``triton_forms.py``.

The sorted positions of a row are cut into chunks of ``C``. Inside a chunk the Laplace kernel is a
dense ``[C, C]`` block (``K``, and ``Ks`` signed for the gradient), applied with ``tl.dot``; what
lies outside the chunk arrives through carries, as in state-space-model kernels: the left carry
``L = sum_{t < start} exp(-(q_t - q_{start-1}) / tau) X_t`` reaches position r with the factor
``exp(-(q_{start-1} - q_r) / tau) <= 1``, the right carry likewise from ``q_{end+1}``. Every factor is
<= 1, so nothing overflows. ``Ks`` must weigh a tie ``sign(0) = 0``: a tie group that straddles a
chunk edge is taken out of the carry by the tie carry ``TL = sum_{t < start, q_t = q_{start-1}} X_t``
(``TR`` on the right). One program owns one row and ``BD`` features and walks the chunks:

* forward: right carries backwards (stored per chunk), then forwards: ``E``, consumed at once;
* backward: right carries backwards; forwards: ``E``, ``G = dE / den``, ``H = dE.E / den`` and the
  left carries of ``Z, 1, G, H`` (stored per chunk); backwards again: the right carries of ``G``
  and ``H``, and ``dv = K G``, ``dq = -(G.Ks Z - H Ks 1) / tau``, ``dkey = -(Z.Ks G - Ks H) / tau``.

Checkpoint scratch: vectors ``[6, rows, nchunks, d]`` (Rz, TRz, Lz, TLz, LG, TLG), scalars
``[6, nb, rows, nchunks]`` (Rm, TRm, Lm, TLm, LH, TLH), ``rows`` the slots of one launch.
Scratch written by some threads is read by others after ``tl.debug_barrier()``.
"""
from __future__ import annotations

import triton
import triton.language as tl

from hashkern.ops.softsort.triton_laplace import (
    _add_dv,
    _cosine_coefficients,
    _decay_to,
    _laplace,
    _laplace_pair,
    _mm,
    _row_and_block,
    _values,
)

# Checkpoint slots: vectors Rz, TRz, Lz, TLz, LG, TLG; scalars Rm, TRm, Lm, TLm, LH, TLH.
RZ, TRZ, LZ, TLZ, LG, TLG = (tl.constexpr(i) for i in range(6))
RM, TRM, LM, TLM, LH, TLH = (tl.constexpr(i) for i in range(6))
VECTOR_CHECKPOINTS, SCALAR_CHECKPOINTS = 6, 6


@triton.jit
def _chunk(q_ptr, row_off, n, c, C: tl.constexpr):
    """Chunk c: positions ``r [C]``, mask, values, and the scalars ``q_first, q_last`` (its own ends),
    ``q_left = q[start - 1]``, ``q_right = q[end + 1]`` with whether they exist."""
    start = c * C
    r = start + tl.arange(0, C)
    rmask = r < n
    qr = tl.load(q_ptr + row_off + r, mask=rmask, other=0.0)
    end = tl.minimum(start + C, n) - 1
    q_first = tl.load(q_ptr + row_off + start)
    q_last = tl.load(q_ptr + row_off + end)
    q_left = tl.load(q_ptr + row_off + tl.maximum(start - 1, 0))
    q_right = tl.load(q_ptr + row_off + tl.minimum(end + 1, n - 1))
    return r, rmask, qr, q_first, q_last, q_left, start > 0, q_right, end + 1 < n


@triton.jit
def _vec_at(ptr, k, slots, slot, nchunks, c, d, cols):
    return ptr + ((k * slots + slot) * nchunks + c) * d + cols


@triton.jit
def _scalar_at(ptr, k, nb, blk_d, slots, slot, nchunks, c):
    return ptr + ((k * nb + blk_d) * slots + slot) * nchunks + c


@triton.jit
def _carry_vec(weight, tie, x, decay, keep, carry, tie_carry):
    """Carry past a chunk: ``sum_t weight_t x_t + decay carry`` and ``sum_t tie_t x_t + keep tie_carry``."""
    return (tl.sum(weight[:, None] * x, 0) + decay * carry, tl.sum(tie[:, None] * x, 0) + keep * tie_carry)


@triton.jit
def _carry_scalar(weight, tie, x, decay, keep, carry, tie_carry):
    return tl.sum(weight * x, 0) + decay * carry, tl.sum(tie * x, 0) + keep * tie_carry


@triton.jit
def _right_carries(q_ptr, idx_ptr, v_ptr, v_off, row_off, n, d, cols, cmask, tau: tl.float64, nchunks,
                   ck_ptr, cks_ptr, nb, blk_d, slots, slot, TIES: tl.constexpr, C: tl.constexpr, BD: tl.constexpr):
    """Backwards over the chunks: store the right carries each chunk receives (and with TIES the tie carries)."""
    dt = q_ptr.dtype.element_ty
    rz, trz = tl.zeros([BD], dtype=dt), tl.zeros([BD], dtype=dt)
    rm, trm = tl.zeros([], dtype=dt), tl.zeros([], dtype=dt)
    for cc in range(0, nchunks):
        c = nchunks - 1 - cc
        r, rmask, qr, q_first, q_last, q_left, has_left, q_right, has_right = _chunk(q_ptr, row_off, n, c, C)
        tl.store(_vec_at(ck_ptr, RZ, slots, slot, nchunks, c, d, cols), rz, mask=cmask)
        tl.store(_scalar_at(cks_ptr, RM, nb, blk_d, slots, slot, nchunks, c), rm)
        if TIES:
            tl.store(_vec_at(ck_ptr, TRZ, slots, slot, nchunks, c, d, cols), trz, mask=cmask)
            tl.store(_scalar_at(cks_ptr, TRM, nb, blk_d, slots, slot, nchunks, c), trm)
        z, _ = _values(v_ptr, v_off, idx_ptr, row_off, r, rmask, cols, cmask, d)
        weight = _decay_to(q_first, qr, rmask, tau)
        tie = ((qr == q_first) & rmask).to(dt)
        decay = _decay_to(q_first, q_right, has_right, tau)
        keep = ((q_right == q_first) & has_right).to(dt)
        rz, trz = _carry_vec(weight, tie, z, decay, keep, rz, trz)
        rm, trm = _carry_scalar(weight, tie, rmask.to(dt), decay, keep, rm, trm)
    tl.debug_barrier()  # stored by some threads, read by others


@triton.jit
def _chunk_e(k, z, dl, dr, lz, lm, rz, rm, rmask, IEEE: tl.constexpr):
    """``E [C, BD]`` and ``den [C]`` of a chunk from its block and its carries."""
    num = _mm(k, z, IEEE) + dl[:, None] * lz[None, :] + dr[:, None] * rz[None, :]
    den = tl.where(rmask, tl.sum(k, 1) + dl * lm + dr * rm, 1.0)
    return num / den[:, None], den


@triton.jit
def _signed(own, dl, dr, tie_l, tie_r, left, tie_left, right, tie_right):
    """Signed Laplace sum (strictly right minus strictly left) ``[C, BD]`` from the chunk's own part."""
    return (own + (dr[:, None] * right[None, :] - tie_r[:, None] * tie_right[None, :])
            - (dl[:, None] * left[None, :] - tie_l[:, None] * tie_left[None, :]))


@triton.jit
def _signed_scalar(own, dl, dr, tie_l, tie_r, left, tie_left, right, tie_right):
    return own + (dr * right - tie_r * tie_right) - (dl * left - tie_l * tie_left)


@triton.jit
def _softsort_chunked_fwd_kernel(
    rows_ptr,                          # [slots] the rows this launch serves
    q_ptr, idx_ptr, v_ptr, u_ptr,      # q, idx [b, n]; v [1 or b, n, d]; u [b, d] (cosine)
    out_ptr,                           # gather: E [b, n, d]
    ee_ptr, eu_ptr,                    # cosine: |E_r|^2, E_r.u per feature block [nb, b, n]; FINAL: norms, c
    ck_ptr, cks_ptr,                   # checkpoints [6, slots, nchunks, d], [6, nb, slots, nchunks]
    b, n, d, slots, nchunks, tau: tl.float64, eps: tl.float64,
    SHARED_V: tl.constexpr, COSINE: tl.constexpr, FINAL: tl.constexpr,
    C: tl.constexpr, BD: tl.constexpr, IEEE: tl.constexpr,
):
    row, slot, blk_d, cols, cmask, row_off, v_off = _row_and_block(rows_ptr, n, d, SHARED_V, BD)
    dt = q_ptr.dtype.element_ty
    nb = tl.cdiv(d, BD)
    _right_carries(q_ptr, idx_ptr, v_ptr, v_off, row_off, n, d, cols, cmask, tau, nchunks, ck_ptr, cks_ptr,
                   nb, blk_d, slots, slot, False, C, BD)
    u = tl.zeros([BD], dtype=dt)
    if COSINE:
        u = tl.load(u_ptr + row * d + cols, mask=cmask, other=0.0)
    lz = tl.zeros([BD], dtype=dt)
    lm = tl.zeros([], dtype=dt)
    for c in range(0, nchunks):
        r, rmask, qr, q_first, q_last, q_left, has_left, q_right, has_right = _chunk(q_ptr, row_off, n, c, C)
        z, _ = _values(v_ptr, v_off, idx_ptr, row_off, r, rmask, cols, cmask, d)
        rz = tl.load(_vec_at(ck_ptr, RZ, slots, slot, nchunks, c, d, cols), mask=cmask, other=0.0)
        rm = tl.load(_scalar_at(cks_ptr, RM, nb, blk_d, slots, slot, nchunks, c))
        k = _laplace(qr, qr, rmask, rmask, tau, False)
        dl = _decay_to(q_left, qr, rmask & has_left, tau)
        dr = _decay_to(q_right, qr, rmask & has_right, tau)
        e, den = _chunk_e(k, z, dl, dr, lz, lm, rz, rm, rmask, IEEE)
        if COSINE:
            pee = tl.sum(e * e, 1)
            peu = tl.sum(e * u[None, :], 1)
            if FINAL:
                norm = tl.sqrt(pee)
                pee = norm
                peu = peu / tl.maximum(norm, tl.cast(eps, dt))
            tl.store(ee_ptr + (blk_d * b + row) * n + r, pee, mask=rmask)
            tl.store(eu_ptr + (blk_d * b + row) * n + r, peu, mask=rmask)
        else:
            tl.store(out_ptr + (row_off + r)[:, None] * d + cols[None, :], e, mask=rmask[:, None] & cmask[None, :])
        weight = _decay_to(q_last, qr, rmask, tau)
        decay = _decay_to(q_left, q_last, has_left, tau)
        lz = tl.sum(weight[:, None] * z, 0) + decay * lz
        lm = tl.sum(weight, 0) + decay * lm


@triton.jit
def _chunk_grad(k, z, dl, dr, lz, lm, rz, rm, rmask, cmask, u, grad_ptr, c_ptr, norms_ptr, delta_ptr, row_off,
                r, cols, d, eps, COSINE: tl.constexpr, IEEE: tl.constexpr):
    """A chunk's ``E``, ``G = dE / den [C, BD]``, ``H = dE.E / den [C]`` and (cosine) du's coefficient."""
    e, den = _chunk_e(k, z, dl, dr, lz, lm, rz, rm, rmask, IEEE)
    if COSINE:
        dc = tl.load(grad_ptr + row_off + r, mask=rmask, other=0.0)
        cr = tl.load(c_ptr + row_off + r, mask=rmask, other=0.0)
        nr = tl.load(norms_ptr + row_off + r, mask=rmask, other=1.0)
        alpha, beta, delta, du_coef = _cosine_coefficients(dc, cr, nr, eps)
        grad = alpha[:, None] * u[None, :] + beta[:, None] * e
    else:
        grad = tl.load(grad_ptr + (row_off + r)[:, None] * d + cols[None, :],
                       mask=rmask[:, None] & cmask[None, :], other=0.0)
        delta = tl.load(delta_ptr + row_off + r, mask=rmask, other=0.0)
        du_coef = delta * 0
    return e, grad / den[:, None], delta / den, du_coef


@triton.jit
def _softsort_chunked_bwd_kernel(
    rows_ptr,                          # [slots] the rows this launch serves
    q_ptr, idx_ptr, v_ptr, u_ptr,      # as the forward
    grad_ptr,                          # gather: dE [b, n, d] (rank order); cosine: dc [b, n]
    c_ptr, norms_ptr,                  # cosine: the forward's c, norms [b, n]
    delta_ptr,                         # gather: dE_r . E_r [b, n]
    ds_ptr,                            # out: per feature block, d(loss)/ds in the order of s [nb, b, n]
    dv_ptr, du_ptr,                    # out: dv like v (zeroed by the caller when shared); du [b, d]
    ck_ptr, cks_ptr,                   # checkpoints [6, slots, nchunks, d], [6, nb, slots, nchunks]
    b, n, d, slots, nchunks, tau: tl.float64, eps: tl.float64,
    SHARED_V: tl.constexpr, COSINE: tl.constexpr,
    C: tl.constexpr, BD: tl.constexpr, IEEE: tl.constexpr,
):
    row, slot, blk_d, cols, cmask, row_off, v_off = _row_and_block(rows_ptr, n, d, SHARED_V, BD)
    dt = q_ptr.dtype.element_ty
    nb = tl.cdiv(d, BD)
    first = tl.where(blk_d == 0, 1.0, 0.0).to(dt)
    eps_t = tl.cast(eps, dt)
    _right_carries(q_ptr, idx_ptr, v_ptr, v_off, row_off, n, d, cols, cmask, tau, nchunks, ck_ptr, cks_ptr,
                   nb, blk_d, slots, slot, True, C, BD)
    u = tl.zeros([BD], dtype=dt)
    if COSINE:
        u = tl.load(u_ptr + row * d + cols, mask=cmask, other=0.0)
    # Forwards: the left carries of Z, 1, G, H into every chunk, and du.
    lz, tlz, lg, tlg = (tl.zeros([BD], dtype=dt), tl.zeros([BD], dtype=dt), tl.zeros([BD], dtype=dt),
                        tl.zeros([BD], dtype=dt))
    lm, tlm, lh, tlh = (tl.zeros([], dtype=dt), tl.zeros([], dtype=dt), tl.zeros([], dtype=dt),
                        tl.zeros([], dtype=dt))
    du = tl.zeros([BD], dtype=dt)
    for c in range(0, nchunks):
        r, rmask, qr, q_first, q_last, q_left, has_left, q_right, has_right = _chunk(q_ptr, row_off, n, c, C)
        tl.store(_vec_at(ck_ptr, LZ, slots, slot, nchunks, c, d, cols), lz, mask=cmask)
        tl.store(_vec_at(ck_ptr, TLZ, slots, slot, nchunks, c, d, cols), tlz, mask=cmask)
        tl.store(_vec_at(ck_ptr, LG, slots, slot, nchunks, c, d, cols), lg, mask=cmask)
        tl.store(_vec_at(ck_ptr, TLG, slots, slot, nchunks, c, d, cols), tlg, mask=cmask)
        tl.store(_scalar_at(cks_ptr, LM, nb, blk_d, slots, slot, nchunks, c), lm)
        tl.store(_scalar_at(cks_ptr, TLM, nb, blk_d, slots, slot, nchunks, c), tlm)
        tl.store(_scalar_at(cks_ptr, LH, nb, blk_d, slots, slot, nchunks, c), lh)
        tl.store(_scalar_at(cks_ptr, TLH, nb, blk_d, slots, slot, nchunks, c), tlh)
        z, _ = _values(v_ptr, v_off, idx_ptr, row_off, r, rmask, cols, cmask, d)
        rz = tl.load(_vec_at(ck_ptr, RZ, slots, slot, nchunks, c, d, cols), mask=cmask, other=0.0)
        rm = tl.load(_scalar_at(cks_ptr, RM, nb, blk_d, slots, slot, nchunks, c))
        k = _laplace(qr, qr, rmask, rmask, tau, False)
        dl = _decay_to(q_left, qr, rmask & has_left, tau)
        dr = _decay_to(q_right, qr, rmask & has_right, tau)
        e, g, h, du_coef = _chunk_grad(k, z, dl, dr, lz, lm, rz, rm, rmask, cmask, u, grad_ptr, c_ptr, norms_ptr,
                                       delta_ptr, row_off, r, cols, d, eps_t, COSINE, IEEE)
        du += tl.sum(du_coef[:, None] * e, 0)
        weight = _decay_to(q_last, qr, rmask, tau)
        tie = ((qr == q_last) & rmask).to(dt)
        decay = _decay_to(q_left, q_last, has_left, tau)
        keep = ((q_left == q_last) & has_left).to(dt)
        lz, tlz = _carry_vec(weight, tie, z, decay, keep, lz, tlz)
        lg, tlg = _carry_vec(weight, tie, g, decay, keep, lg, tlg)
        lm, tlm = _carry_scalar(weight, tie, rmask.to(dt), decay, keep, lm, tlm)
        lh, tlh = _carry_scalar(weight, tie, h, decay, keep, lh, tlh)
    if COSINE:
        tl.store(du_ptr + row * d + cols, du, mask=cmask)
    tl.debug_barrier()
    # Backwards: the right carries of G and H; dv, ds.
    rg, trg = tl.zeros([BD], dtype=dt), tl.zeros([BD], dtype=dt)
    rh, trh = tl.zeros([], dtype=dt), tl.zeros([], dtype=dt)
    for cc in range(0, nchunks):
        c = nchunks - 1 - cc
        r, rmask, qr, q_first, q_last, q_left, has_left, q_right, has_right = _chunk(q_ptr, row_off, n, c, C)
        m2 = rmask[:, None] & cmask[None, :]
        lz = tl.load(_vec_at(ck_ptr, LZ, slots, slot, nchunks, c, d, cols), mask=cmask, other=0.0)
        tlz = tl.load(_vec_at(ck_ptr, TLZ, slots, slot, nchunks, c, d, cols), mask=cmask, other=0.0)
        lg = tl.load(_vec_at(ck_ptr, LG, slots, slot, nchunks, c, d, cols), mask=cmask, other=0.0)
        tlg = tl.load(_vec_at(ck_ptr, TLG, slots, slot, nchunks, c, d, cols), mask=cmask, other=0.0)
        rz = tl.load(_vec_at(ck_ptr, RZ, slots, slot, nchunks, c, d, cols), mask=cmask, other=0.0)
        trz = tl.load(_vec_at(ck_ptr, TRZ, slots, slot, nchunks, c, d, cols), mask=cmask, other=0.0)
        lm = tl.load(_scalar_at(cks_ptr, LM, nb, blk_d, slots, slot, nchunks, c))
        tlm = tl.load(_scalar_at(cks_ptr, TLM, nb, blk_d, slots, slot, nchunks, c))
        lh = tl.load(_scalar_at(cks_ptr, LH, nb, blk_d, slots, slot, nchunks, c))
        tlh = tl.load(_scalar_at(cks_ptr, TLH, nb, blk_d, slots, slot, nchunks, c))
        rm = tl.load(_scalar_at(cks_ptr, RM, nb, blk_d, slots, slot, nchunks, c))
        trm = tl.load(_scalar_at(cks_ptr, TRM, nb, blk_d, slots, slot, nchunks, c))
        z, j = _values(v_ptr, v_off, idx_ptr, row_off, r, rmask, cols, cmask, d)
        k, ks = _laplace_pair(qr, qr, rmask, rmask, tau)
        dl = _decay_to(q_left, qr, rmask & has_left, tau)
        dr = _decay_to(q_right, qr, rmask & has_right, tau)
        tie_l = ((qr == q_left) & rmask & has_left).to(dt)
        tie_r = ((qr == q_right) & rmask & has_right).to(dt)
        e, g, h, du_coef = _chunk_grad(k, z, dl, dr, lz, lm, rz, rm, rmask, cmask, u, grad_ptr, c_ptr, norms_ptr,
                                       delta_ptr, row_off, r, cols, d, eps_t, COSINE, IEEE)
        k_g = _mm(k, g, IEEE) + dl[:, None] * lg[None, :] + dr[:, None] * rg[None, :]
        _add_dv(dv_ptr, v_off, j, cols, m2, d, k_g, SHARED_V)
        ks_g = _signed(_mm(ks, g, IEEE), dl, dr, tie_l, tie_r, lg, tlg, rg, trg)
        ks_z = _signed(_mm(ks, z, IEEE), dl, dr, tie_l, tie_r, lz, tlz, rz, trz)
        ks_h = _signed_scalar(tl.sum(ks * h[None, :], 1), dl, dr, tie_l, tie_r, lh, tlh, rh, trh)
        ks_m = _signed_scalar(tl.sum(ks, 1), dl, dr, tie_l, tie_r, lm, tlm, rm, trm)
        dq = -(tl.sum(g * ks_z, 1) - first * h * ks_m)
        dkey = -(tl.sum(z * ks_g, 1) - first * ks_h)
        total = ((dq + dkey).to(tl.float64) / tau).to(dt)
        tl.store(ds_ptr + (blk_d * b + row) * n + j, total, mask=rmask)
        weight = _decay_to(q_first, qr, rmask, tau)
        tie = ((qr == q_first) & rmask).to(dt)
        decay = _decay_to(q_first, q_right, has_right, tau)
        keep = ((q_right == q_first) & has_right).to(dt)
        rg, trg = _carry_vec(weight, tie, g, decay, keep, rg, trg)
        rh, trh = _carry_scalar(weight, tie, h, decay, keep, rh, trh)
