"""Triton SoftSort kernels for rows with few distinct values (Hamming similarities); launched by
``triton_forms.py``. The same algebra as the C++ grouped kernel (``csrc/cpu/softsort_groups_isa.h``).

A row of n sorted similarities of K-bit codes falls into g <= K + 1 tie groups; every position of
a group gathers the same ``E``. One program owns one row and ``BD`` features. It walks the sorted
positions in blocks of ``BN`` with nothing carried between blocks but the running group number:
each block forms its one-hot ``[G, BN]`` group matrix and adds its values' group sums with one
``tl.dot`` (``S = onehot @ Zσ``, ``G`` = the groups padded to a power of two). The scans over the
groups are then dense ``[G, G]`` Laplace products (``K S``, ``Ks S``), and every per-position
result is read back from the ``[G]`` / ``[G, BD]`` group tables with the transposed one-hot, except
the backward's ``K G``, ``Ks G``, ``Ks S``: written once per program to a scratch ``[3, rows, G, d]``
and loaded back by each position's group (fewer live registers, no product):

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
    _laplace,
    _mm,
    _row_and_block,
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


@triton.jit
def _gather_groups(onehot_t, table):
    """``[BN]`` entries of the ``[G]`` table at each position's group (``onehot_t [BN, G]``)."""
    return tl.sum(tl.where(onehot_t, table[None, :], 0.0), 1)


@triton.jit
def _group_tables(q_ptr, idx_ptr, v_ptr, row_off, v_off, n, d, cols, cmask,
                  G: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, IEEE: tl.constexpr):
    """One pass over the row: ``S [G, BD]`` group sums of the values, ``m [G]`` sizes, ``Q [G]`` values."""
    dt = q_ptr.dtype.element_ty
    groups = tl.arange(0, G)
    s_sum = tl.zeros([G, BD], dtype=dt)
    m = tl.zeros([G], dtype=dt)
    q_group = tl.zeros([G], dtype=dt)
    carry = tl.zeros([], dtype=tl.int32) - 1
    for r0 in range(0, n, BN):
        r = r0 + tl.arange(0, BN)
        rmask = r < n
        gid, qr, new, carry = _rank_groups(q_ptr, row_off, r, rmask, carry)
        onehot = (groups[:, None] == gid[None, :]) & rmask[None, :]
        z, _ = _values(v_ptr, v_off, idx_ptr, row_off, r, rmask, cols, cmask, d)
        s_sum += _mm(onehot.to(dt), z, IEEE)
        m += tl.sum(onehot.to(dt), 1)
        q_group += tl.sum(tl.where(onehot & new[None, :], qr[None, :], 0.0), 1)  # one term per group
    return s_sum, m, q_group


@triton.jit
def _group_gather(q_ptr, idx_ptr, v_ptr, row_off, v_off, n, d, cols, cmask, tau: tl.float64,
                  G: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, IEEE: tl.constexpr):
    """The group tables: ``E [G, BD]``, ``den, m, Q [G]`` and ``S [G, BD]``."""
    s_sum, m, q_group = _group_tables(q_ptr, idx_ptr, v_ptr, row_off, v_off, n, d, cols, cmask, G, BN, BD, IEEE)
    valid = m > 0
    k = _laplace(q_group, q_group, valid, valid, tau, False)
    den = tl.where(valid, tl.sum(k * m[None, :], 1), 1.0)
    e = _mm(k, s_sum, IEEE) / den[:, None]
    return e, den, m, q_group, s_sum


