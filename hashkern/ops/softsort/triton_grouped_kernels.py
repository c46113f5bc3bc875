"""Triton SoftSort kernels for rows with few distinct values (Hamming similarities); launched by
``triton_forms.py``. The same algebra as the C++ grouped kernel (``csrc/cpu/softsort_groups_isa.h``).

A row of n sorted similarities of K-bit codes falls into g <= K + 1 tie groups; every position of
a group gathers the same ``E``. One program owns one row and ``BD`` features. It walks the sorted
positions in blocks of ``BN`` with nothing carried between blocks but the running group number:
each block forms its one-hot ``[G, BN]`` group matrix and adds its values' group sums with a one-hot
product (``S = onehot @ Zσ``, two TF32 products; ``G`` = the groups padded to a power of two). The scans over the
groups are dense Laplace products (``K S``, ``Ks S``, ``K G``, ``Ks G``), formed in row blocks of
``RB`` groups so that one ``[RB, G]`` block of the ``[G, G]`` kernel is live at a time (the whole
table beside the ``[G, BD]`` tiles spilled registers). Per-position results are read back from
``[G]`` tables with the transposed one-hot, and ``[G, BD]`` tables (the forward's ``E``, the
backward's ``K G``, ``Ks G``, ``Ks S``) from a scratch ``[tables, rows, G, d]`` written once per
program and loaded by each position's group:

* forward: one pass over the values (the group sums), one over the positions (write E or the
  cosine's ``|E|^2`` and ``E.u``);
* backward: the group sums again, a pass over the positions' gradients (their group sums), and a
  pass over values and positions together (dv, ds).

Group value ``Q_j`` is the value at the group's first position (exact), ``m_j`` its size,
``den = K m``, ``E = K S / den``. With ``G_j = (sum of dE over the group) / den_j`` and
``H_j = (sum of dE.E) / den_j``: ``dv[t] = (K G)_{g(t)}``, ``dq_r = -(dE_r.(Ks S)_j - delta_r (Ks m)_j)
/ (den_j tau)``, ``dkey_t = -(Z_t.(Ks G)_j - (Ks H)_j) / tau``, ``ds[idx[r]] = dq_r + dkey_r``.
Feature-independent terms go into feature block 0's partial only.
"""
from __future__ import annotations

import triton
import triton.language as tl

from hashkern.ops.softsort.triton_laplace import (
    _add_dv,
    _cosine_coefficients,
    _laplace_pair,
    _mm,
    _onehot_mm,
    _row_and_block,
    _tf32_head,
    _values,
)


@triton.jit
def _rank_groups(q_ptr, row_off, r, rmask, carry):
    """Group numbers ``[BN]`` (int32) of sorted positions ``r``, given the group of ``r[0] - 1``
    (``carry``, -1 before the first block); also the values, the group-start flags, the new carry."""
    qr = tl.load(q_ptr + row_off + r, mask=rmask, other=0.0)
    qp = tl.load(q_ptr + row_off + tl.maximum(r - 1, 0), mask=rmask, other=0.0)
    new = ((r == 0) | (qr != qp)) & rmask
    gid = carry + tl.cumsum(new.to(tl.int32), 0)
    return gid, qr, new, carry + tl.sum(new.to(tl.int32), 0)


# The [G] tables of a program, in the scalar scratch [slots, nb, SCALARS, G]: loaded whole where a product needs
# them and by each position's group where a position does (kept as [G] vectors, they were replicated into
# every thread's registers).
Q_GROUP, SIZE, DEN, KS_M, KS_H, U_KS, E_KS = (tl.constexpr(i) for i in range(7))
EE, EU = DEN, KS_M  # the forward's cosine tables
SCALAR_TABLES = 8
SCALARS = tl.constexpr(SCALAR_TABLES)
# columns of the per-position statistics summed by group with one product (a tl.dot operand: >= 16)
STATS = tl.constexpr(16)


@triton.jit
def _scalar_at(sc_ptr, which, slot, blk_d, nb, grp, G: tl.constexpr):
    """Pointers to entries ``grp`` of [G] table ``which`` of this program (scratch [slots, nb, SCALARS, G])."""
    return sc_ptr + ((slot * nb + blk_d) * SCALARS + which) * G + grp.to(tl.int64)


@triton.jit
def _column(stats, cols, k):
    """Column ``k`` of a ``[G, STATS]`` table: ``[G]``."""
    return tl.sum(tl.where(cols[None, :] == k, stats, 0.0), 1)


