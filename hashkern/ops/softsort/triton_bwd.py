"""Triton backward of the soft-sort gather: one kernel, flash-attention style.

With ``P = exp(score - lse)`` rebuilt tile by tile, ``dS = P * (dE v^T - delta)``
(``delta = rowsum(dE * E)``) and ``d|q - s| / dq = sign(q - s)``, one program per sample tile
and group of rows streams the rank tiles and produces

* ``ds_key = sum_k dS sign / tau``, the gradient to ``s`` as keys;
* ``dv = P^T dE``, summed over rows with one atomic add per program when ``v`` is shared;
* ``dq = -sum_j dS sign / tau``, the gradient to the sorted values (scattered back to ``s`` by the
  caller, as ``torch.sort`` does), by atomic adds: this saves the second pass over ``P`` that a
  separate dq kernel (flash-attention 2's layout) would cost.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from hashkern.ops.softsort.triton_fwd import _tl_acc, dot_precision, launch_config


@triton.jit
def _probs_and_signs(q, s, lse, mask_k, mask_j, inv_tau):
    """``P = exp(-|q - s| / tau - lse)`` (0 off the matrix) and ``sign(q - s)`` for a [BK, BJ] tile."""
    diff = q[:, None] - s[None, :]
    p = tl.exp(-tl.abs(diff) * inv_tau - lse[:, None])
    p = tl.where(mask_k[:, None] & mask_j[None, :], p, 0.0)
    sign = tl.where(diff > 0, 1.0, tl.where(diff < 0, -1.0, 0.0)).to(p.dtype)
    return p, sign


@triton.jit
def _soft_sort_gather_bwd_kernel(
    Q, S, V, LSE, DE, DELTA,  # [b, n], [b, n], [bv, n, d], [b, n], [b, n, d], [b, n]
    DQ,                       # [b, n] out (zeroed): gradient to the sorted values, by atomic adds
    DS,                       # [b, n] out: gradient to s as keys
    DV,                       # [bv, n, d] out (fp32/fp64 accumulator, zeroed, when SHARED_V)
    b, n, d,
    stride_qb, stride_sb, stride_vb, stride_vn, stride_lb, stride_eb, stride_en, stride_tb,
    stride_dqb, stride_dsb, stride_dvb, stride_dvn,
    inv_tau,
    SHARED_V: tl.constexpr, ROWS: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_j = tl.program_id(1)
    offs_j = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    offs_d = tl.arange(0, BLOCK_D)
    mask_j = offs_j < n
    mask_d = offs_d < d
    mask_jd = mask_j[:, None] & mask_d[None, :]
    dv = tl.zeros([BLOCK_J, BLOCK_D], dtype=ACC)
    for r in range(0, ROWS):
        row = (tl.program_id(0) * ROWS + r).to(tl.int64)
        if row < b:
            s = tl.load(S + row * stride_sb + offs_j, mask=mask_j, other=0.0).to(ACC)
            v = tl.load(V + row * stride_vb + offs_j[:, None] * stride_vn + offs_d[None, :],
                        mask=mask_jd, other=0.0)
            ds_key = tl.zeros([BLOCK_J], dtype=ACC)
            if not SHARED_V:
                dv = tl.zeros([BLOCK_J, BLOCK_D], dtype=ACC)
            for k0 in range(0, n, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)
                mask_k = offs_k < n
                q = tl.load(Q + row * stride_qb + offs_k, mask=mask_k, other=0.0).to(ACC)
                lse = tl.load(LSE + row * stride_lb + offs_k, mask=mask_k, other=0.0).to(ACC)
                delta = tl.load(DELTA + row * stride_tb + offs_k, mask=mask_k, other=0.0).to(ACC)
                de = tl.load(DE + row * stride_eb + offs_k[:, None] * stride_en + offs_d[None, :],
                             mask=mask_k[:, None] & mask_d[None, :], other=0.0).to(v.dtype)
                p, sign = _probs_and_signs(q, s, lse, mask_k, mask_j, inv_tau)
                dp = tl.dot(de, tl.trans(v), input_precision=PRECISION).to(ACC)
                ds = p * (dp - delta[:, None]) * sign
                ds_key += tl.sum(ds, axis=0)
                # each sample tile adds its share of dq: no second pass over P for a dq kernel
                tl.atomic_add(DQ + row * stride_dqb + offs_k, -tl.sum(ds, axis=1) * inv_tau, mask=mask_k)
                dv += tl.dot(tl.trans(p).to(v.dtype), de, input_precision=PRECISION).to(ACC)
            tl.store(DS + row * stride_dsb + offs_j, ds_key * inv_tau, mask=mask_j)
            if not SHARED_V:
                tl.store(DV + row * stride_dvb + offs_j[:, None] * stride_dvn + offs_d[None, :],
                         dv.to(DV.dtype.element_ty), mask=mask_jd)
    if SHARED_V:
        tl.atomic_add(DV + offs_j[:, None] * stride_dvn + offs_d[None, :], dv, mask=mask_jd)


def soft_sort_gather_bwd_triton(q: torch.Tensor, s: torch.Tensor, v: torch.Tensor, lse: torch.Tensor,
                                de: torch.Tensor, delta: torch.Tensor, tau: float, need_v: bool = True):
    """Same contract as ``chunked.soft_sort_gather_bwd_torch``: ``(dq, ds_key, dv)`` in the
    accumulation dtype (``dv`` is None when ``need_v`` is False)."""
    b, n = s.shape
    d = v.shape[-1]
    acc = lse.dtype
    q, s, v, de = q.contiguous(), s.contiguous(), v.contiguous(), de.contiguous()
    lse, delta = lse.contiguous(), delta.to(acc).contiguous()
    shared = v.shape[0] == 1
    dq = torch.zeros(b, n, dtype=acc, device=s.device)
    ds_key = torch.empty(b, n, dtype=acc, device=s.device)
    dv = torch.zeros(v.shape, dtype=acc, device=s.device)
    if b == 0 or n == 0:
        return dq, ds_key, dv if need_v else None
    # Shared v: several rows per program cut the atomic adds into dv; enough programs remain.
    rows = max(1, min(b, 8)) if shared else 1
    if shared and s.device.type != "cuda":
        rows = b  # the interpreter pays per program, not per atomic
    block_k, block_j, block_d, warps = launch_config(n, d, s.device, acc if acc == torch.float64 else v.dtype, "bwd")
    _soft_sort_gather_bwd_kernel[(triton.cdiv(b, rows), triton.cdiv(n, block_j))](
        q, s, v, lse, de, delta, dq, ds_key, dv, b, n, d,
        q.stride(0), s.stride(0), 0 if shared else v.stride(0), v.stride(1), lse.stride(0), de.stride(0),
        de.stride(1), delta.stride(0), dq.stride(0), ds_key.stride(0), dv.stride(0), dv.stride(1), 1.0 / tau,
        SHARED_V=shared, ROWS=rows, ACC=_tl_acc(acc), PRECISION=dot_precision(v.dtype),
        BLOCK_K=block_k, BLOCK_J=block_j, BLOCK_D=block_d, num_warps=warps)
    return dq, ds_key, dv if need_v else None