@triton.jit
def _softsort_grouped_fwd_kernel(
    rows_ptr,                          # [rows] the rows this launch serves
    q_ptr, idx_ptr, v_ptr, u_ptr,      # q, idx [b, n]; v [1 or b, n, d]; u [b, d] (cosine)
    out_ptr,                           # gather: E [b, n, d]
    ee_ptr, eu_ptr,                    # cosine: |E_r|^2, E_r.u per feature block [nb, b, n]; FINAL: norms, c
    b, n, d, tau: tl.float64, eps: tl.float64,
    SHARED_V: tl.constexpr, COSINE: tl.constexpr, FINAL: tl.constexpr,
    G: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, IEEE: tl.constexpr,
):
    row, slot, blk_d, cols, cmask, row_off, v_off = _row_and_block(rows_ptr, n, d, SHARED_V, BD)
    dt = q_ptr.dtype.element_ty
    e, den, m, q_group, s_sum = _group_gather(q_ptr, idx_ptr, v_ptr, row_off, v_off, n, d, cols, cmask, tau,
                                              G, BN, BD, IEEE)
    groups = tl.arange(0, G)
    if COSINE:
        u = tl.load(u_ptr + row * d + cols, mask=cmask, other=0.0)
        ee = tl.sum(e * e, 1)
        eu = tl.sum(e * u[None, :], 1)
    carry = tl.zeros([], dtype=tl.int32) - 1
    for r0 in range(0, n, BN):
        r = r0 + tl.arange(0, BN)
        rmask = r < n
        gid, _, _, carry = _rank_groups(q_ptr, row_off, r, rmask, carry)
        onehot_t = (gid[:, None] == groups[None, :]) & rmask[:, None]
        if COSINE:
            pee = _gather_groups(onehot_t, ee)
            peu = _gather_groups(onehot_t, eu)
            at = (blk_d * b + row) * n + r
            if FINAL:  # one feature block: the norm and the cosine directly
                norm = tl.sqrt(pee)
                pee = norm
                peu = peu / tl.maximum(norm, tl.cast(eps, dt))
            tl.store(ee_ptr + at, pee, mask=rmask)
            tl.store(eu_ptr + at, peu, mask=rmask)
        else:
            er = _mm(onehot_t.to(dt), e, IEEE)
            tl.store(out_ptr + (row_off + r)[:, None] * d + cols[None, :], er, mask=rmask[:, None] & cmask[None, :])