@triton.jit
def _group_tables(q_ptr, idx_ptr, v_ptr, row_off, v_off, n, d, cols, cmask, sc_ptr, slot, blk_d, nb,
                  G: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, IEEE: tl.constexpr):
    """One pass over the row: ``S [G, BD]`` group sums of the values; the group values ``Q`` and sizes ``m``
    go to the scalar scratch. Q is summed exactly: one term per group, fp32 split into three TF32-exact parts."""
    dt = q_ptr.dtype.element_ty
    groups = tl.arange(0, G)
    stat_cols = tl.arange(0, STATS)
    s_sum = tl.zeros([G, BD], dtype=dt)
    stats = tl.zeros([G, STATS], dtype=dt)
    carry = tl.zeros([], dtype=tl.int32) - 1
    for r0 in range(0, n, BN):
        r = r0 + tl.arange(0, BN)
        rmask = r < n
        gid, qr, new, carry = _rank_groups(q_ptr, row_off, r, rmask, carry)
        onehot = ((groups[:, None] == gid[None, :]) & rmask[None, :]).to(dt)
        z, _ = _values(v_ptr, v_off, idx_ptr, row_off, r, rmask, cols, cmask, d)
        s_sum += _onehot_mm(onehot, z, IEEE)
        first = tl.where(new, qr, 0.0)
        if IEEE:
            parts = tl.where(stat_cols[None, :] == 1, first[:, None], 0.0)
            stats += tl.dot(onehot, parts + tl.where(stat_cols[None, :] == 0, rmask.to(dt)[:, None], 0.0),
                            input_precision="ieee", out_dtype=dt)
        else:
            q1 = _tf32_head(first)
            q2 = _tf32_head(first - q1)
            parts = tl.where(stat_cols[None, :] == 0, rmask.to(dt)[:, None],
                             tl.where(stat_cols[None, :] == 1, q1[:, None],
                                      tl.where(stat_cols[None, :] == 2, q2[:, None],
                                               tl.where(stat_cols[None, :] == 3, (first - q1 - q2)[:, None], 0.0))))
            stats += tl.dot(onehot, parts, input_precision="tf32")
    q_group = (_column(stats, stat_cols, 1) + _column(stats, stat_cols, 2)) + _column(stats, stat_cols, 3)
    tl.store(_scalar_at(sc_ptr, Q_GROUP, slot, blk_d, nb, groups, G), q_group)
    tl.store(_scalar_at(sc_ptr, SIZE, slot, blk_d, nb, groups, G), _column(stats, stat_cols, 0))
    tl.debug_barrier()  # stored by some threads, loaded by others
    return s_sum


@triton.jit
def _block_laplace(sc_ptr, slot, blk_d, nb, groups, blk, tau: tl.float64, G: tl.constexpr):
    """Rows ``blk [RB]`` of the groups' Laplace kernel, ``K, Ks [RB, G]`` (one exponential per entry),
    with ``den = K m`` (1 on rows that hold no group) and ``Ks m``, ``[RB]``."""
    q_group = tl.load(_scalar_at(sc_ptr, Q_GROUP, slot, blk_d, nb, groups, G))
    m = tl.load(_scalar_at(sc_ptr, SIZE, slot, blk_d, nb, groups, G))
    valid_blk = tl.load(_scalar_at(sc_ptr, SIZE, slot, blk_d, nb, blk, G)) > 0
    k, ks = _laplace_pair(tl.load(_scalar_at(sc_ptr, Q_GROUP, slot, blk_d, nb, blk, G)), q_group, valid_blk, m > 0,
                          tau)
    den = tl.where(valid_blk, tl.sum(k * m[None, :], 1), 1.0)
    return k, ks, den, tl.sum(ks * m[None, :], 1)


@triton.jit
def _table_rows(tab_ptr, which, slots, slot, grp, d, cols, G: tl.constexpr):
    """Pointers ``[M, BD]`` to rows ``grp [M]`` of table ``which`` of this program's slot in the
    scratch ``[tables, slots, G, d]``."""
    return tab_ptr + ((which * slots + slot) * G + grp.to(tl.int64))[:, None] * d + cols[None, :]


