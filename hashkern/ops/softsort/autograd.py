"""torch.library ops and autograd Functions of the soft-sort gather and the sorted cosine.

Both run on the Laplace scans (O(n d) per row, see ``torch_impl.py``). The forward and backward
are registered as ``hashkern::softsort_scan`` / ``hashkern::softsort_scan_backward`` custom ops
with fake implementations, so ``torch.compile`` traces the autograd Functions without graph
breaks. ``backend`` is ``"cpu"`` (the C++ kernel), ``"triton"`` or ``"torch"``, already resolved.
Every backend computes in the accumulation dtype (``ops._numerics.at_least_float32``): fp64 for fp64
inputs, else fp32.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from hashkern.ops._numerics import at_least_float32 as acc_dtype  # fp64 if any input is, else fp32
from hashkern.ops._registration import register_fake
from hashkern.ops.softsort import torch_impl


def _cpu_fwd(q, idx, v, tau, u, eps):
    b, n = q.shape
    out = q.new_empty((b, n, v.shape[-1]) if u is None else (b, n))
    norms = q.new_empty((0,) if u is None else (b, n))
    torch.ops.hashkern.softsort_scan_fwd(q, idx, v, tau, u, eps, out, norms)
    return out, (None if u is None else norms)


def _cpu_bwd(q, idx, v, tau, u, eps, grad, c, norms):
    ds, dv = torch.empty_like(q), torch.empty_like(v)
    du = q.new_empty((0,) if u is None else (q.shape[0], v.shape[-1]))
    torch.ops.hashkern.softsort_scan_bwd(q, idx, v, tau, u, eps, grad, c, norms, ds, dv, du)
    return ds, dv, (None if u is None else du)


def _impl(backend: str):
    if backend == "cpu":
        return _cpu_fwd, _cpu_bwd
    if backend == "triton":
        from hashkern.ops.softsort import triton_launch  # lazy: the package imports without triton
        return triton_launch.softsort_scan_fwd, triton_launch.softsort_scan_bwd
    return torch_impl.softsort_scan_torch_fwd, torch_impl.softsort_scan_torch_bwd


@torch.library.custom_op("hashkern::softsort_scan", mutates_args=())
def softsort_scan(q: Tensor, idx: Tensor, v: Tensor, tau: float, u: Optional[Tensor], eps: float,
                  backend: str) -> tuple[Tensor, Tensor]:
    """``q [b, n]`` sorted rows, ``idx [b, n]``, ``v [1 or b, n, d]`` -> ``(E [b, n, d], empty)`` or,
    with unit rows ``u [b, d]``, ``(c [b, n], norms [b, n])``; all in q's dtype."""
    out, norms = _impl(backend)[0](q, idx, v, tau, u, eps)
    return out, (q.new_empty(0) if norms is None else norms)


@register_fake("hashkern::softsort_scan")
def _softsort_scan_fake(q, idx, v, tau, u, eps, backend):
    b, n = q.shape
    if u is None:
        return q.new_empty(b, n, v.shape[-1]), q.new_empty(0)
    return q.new_empty(b, n), q.new_empty(b, n)