@triton.jit
def _softsort_grouped_bwd_kernel(
    rows_ptr,                          # [rows] the rows this launch serves
    q_ptr, idx_ptr, v_ptr, u_ptr,      # as the forward
    grad_ptr,                          # gather: dE [b, n, d] (rank order); cosine: dc [b, n]
    c_ptr, norms_ptr,                  # cosine: the forward's c, norms [b, n]
    delta_ptr,                         # gather: dE_r . E_r [b, n]
    ds_ptr,                            # out: per feature block, d(loss)/ds in the order of s [nb, b, n]
    dv_ptr, du_ptr,                    # out: dv like v (zeroed by the caller when shared); du [b, d]
    tab_ptr,                           # scratch: the K G, Ks G and Ks S tables [3, slots, G, d]
    b, n, d, slots, tau: tl.float64, eps: tl.float64,
    SHARED_V: tl.constexpr, COSINE: tl.constexpr,
    G: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, IEEE: tl.constexpr,
):
    row, slot, blk_d, cols, cmask, row_off, v_off = _row_and_block(rows_ptr, n, d, SHARED_V, BD)
    dt = q_ptr.dtype.element_ty
    first = tl.where(blk_d == 0, 1.0, 0.0).to(dt)
    eps_t = tl.cast(eps, dt)
    e, den, m, q_group, s_sum = _group_gather(q_ptr, idx_ptr, v_ptr, row_off, v_off, n, d, cols, cmask, tau,
                                              G, BN, BD, IEEE)
    valid = m > 0
    ks = _laplace(q_group, q_group, valid, valid, tau, True)  # [G, G] tables are rebuilt, not kept live
    groups = tl.arange(0, G)
    ks_s = _mm(ks, s_sum, IEEE)
    tab = tab_ptr + (slot * G + groups.to(tl.int64))[:, None] * d + cols[None, :]  # [G, BD] rows of table 0
    table_step = slots * G * d
    if not COSINE:
        tl.store(tab + 2 * table_step, ks_s, mask=cmask[None, :])
    ks_m = tl.sum(ks * m[None, :], 1)
    u = tl.zeros([BD], dtype=dt)
    if COSINE:
        u = tl.load(u_ptr + row * d + cols, mask=cmask, other=0.0)
    u_dot_ks = tl.sum(u[None, :] * ks_s, 1)
    e_dot_ks = tl.sum(e * ks_s, 1)
    # Group sums of the positions' gradients: sum dE (as alpha, beta for the cosine), dE.E, du's coefficient.
    g_sum = tl.zeros([G, BD], dtype=dt)
    a_sum, b_sum, h_sum, du_sum = (tl.zeros([G], dtype=dt), tl.zeros([G], dtype=dt), tl.zeros([G], dtype=dt),
                                   tl.zeros([G], dtype=dt))
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
            a_sum += tl.sum(onehot * alpha[None, :], 1)
            b_sum += tl.sum(onehot * beta[None, :], 1)
            du_sum += tl.sum(onehot * du_coef[None, :], 1)
        else:
            grad = tl.load(grad_ptr + (row_off + r)[:, None] * d + cols[None, :],
                           mask=rmask[:, None] & cmask[None, :], other=0.0)
            g_sum += _mm(onehot, grad, IEEE)
            delta = tl.load(delta_ptr + row_off + r, mask=rmask, other=0.0)
        h_sum += tl.sum(onehot * delta[None, :], 1)
    if COSINE:
        g_sum = a_sum[:, None] * u[None, :] + b_sum[:, None] * e
        tl.store(du_ptr + row * d + cols, tl.sum(du_sum[:, None] * e, 0), mask=cmask)
    g_sum = g_sum / den[:, None]
    tl.store(tab, _mm(_laplace(q_group, q_group, valid, valid, tau, False), g_sum, IEEE), mask=cmask[None, :])
    ks = _laplace(q_group, q_group, valid, valid, tau, True)
    tl.store(tab + table_step, _mm(ks, g_sum, IEEE), mask=cmask[None, :])
    ks_h = tl.sum(ks * (h_sum / den)[None, :], 1)
    # One pass over values and positions: dv, then ds = dq + dkey at the samples' own places. The [G, BD]
    # tables are read back by group from the scratch (an L1/L2 gather) rather than kept in registers.
    tl.debug_barrier()  # the tables were stored by some threads and are read by others
    carry = tl.zeros([], dtype=tl.int32) - 1
    for r0 in range(0, n, BN):
        r = r0 + tl.arange(0, BN)
        rmask = r < n
        m2 = rmask[:, None] & cmask[None, :]
        gid, _, _, carry = _rank_groups(q_ptr, row_off, r, rmask, carry)
        onehot_t = (gid[:, None] == groups[None, :]) & rmask[:, None]
        at = tab_ptr + (slot * G + gid.to(tl.int64))[:, None] * d + cols[None, :]  # [BN, BD]: each position's group
        z, j = _values(v_ptr, v_off, idx_ptr, row_off, r, rmask, cols, cmask, d)
        _add_dv(dv_ptr, v_off, j, cols, m2, d, tl.load(at, mask=m2, other=0.0), SHARED_V)
        dkey = -(tl.sum(z * tl.load(at + table_step, mask=m2, other=0.0), 1) - first * _gather_groups(onehot_t, ks_h))
        ks_m_r = _gather_groups(onehot_t, ks_m)
        if COSINE:
            dc = tl.load(grad_ptr + row_off + r, mask=rmask, other=0.0)
            cr = tl.load(c_ptr + row_off + r, mask=rmask, other=0.0)
            nr = tl.load(norms_ptr + row_off + r, mask=rmask, other=1.0)
            alpha, beta, delta, du_coef = _cosine_coefficients(dc, cr, nr, eps_t)
            grad_dot = alpha * _gather_groups(onehot_t, u_dot_ks) + beta * _gather_groups(onehot_t, e_dot_ks)
        else:
            grad = tl.load(grad_ptr + (row_off + r)[:, None] * d + cols[None, :], mask=m2, other=0.0)
            grad_dot = tl.sum(grad * tl.load(at + 2 * table_step, mask=m2, other=0.0), 1)
            delta = tl.load(delta_ptr + row_off + r, mask=rmask, other=0.0)
        den_r = tl.where(rmask, _gather_groups(onehot_t, den), 1.0)
        dq = -(grad_dot - first * delta * ks_m_r) / den_r
        total = ((dq + dkey).to(tl.float64) / tau).to(dt)
        tl.store(ds_ptr + (blk_d * b + row) * n + j, total, mask=rmask)
