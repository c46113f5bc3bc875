"""SoftSort gather and sorted cosine by Laplace scans in plain PyTorch: the fallback on any device.

The same recurrences as the C++ kernel (``csrc/cpu/softsort_scan_isa.h`` explains them), run
for a block of rows at once with a Python loop over the ``n`` sorted positions. Rows are taken
in blocks whose ``[rows, n, d]`` scratch stays under ``SCRATCH_ELEMS``, so memory never grows
with ``n * n * d``.

The backends' contract is in ``_common.py``. The scan state names (``il_g``, ``gp_g``, ``er_g``, ...)
are defined in the glossary at the top of ``csrc/cpu/softsort_scan_isa.h``.
"""
from __future__ import annotations

import torch

from hashkern.ops.softsort._common import cosine_grad_coefficients

SCRATCH_ELEMS = 1 << 22  # [rows, n, d] values per block of rows: 16 MiB in fp32


def row_decays(q: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``q [b, n]`` sorted descending -> ``gamma [b, n]`` (``gamma[:, r] = exp(-(q[r-1] - q[r]) / tau)``,
    column 0 unused) and ``tie [b, n]`` (``q[r-1] == q[r]``). The gap is divided in float64, so a
    temperature too small for fp32 gives 0, never 0/0."""
    gap = q[:, :-1].double() - q[:, 1:].double()
    gamma = torch.where(gap > 0, torch.exp(-gap / tau), torch.ones_like(gap)).to(q.dtype)
    gamma = torch.cat([torch.zeros_like(q[:, :1]), gamma], dim=1)
    tie = torch.cat([torch.zeros_like(q[:, :1], dtype=torch.bool), q[:, :-1] == q[:, 1:]], dim=1)
    return gamma, tie


def _row_blocks(b: int, n: int, d: int):
    rows = max(1, SCRATCH_ELEMS // max(n * d, 1))
    for r0 in range(0, b, rows):
        yield r0, min(b, r0 + rows)


class _Values:
    """``Z(r)``: the value at sorted position r of every row of a block, ``[rows, d]``."""

    def __init__(self, v: torch.Tensor, idx: torch.Tensor, r0: int, r1: int):
        self.idx = idx[r0:r1]
        self.shared = v.shape[0] == 1
        self.v = v[0] if self.shared else v[r0:r1]
        self.rows = torch.arange(r1 - r0, device=v.device)

    def __call__(self, r: int) -> torch.Tensor:
        if self.shared:
            return self.v.index_select(0, self.idx[:, r])
        return self.v[self.rows, self.idx[:, r]]

    def scatter_add(self, dv: torch.Tensor, r: int, grad: torch.Tensor) -> None:
        """``dv[row, idx[row, r]] += grad[row]`` (dv [n, d] shared, or this block's [rows, n, d])."""
        if self.shared:
            dv.index_add_(0, self.idx[:, r], grad)
        else:
            dv[self.rows, self.idx[:, r]] += grad


def _right_scan(z: _Values, gamma: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Fill ``out [rows, n, d]`` with ``B_r``; return ``b_r`` ``[rows, n]``."""
    rows, n, d = out.shape
    vec = out.new_zeros(rows, d)
    bs = out.new_zeros(rows, n)
    out[:, n - 1] = 0
    for r in range(n - 1, 0, -1):
        g = gamma[:, r]
        vec = g[:, None] * (vec + z(r))
        out[:, r - 1] = vec
        bs[:, r - 1] = g * (bs[:, r] + 1)
    return bs


def softsort_scan_torch_fwd(q, idx, v, tau, u=None, eps=1e-8):
    b, n = q.shape
    d = v.shape[-1]
    gather = u is None
    out = q.new_empty((b, n, d) if gather else (b, n))
    norms = None if gather else q.new_empty(b, n)
    for r0, r1 in _row_blocks(b, n, d):
        z = _Values(v, idx, r0, r1)
        gamma, _ = row_decays(q[r0:r1], tau)
        w = out[r0:r1] if gather else q.new_empty(r1 - r0, n, d)
        bs = _right_scan(z, gamma, w)
        a_vec = q.new_zeros(r1 - r0, d)
        a = q.new_zeros(r1 - r0)
        for r in range(n):
            g = gamma[:, r]
            a_vec = g[:, None] * a_vec + z(r)
            a = g * a + 1
            e = (a_vec + w[:, r]) / (a + bs[:, r])[:, None]
            if gather:
                w[:, r] = e
            else:
                norm = torch.linalg.vector_norm(e, dim=-1)
                norms[r0:r1, r] = norm
                out[r0:r1, r] = (e * u[r0:r1]).sum(-1) / norm.clamp_min(eps)
    return out, norms


def softsort_scan_torch_bwd(q, idx, v, tau, u, eps, grad, c=None, norms=None):
    b, n = q.shape
    d = v.shape[-1]
    cosine = u is not None
    ds = q.new_empty(b, n)
    dv = torch.zeros_like(v)
    du = q.new_zeros(b, d) if cosine else None
    for r0, r1 in _row_blocks(b, n, d):
        rows = r1 - r0
        z = _Values(v, idx, r0, r1)
        dv_blk = dv[0] if z.shared else dv[r0:r1]
        gamma, tie = row_decays(q[r0:r1], tau)
        tie = tie.to(q.dtype)
        if cosine:
            coef = cosine_grad_coefficients(grad[r0:r1], c[r0:r1], norms[r0:r1], eps)
        w = q.new_empty(rows, n, d)
        bs = _right_scan(z, gamma, w)
        hs, acc = q.new_empty(rows, n), q.new_empty(rows, n)
        a_vec, gp_z, il_g, gp_g = (q.new_zeros(rows, d) for _ in range(4))
        a, gp, il_h, gp_h = (q.new_zeros(rows) for _ in range(4))
        for r in range(n):  # left pass: E, G, the left scans, dv's left part
            g, t, zr = gamma[:, r], tie[:, r], z(r)
            a_vec = g[:, None] * a_vec + zr
            a = g * a + 1
            gp_z = t[:, None] * gp_z + zr
            gp = t * gp + 1
            inv = 1 / (a + bs[:, r])
            br = w[:, r]
            e = (a_vec + br) * inv[:, None]
            if cosine:
                alpha, beta, delta, du_coef = (x[:, r] for x in coef)
                de = alpha[:, None] * u[r0:r1] + beta[:, None] * e
                du[r0:r1] += du_coef[:, None] * e
            else:
                de = grad[r0:r1, r]
                delta = (de * e).sum(-1)
            gk = de * inv[:, None]
            pq = (gk * (br - a_vec + gp_z)).sum(-1)
            il_g = g[:, None] * il_g + gk
            gp_g = t[:, None] * gp_g + gk
            pk = (zr * (il_g - gp_g)).sum(-1)
            z.scatter_add(dv_blk, r, il_g)
            w[:, r] = gk
            h = delta * inv
            il_h = g * il_h + h
            gp_h = t * gp_h + h
            hs[:, r] = h
            acc[:, r] = -(pq - h * (bs[:, r] - a + gp)) + (pk - (il_h - gp_h))
        er_g, gs_g, gs_z = (q.new_zeros(rows, d) for _ in range(3))
        er_h, gs_h, gs = (q.new_zeros(rows) for _ in range(3))
        for r in range(n - 1, -1, -1):  # right pass: the right scans, dv's right part, ds
            g, t, zr, gr, h = gamma[:, r], tie[:, r], z(r), w[:, r], hs[:, r]
            q2 = (gr * gs_z).sum(-1)
            k2 = (zr * (er_g - gs_g)).sum(-1)
            z.scatter_add(dv_blk, r, er_g)
            total = acc[:, r] + (q2 - h * gs) + (-k2 + (er_h - gs_h))
            ds[r0:r1].scatter_(1, idx[r0:r1, r:r + 1], (total.double() / tau).to(q.dtype)[:, None])
            er_g = g[:, None] * (er_g + gr)
            gs_g = t[:, None] * (gs_g + gr)
            gs_z = t[:, None] * (gs_z + zr)
            er_h = g * (er_h + h)
            gs_h = t * (gs_h + h)
            gs = t * (gs + 1)
    return ds, dv, du