@triton.jit
def _softsort_grouped_fwd_kernel(
    rows_ptr,                          # [slots] the rows this launch serves
    q_ptr, idx_ptr, v_ptr, u_ptr,      # q, idx [b, n]; v [1 or b, n, d]; u [b, d] (cosine)
    out_ptr,                           # gather: E [b, n, d]
    ee_ptr, eu_ptr,                    # cosine: |E_r|^2, E_r.u per feature block [nb, b, n]; FINAL: norms, c
    tab_ptr,                           # gather: scratch for the E table [1, slots, G, d]
    sc_ptr,                            # scratch: the [G] tables [slots, nb, SCALARS, G]
    b, n, d, slots, tau: tl.float64, eps: tl.float64,
    SHARED_V: tl.constexpr, COSINE: tl.constexpr, FINAL: tl.constexpr,
    G: tl.constexpr, RB: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, IEEE: tl.constexpr,
):
    row, slot, blk_d, cols, cmask, row_off, v_off = _row_and_block(rows_ptr, n, d, SHARED_V, BD)
    dt = q_ptr.dtype.element_ty
    nb = tl.cdiv(d, BD)
    s_sum = _group_tables(q_ptr, idx_ptr, v_ptr, row_off, v_off, n, d, cols, cmask, sc_ptr, slot, blk_d, nb,
                          G, BN, BD, IEEE)
    groups = tl.arange(0, G)
    u = tl.zeros([BD], dtype=dt)
    if COSINE:
        u = tl.load(u_ptr + row * d + cols, mask=cmask, other=0.0)
    # E = K S / den in row blocks of RB groups: one [RB, G] block of K live at a time.
    for g0 in range(0, G, RB):
        blk = g0 + tl.arange(0, RB)
        k, _, den, _ = _block_laplace(sc_ptr, slot, blk_d, nb, groups, blk, tau, G)
        e = _mm(k, s_sum, IEEE) / den[:, None]
        if COSINE:
            tl.store(_scalar_at(sc_ptr, EE, slot, blk_d, nb, blk, G), tl.sum(e * e, 1))
            tl.store(_scalar_at(sc_ptr, EU, slot, blk_d, nb, blk, G), tl.sum(e * u[None, :], 1))
        else:
            tl.store(_table_rows(tab_ptr, 0, slots, slot, blk, d, cols, G), e, mask=cmask[None, :])
    tl.debug_barrier()  # the tables were stored by some threads and are read by others
    carry = tl.zeros([], dtype=tl.int32) - 1
    for r0 in range(0, n, BN):
        r = r0 + tl.arange(0, BN)
        rmask = r < n
        gid, _, _, carry = _rank_groups(q_ptr, row_off, r, rmask, carry)
        if COSINE:
            pee = tl.load(_scalar_at(sc_ptr, EE, slot, blk_d, nb, gid, G), mask=rmask, other=0.0)
            peu = tl.load(_scalar_at(sc_ptr, EU, slot, blk_d, nb, gid, G), mask=rmask, other=0.0)
            at = (blk_d * b + row) * n + r
            if FINAL:  # one feature block: the norm and the cosine directly
                norm = tl.sqrt(pee)
                pee = norm
                peu = peu / tl.maximum(norm, tl.cast(eps, dt))
            tl.store(ee_ptr + at, pee, mask=rmask)
            tl.store(eu_ptr + at, peu, mask=rmask)
        else:
            m2 = rmask[:, None] & cmask[None, :]
            er = tl.load(_table_rows(tab_ptr, 0, slots, slot, gid, d, cols, G), mask=m2, other=0.0)
            tl.store(out_ptr + (row_off + r)[:, None] * d + cols[None, :], er, mask=m2)