@torch.library.custom_op("hashkern::softsort_scan_backward", mutates_args=())
def softsort_scan_backward(q: Tensor, idx: Tensor, v: Tensor, tau: float, u: Optional[Tensor], eps: float,
                           grad: Tensor, c: Optional[Tensor], norms: Optional[Tensor],
                           backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """-> ``(ds [b, n] in the unsorted order, dv like v, du [b, d] or empty)``."""
    ds, dv, du = _impl(backend)[1](q, idx, v, tau, u, eps, grad, c, norms)
    return ds, dv, (q.new_empty(0) if du is None else du)


@register_fake("hashkern::softsort_scan_backward")
def _softsort_scan_backward_fake(q, idx, v, tau, u, eps, grad, c, norms, backend):
    du = q.new_empty(0) if u is None else q.new_empty(u.shape)
    return q.new_empty(q.shape), v.new_empty(v.shape), du


def _sort(s: Tensor, descending: bool, acc: torch.dtype, backend: str) -> tuple[Tensor, Tensor]:
    """Rows sorted descending, as the scans expect: an ascending SoftSort of s is the descending
    one of -s (the kernel sees only distances), so ds flips sign. Stable, so ties keep their
    index order, as in the reference. The C++ backend sorts by radix (O(n) per row, the same
    result as torch.sort); converting to acc first is exact and keeps the order."""
    keys = (s if descending else -s).to(acc)
    if backend == "cpu":
        keys = keys.contiguous()
        q, idx = torch.empty_like(keys), torch.empty(keys.shape, dtype=torch.int64)
        torch.ops.hashkern.sort_rows_descending(keys, q, idx)
        return q, idx
    q, idx = torch.sort(keys, dim=-1, descending=True, stable=True)
    return q.contiguous(), idx.contiguous()


@register_fake("hashkern::sort_rows_descending")
def _sort_rows_descending_fake(s, q, idx):  # writes caller-allocated outputs
    return None


def _power_of_two_scale(x: Tensor) -> Tensor:
    """``2^-e`` with ``max|x| = m 2^e``, ``0.5 <= m < 1``, for ``e > 0``, else 1; a 0-d tensor, no host sync.

    Multiplying by it is exact and brings large values below 1, so the scans' sums of up to n
    values cannot overflow; SoftSort's output is linear in the values and the cosine does not
    depend on their scale, so it is undone exactly (the cosine's eps clamp is scaled with it)."""
    exponent = torch.frexp(x.detach().abs().amax()).exponent.clamp_min(0)
    return torch.exp2(-exponent.to(x.dtype))


def _row_norms(z: Tensor) -> tuple[Tensor, Tensor]:
    """``(|z| [n, 1], z / |z|)`` for rows ``z [n, d]``, each row first divided by its max-abs so the
    sum of squares cannot overflow (``F.normalize`` overflows past ~1.8e19 in fp32). A zero row
    gives norm 0 (its direction is never used)."""
    m = z.abs().amax(dim=-1, keepdim=True)
    m = torch.where(m > 0, m, torch.ones_like(m))
    zm = z / m
    norm_m = torch.linalg.vector_norm(zm, dim=-1, keepdim=True)
    return norm_m * m, zm / norm_m


def _unit_rows(z: Tensor, eps: float) -> Tensor:
    """``z / max(|z|, eps)`` (``F.normalize``) for rows ``z [n, d]``, without overflow."""
    norm, direction = _row_norms(z)
    return torch.where(norm > eps, direction, z / eps)


def _unit_rows_bwd(z: Tensor, u: Tensor, du: Tensor, eps: float) -> Tensor:
    """Backward of ``u = _unit_rows(z, eps)`` for rows ``z [n, d]``."""
    norm, _ = _row_norms(z)
    clamped = norm.clamp_min(eps)
    proj = torch.where(norm > eps, (du * u).sum(-1, keepdim=True), torch.zeros_like(norm))
    return (du - proj * u) / clamped


class SoftSortGatherFunction(torch.autograd.Function):
    """``E = SoftSort(s) v`` with gradients to ``s`` (keys and sorted values) and ``v``."""

    @staticmethod
    def forward(ctx, s: Tensor, v: Tensor, tau: float, descending: bool, backend: str):
        acc = acc_dtype(s, v)
        q, idx = _sort(s, descending, acc, backend)
        v3 = (v.unsqueeze(0) if v.dim() == 2 else v).to(acc)
        scale = _power_of_two_scale(v3)
        v3 = (v3 * scale).contiguous()
        e, _ = softsort_scan(q, idx, v3, tau, None, 0.0, backend)
        e = e / scale
        ctx.save_for_backward(q, idx, v3, scale)
        ctx.tau, ctx.backend, ctx.dtypes, ctx.v_shape = tau, backend, (s.dtype, v.dtype), v.shape
        ctx.sign = 1.0 if descending else -1.0
        return e.to(v.dtype)

    @staticmethod
    def backward(ctx, de: Tensor):
        q, idx, v3, scale = ctx.saved_tensors
        grad = de.to(q.dtype).contiguous()
        # E = E_scaled / scale: dv is the scans' own; ds, linear in the values, is divided by scale
        ds, dv, _ = softsort_scan_backward(q, idx, v3, ctx.tau, None, 0.0, grad, None, None, ctx.backend)
        s_dtype, v_dtype = ctx.dtypes
        return (ds * (ctx.sign / scale)).to(s_dtype), dv.reshape(ctx.v_shape).to(v_dtype), None, None, None


class SortedCosineFunction(torch.autograd.Function):
    """``c[i, k] = cos((SoftSort(s_i) z1)[k], z2[i])`` without building ``P`` or ``E``."""

    @staticmethod
    def forward(ctx, s: Tensor, z1: Tensor, z2: Tensor, tau: float, descending: bool, eps: float, backend: str):
        acc = acc_dtype(s, z1, z2)
        q, idx = _sort(s, descending, acc, backend)
        v = z1.to(acc).unsqueeze(0)
        scale = _power_of_two_scale(v)
        v = (v * scale).contiguous()  # the cosine does not depend on the scale of z1
        z2a = z2.to(acc)
        u = _unit_rows(z2a, eps).contiguous()
        # The scans clamp the scaled |E|: max(|E| scale, eps scale) = scale max(|E|, eps). Below the
        # accumulation dtype's resolution the clamp only touches rounding noise, so eps is kept
        # there and the host never waits for scale; a larger eps is scaled exactly.
        scan_eps = eps if eps <= torch.finfo(acc).eps else eps * float(scale)
        c, norms = softsort_scan(q, idx, v, tau, u, scan_eps, backend)
        ctx.save_for_backward(q, idx, v, z2a, u, c, norms, scale)
        ctx.tau, ctx.eps, ctx.scan_eps, ctx.backend = tau, eps, scan_eps, backend
        ctx.dtypes = (s.dtype, z1.dtype, z2.dtype)
        ctx.sign = 1.0 if descending else -1.0
        return c

    @staticmethod
    def backward(ctx, dc: Tensor):
        q, idx, v, z2a, u, c, norms, scale = ctx.saved_tensors
        grad = dc.to(q.dtype).contiguous()
        ds, dv, du = softsort_scan_backward(q, idx, v, ctx.tau, u, ctx.scan_eps, grad, c, norms, ctx.backend)
        s_dtype, z1_dtype, z2_dtype = ctx.dtypes
        dz2 = _unit_rows_bwd(z2a, u, du, ctx.eps)
        return ((ds * ctx.sign).to(s_dtype), (dv[0] * scale).to(z1_dtype), dz2.to(z2_dtype),
                None, None, None, None)
