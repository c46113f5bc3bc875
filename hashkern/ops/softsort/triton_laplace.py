"""Triton helpers shared by the grouped and chunked SoftSort kernels (``triton_grouped_kernels.py``,
``triton_chunked_kernels.py``): dense Laplace blocks, their products, the cosine's coefficients.

Notation (``csrc/cpu/softsort_scan_isa.h``): for sorted values ``q`` the Laplace kernel is
``K[r, t] = exp(-|q_r - q_t| / tau)``; the signed kernel ``Ks[r, t] = sign(q_r - q_t) K[r, t]`` sums
the strictly-right minus the strictly-left neighbours (ties weigh ``sign(0) = 0``), which is what
the gradient of ``|q_r - s_t|`` needs.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _exponent(gap, tau: tl.float64):
    """``|gap| / tau`` in gap's dtype, 0 on a tie. ``gap`` is a difference of two values of its dtype: 0 only
    on a tie and of the right sign, rounded once (fp32 math for fp32: fp64 temporaries spilled registers). fp32
    multiplies by ``1 / tau`` formed in fp64 and rounded, so a temperature below fp32's range gives an infinite
    exponent (a weight of 0) and a tie 0, never 0/0."""
    if gap.dtype == tl.float64:
        dist = tl.abs(gap) / tau
    else:
        dist = tl.abs(gap) * tl.cast(1.0 / tau, gap.dtype)
    return tl.where(gap == 0, 0.0, dist).to(gap.dtype)


@triton.jit
def _laplace(qa, qb, valid_a, valid_b, tau: tl.float64, SIGNED: tl.constexpr):
    """``[M, N]`` block ``K[i, j] = exp(-|qa_i - qb_j| / tau)`` (times ``sign(qa_i - qb_j)`` if SIGNED),
    0 outside ``valid_a x valid_b``, in qa's dtype (the exponent as ``_exponent`` forms it)."""
    gap = qa[:, None] - qb[None, :]
    k = tl.exp(-_exponent(gap, tau))
    if SIGNED:
        k = tl.where(gap > 0, k, tl.where(gap < 0, -k, 0.0))
    return tl.where(valid_a[:, None] & valid_b[None, :], k, 0.0).to(qa.dtype)


@triton.jit
def _laplace_pair(qa, qb, valid_a, valid_b, tau: tl.float64):
    """``(K, Ks)`` of ``_laplace`` from one exponential per entry."""
    gap = qa[:, None] - qb[None, :]
    k = tl.where(valid_a[:, None] & valid_b[None, :], tl.exp(-_exponent(gap, tau)), 0.0).to(qa.dtype)
    return k, tl.where(gap > 0, k, tl.where(gap < 0, -k, 0.0)).to(qa.dtype)


@triton.jit
def _decay_to(q_ref, q, valid, tau: tl.float64):
    """``[M]`` ``exp(-|q_ref - q_i| / tau)`` for a scalar reference ``q_ref`` (0 where not valid)."""
    return tl.where(valid, tl.exp(-_exponent(q_ref - q, tau)), 0.0).to(q.dtype)


@triton.jit
def _mm(a, b, IEEE: tl.constexpr):
    """``a @ b`` at the accuracy of the inputs' dtype: fp32 through three TF32 products (tf32x3,
    about fp32's rounding), fp64 exactly."""
    if IEEE:
        return tl.dot(a, b, input_precision="ieee", out_dtype=a.dtype)
    return tl.dot(a, b, input_precision="tf32x3")


@triton.jit
def _tf32_head(x):
    """fp32 ``x`` rounded to nearest TF32 (10 mantissa bits); ``x - head`` is exact in fp32."""
    return ((x.to(tl.uint32, bitcast=True) + 0x1000) & 0xFFFFE000).to(tl.float32, bitcast=True)


@triton.jit
def _onehot_mm(onehot, b, IEEE: tl.constexpr):
    """``onehot @ b`` for a 0/1 ``onehot`` (exact in TF32): fp32 ``b`` split into its TF32 part, rounded to
    nearest, and the rest, two TF32 products (tf32x3 would spend a third on onehot's zero low part); fp64 exactly."""
    if IEEE:
        product = tl.dot(onehot, b, input_precision="ieee", out_dtype=b.dtype)
    else:
        head = _tf32_head(b)
        product = tl.dot(onehot, head, input_precision="tf32") + tl.dot(onehot, b - head, input_precision="tf32")
    return product


@triton.jit
def _cosine_coefficients(dc, c, norm, eps):
    """``dE = alpha u + beta E`` of ``c = E.u / max(|E|, eps)`` per position, ``delta = dE.E`` and
    ``du_coef`` (the coefficient of E in du): ``_common.cosine_grad_coefficients`` in a kernel."""
    big = norm > eps
    safe = tl.where(big, norm, 1.0)
    alpha = tl.where(big, dc / safe, dc / eps)
    beta = tl.where(big, -dc * c / (safe * safe), 0.0)
    delta = tl.where(big, 0.0, dc * c)
    return alpha, beta, delta, dc / tl.maximum(norm, eps)


@triton.jit
def _values(v_ptr, v_off, idx_ptr, row_off, r, rmask, cols, cmask, d):
    """The values at sorted positions ``r [M]``: ``[M, BD]``, and their sample indices ``[M]`` (int64)."""
    j = tl.load(idx_ptr + row_off + r, mask=rmask, other=0)
    z = tl.load(v_ptr + v_off + j[:, None] * d + cols[None, :], mask=rmask[:, None] & cmask[None, :], other=0.0)
    return z, j


@triton.jit
def _add_dv(dv_ptr, v_off, j, cols, m2, d, grad, SHARED_V: tl.constexpr):
    """``dv[j] += grad`` for one program's distinct positions ``j [M]``: relaxed float atomics when
    the values are shared by all rows, else a plain store (each row's values belong to one program
    per feature block, and it writes each sample once)."""
    ptrs = dv_ptr + v_off + j[:, None] * d + cols[None, :]
    if SHARED_V:
        tl.atomic_add(ptrs, grad, mask=m2, sem="relaxed")
    else:
        tl.store(ptrs, grad, mask=m2)


@triton.jit
def _row_and_block(rows_ptr, n, d, SHARED_V: tl.constexpr, BD: tl.constexpr):
    """This program's row (from the launch's row list), slot in that list, feature block, columns,
    and the int64 base offsets of the row in ``q`` and in ``v``."""
    pid = tl.program_id(0)  # one flat axis (slot, feature block): no 65,535 limit
    nblk_d = tl.cdiv(d, BD)
    slot, blk_d = pid // nblk_d, pid % nblk_d
    row = tl.load(rows_ptr + slot).to(tl.int64)
    cols = blk_d * BD + tl.arange(0, BD)
    v_off = row * 0 if SHARED_V else row * n * d
    return row, slot.to(tl.int64), blk_d, cols, cols < d, row * n, v_off