@triton.jit
def _softsort_grouped_bwd_kernel(
    rows_ptr,                          # [slots] the rows this launch serves
    q_ptr, idx_ptr, v_ptr, u_ptr,      # as the forward
    grad_ptr,                          # gather: dE [b, n, d] (rank order); cosine: dc [b, n]
    c_ptr, norms_ptr,                  # cosine: the forward's c, norms [b, n]
    delta_ptr,                         # gather: dE_r . E_r [b, n]
    ds_ptr,                            # out: per feature block, d(loss)/ds in the order of s [nb, b, n]
    dv_ptr, du_ptr,                    # out: dv like v (zeroed by the caller when shared); du [b, d]
    tab_ptr,                           # scratch: the K G, Ks G and Ks S (cosine: E) tables [3, slots, G, d]
    sc_ptr,                            # scratch: the [G] tables [slots, nb, SCALARS, G]
    b, n, d, slots, tau: tl.float64, eps: tl.float64,
    SHARED_V: tl.constexpr, COSINE: tl.constexpr,
    G: tl.constexpr, RB: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, IEEE: tl.constexpr,
):
    row, slot, blk_d, cols, cmask, row_off, v_off = _row_and_block(rows_ptr, n, d, SHARED_V, BD)
    dt = q_ptr.dtype.element_ty
    nb = tl.cdiv(d, BD)
    first = tl.where(blk_d == 0, 1.0, 0.0).to(dt)
    eps_t = tl.cast(eps, dt)
    s_sum = _group_tables(q_ptr, idx_ptr, v_ptr, row_off, v_off, n, d, cols, cmask, sc_ptr, slot, blk_d, nb,
                          G, BN, BD, IEEE)
    groups = tl.arange(0, G)
    u = tl.zeros([BD], dtype=dt)
    if COSINE:
        u = tl.load(u_ptr + row * d + cols, mask=cmask, other=0.0)
    # Row blocks of the [G, G] kernels against the value sums, one product a sweep: den, Ks m and Ks S (the
    # cosine: E first, parked in table 2 for the gradient's group sums, then only Ks S's products with u and E).
    for g0 in range(0, G, RB):
        blk = g0 + tl.arange(0, RB)
        k, ks, den, ks_m = _block_laplace(sc_ptr, slot, blk_d, nb, groups, blk, tau, G)
        tl.store(_scalar_at(sc_ptr, DEN, slot, blk_d, nb, blk, G), den)
        tl.store(_scalar_at(sc_ptr, KS_M, slot, blk_d, nb, blk, G), ks_m)
        at = _table_rows(tab_ptr, 2, slots, slot, blk, d, cols, G)
        if COSINE:
            tl.store(at, _mm(k, s_sum, IEEE) / den[:, None], mask=cmask[None, :])
        else:
            tl.store(at, _mm(ks, s_sum, IEEE), mask=cmask[None, :])
    if COSINE:
        tl.debug_barrier()  # E was stored by some threads and is read by others
        for g0 in range(0, G, RB):
            blk = g0 + tl.arange(0, RB)
            _, ks, _, _ = _block_laplace(sc_ptr, slot, blk_d, nb, groups, blk, tau, G)
            ks_s = _mm(ks, s_sum, IEEE)
            e = tl.load(_table_rows(tab_ptr, 2, slots, slot, blk, d, cols, G), mask=cmask[None, :], other=0.0)
            tl.store(_scalar_at(sc_ptr, U_KS, slot, blk_d, nb, blk, G), tl.sum(u[None, :] * ks_s, 1))
            tl.store(_scalar_at(sc_ptr, E_KS, slot, blk_d, nb, blk, G), tl.sum(e * ks_s, 1))
    # Group sums of the positions' gradients: sum dE (gather) or the cosine's alpha, beta (dE = alpha u + beta E)
    # and du's coefficient, and dE.E, the scalars through one [G, STATS] product.
    stat_cols = tl.arange(0, STATS)
    g_sum = tl.zeros([G, BD], dtype=dt)
    stats = tl.zeros([G, STATS], dtype=dt)
    carry = tl.zeros([], dtype=tl.int32) - 1
    for r0 in range(0, n, BN):
        r = r0 + tl.arange(0, BN)
        rmask = r < n
        gid, _, _, carry = _rank_groups(q_ptr, row_off, r, rmask, carry)
        onehot = ((groups[:, None] == gid[None, :]) & rmask[None, :]).to(dt)
        if COSINE:
            dc = tl.load(grad_ptr + row_off + r, mask=rmask, other=0.0)
            cr = tl.load(c_ptr + row_off + r, mask=rmask, other=0.0)
            nr = tl.load(norms_ptr + row_off + r, mask=rmask, other=1.0)
            alpha, beta, delta, du_coef = _cosine_coefficients(dc, cr, nr, eps_t)
            parts = tl.where(stat_cols[None, :] == 0, delta[:, None],
                             tl.where(stat_cols[None, :] == 1, alpha[:, None],
                                      tl.where(stat_cols[None, :] == 2, beta[:, None],
                                               tl.where(stat_cols[None, :] == 3, du_coef[:, None], 0.0))))
        else:
            grad = tl.load(grad_ptr + (row_off + r)[:, None] * d + cols[None, :],
                           mask=rmask[:, None] & cmask[None, :], other=0.0)
            g_sum += _onehot_mm(onehot, grad, IEEE)
            delta = tl.load(delta_ptr + row_off + r, mask=rmask, other=0.0)
            parts = tl.where(stat_cols[None, :] == 0, delta[:, None], 0.0)
        stats += _onehot_mm(onehot, parts, IEEE)
    tl.debug_barrier()  # E, den were stored by some threads and are read by others
    den = tl.load(_scalar_at(sc_ptr, DEN, slot, blk_d, nb, groups, G))
    if COSINE:
        e = tl.load(_table_rows(tab_ptr, 2, slots, slot, groups, d, cols, G), mask=cmask[None, :], other=0.0)
        g_sum = _column(stats, stat_cols, 1)[:, None] * u[None, :] + _column(stats, stat_cols, 2)[:, None] * e
        tl.store(du_ptr + row * d + cols, tl.sum(_column(stats, stat_cols, 3)[:, None] * e, 0), mask=cmask)
    g_sum = g_sum / den[:, None]
    h = _column(stats, stat_cols, 0) / den
    # Row blocks again: K G and Ks G to the scratch, Ks H.
    for g0 in range(0, G, RB):
        blk = g0 + tl.arange(0, RB)
        k, ks, _, _ = _block_laplace(sc_ptr, slot, blk_d, nb, groups, blk, tau, G)
        tl.store(_table_rows(tab_ptr, 0, slots, slot, blk, d, cols, G), _mm(k, g_sum, IEEE), mask=cmask[None, :])
        tl.store(_table_rows(tab_ptr, 1, slots, slot, blk, d, cols, G), _mm(ks, g_sum, IEEE), mask=cmask[None, :])
        tl.store(_scalar_at(sc_ptr, KS_H, slot, blk_d, nb, blk, G), tl.sum(ks * h[None, :], 1))
    # One pass over values and positions: dv, then ds = dq + dkey at the samples' own places. The tables are
    # read back by group from the scratch (an L1/L2 gather) rather than kept in registers.
    tl.debug_barrier()  # the tables were stored by some threads and are read by others
    carry = tl.zeros([], dtype=tl.int32) - 1
    for r0 in range(0, n, BN):
        r = r0 + tl.arange(0, BN)
        rmask = r < n
        m2 = rmask[:, None] & cmask[None, :]
        gid, _, _, carry = _rank_groups(q_ptr, row_off, r, rmask, carry)
        z, j = _values(v_ptr, v_off, idx_ptr, row_off, r, rmask, cols, cmask, d)
        _add_dv(dv_ptr, v_off, j, cols, m2, d, tl.load(_table_rows(tab_ptr, 0, slots, slot, gid, d, cols, G),
                                                       mask=m2, other=0.0), SHARED_V)
        ks_g = tl.load(_table_rows(tab_ptr, 1, slots, slot, gid, d, cols, G), mask=m2, other=0.0)
        ks_h = tl.load(_scalar_at(sc_ptr, KS_H, slot, blk_d, nb, gid, G), mask=rmask, other=0.0)
        dkey = -(tl.sum(z * ks_g, 1) - first * ks_h)
        ks_m = tl.load(_scalar_at(sc_ptr, KS_M, slot, blk_d, nb, gid, G), mask=rmask, other=0.0)
        if COSINE:
            dc = tl.load(grad_ptr + row_off + r, mask=rmask, other=0.0)
            cr = tl.load(c_ptr + row_off + r, mask=rmask, other=0.0)
            nr = tl.load(norms_ptr + row_off + r, mask=rmask, other=1.0)
            alpha, beta, delta, du_coef = _cosine_coefficients(dc, cr, nr, eps_t)
            grad_dot = (alpha * tl.load(_scalar_at(sc_ptr, U_KS, slot, blk_d, nb, gid, G), mask=rmask, other=0.0)
                        + beta * tl.load(_scalar_at(sc_ptr, E_KS, slot, blk_d, nb, gid, G), mask=rmask, other=0.0))
        else:
            grad = tl.load(grad_ptr + (row_off + r)[:, None] * d + cols[None, :], mask=m2, other=0.0)
            ks_s = tl.load(_table_rows(tab_ptr, 2, slots, slot, gid, d, cols, G), mask=m2, other=0.0)
            grad_dot = tl.sum(grad * ks_s, 1)
            delta = tl.load(delta_ptr + row_off + r, mask=rmask, other=0.0)
        den_r = tl.load(_scalar_at(sc_ptr, DEN, slot, blk_d, nb, gid, G), mask=rmask, other=1.0)
        dq = -(grad_dot - first * delta * ks_m) / den_r
        total = ((dq + dkey).to(tl.float64) / tau).to(dt)
        tl.store(ds_ptr + (blk_d * b + row) * n + j, total, mask=rmask)
