"""torch.library ops and autograd Functions of the soft-sort gather and the sorted cosine.

The forward and backward kernels are registered as ``hashkern::softsort_*`` custom ops with
fake (meta) implementations, so ``torch.compile`` traces through the autograd Functions
without graph breaks. ``backend`` is ``"triton"`` or ``"torch"`` (already resolved).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from hashkern.ops.softsort import chunked

# Rows of dE rebuilt at once in the sorted-cosine backward: rows * n * d <= this.
COSINE_CHUNK_ELEMS = {"cuda": 1 << 24, "cpu": 1 << 22}  # 64 MiB of fp32 dE on CUDA


def _cosine_grad_impl(backend: str):
    if backend == "triton":
        from hashkern.ops.softsort.triton_fwd import sorted_cosine_grad_triton
        return sorted_cosine_grad_triton
    return chunked.sorted_cosine_grad_torch


def _fwd_impl(backend: str):
    if backend == "triton":
        from hashkern.ops.softsort.triton_fwd import soft_sort_gather_fwd_triton
        return soft_sort_gather_fwd_triton
    return chunked.soft_sort_gather_fwd_torch


def _bwd_impl(backend: str):
    if backend == "triton":
        from hashkern.ops.softsort.triton_bwd import soft_sort_gather_bwd_triton
        return soft_sort_gather_bwd_triton
    return chunked.soft_sort_gather_bwd_torch


@torch.library.custom_op("hashkern::softsort_gather_fwd", mutates_args=())
def soft_sort_gather_fwd(q: Tensor, s: Tensor, v: Tensor, tau: float, u: Optional[Tensor], eps: float,
                         backend: str) -> tuple[Tensor, Tensor]:
    """``q, s [b, n]``, ``v [bv, n, d]`` -> ``(E [b, n, d] or c [b, n] when u is given, lse [b, n])``."""
    return _fwd_impl(backend)(q, s, v, tau, u, eps)


@soft_sort_gather_fwd.register_fake
def _(q, s, v, tau, u, eps, backend):
    acc = chunked.acc_dtype(s, v)
    b, n = s.shape
    out = s.new_empty((b, n, v.shape[-1]), dtype=v.dtype) if u is None else s.new_empty((b, n), dtype=acc)
    return out, s.new_empty((b, n), dtype=acc)


@torch.library.custom_op("hashkern::softsort_gather_bwd", mutates_args=())
def soft_sort_gather_bwd(q: Tensor, s: Tensor, v: Tensor, lse: Tensor, de: Tensor, delta: Tensor,
                         tau: float, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """-> ``(dq [b, n], ds_key [b, n], dv [bv, n, d])`` in the accumulation dtype."""
    return _bwd_impl(backend)(q, s, v, lse, de, delta, tau)


@soft_sort_gather_bwd.register_fake
def _(q, s, v, lse, de, delta, tau, backend):
    return lse.new_empty(s.shape), lse.new_empty(s.shape), lse.new_empty(v.shape)


def _normalize_bwd(z: Tensor, du: Tensor, eps: float) -> Tensor:
    """Backward of ``u = z / max(|z|, eps)`` (``F.normalize``) for rows ``z [n, d]``."""
    norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
    clamped = norm.clamp_min(eps)
    u = z / clamped
    proj = torch.where(norm > eps, (du * u).sum(-1, keepdim=True), torch.zeros_like(norm))
    return (du - proj * u) / clamped


@torch.library.custom_op("hashkern::softsort_sorted_cosine_bwd", mutates_args=())
def sorted_cosine_bwd(q: Tensor, idx: Tensor, s: Tensor, z1: Tensor, z2: Tensor, lse: Tensor, dc: Tensor,
                      tau: float, eps: float, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of ``c = sorted_cosine(s, z1, z2)`` -> ``(ds [n, n], dz1 [n, d], dz2 [n, d])``.

    ``dE`` is rebuilt for a few rows at a time (the Triton path never stores ``E``), so memory
    stays O(n^2 + n d).
    """
    n, d = z1.shape
    acc = lse.dtype
    grad, bwd = _cosine_grad_impl(backend), _bwd_impl(backend)
    z1s = z1.unsqueeze(0)
    z2a = z2.to(acc)
    u = torch.nn.functional.normalize(z2a, dim=-1, eps=eps)
    ds = torch.empty(s.shape, dtype=acc, device=s.device)
    dz1 = torch.zeros(n, d, dtype=acc, device=s.device)
    du = torch.empty(n, d, dtype=acc, device=s.device)
    budget = COSINE_CHUNK_ELEMS["cuda" if s.device.type == "cuda" else "cpu"]
    rows = max(1, budget // max(n * d, 1))
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        qr, sr = q[r0:r1], s[r0:r1]
        de, delta, du[r0:r1], lse_r = grad(qr, sr, z1s, tau, u[r0:r1], dc[r0:r1], eps)
        dq, ds_key, dv = bwd(qr, sr, z1s, lse_r, de, delta, tau)
        ds[r0:r1] = ds_key.scatter_add_(1, idx[r0:r1], dq)
        dz1 += dv[0]
    return ds, dz1, _normalize_bwd(z2a, du, eps)


@sorted_cosine_bwd.register_fake
def _(q, idx, s, z1, z2, lse, dc, tau, eps, backend):
    return lse.new_empty(s.shape), lse.new_empty(z1.shape), lse.new_empty(z2.shape)


def _to(grad: Optional[Tensor], like: Tensor) -> Optional[Tensor]:
    return None if grad is None else grad.to(like.dtype)


class SoftSortGatherFunction(torch.autograd.Function):
    """``E = SoftSort(s) v`` with gradients to ``s`` (keys and sorted values) and ``v``."""

    @staticmethod
    def forward(ctx, s: Tensor, v: Tensor, tau: float, descending: bool, backend: str):
        q, idx = torch.sort(s, dim=-1, descending=descending)
        v3 = v.unsqueeze(0) if v.dim() == 2 else v
        e, lse = soft_sort_gather_fwd(q, s, v3, tau, None, 1e-8, backend)
        ctx.save_for_backward(q, idx, s, v, e, lse)
        ctx.tau, ctx.backend = tau, backend
        return e

    @staticmethod
    def backward(ctx, de: Tensor):
        q, idx, s, v, e, lse = ctx.saved_tensors
        v3 = v.unsqueeze(0) if v.dim() == 2 else v
        delta = (de.to(lse.dtype) * e.to(lse.dtype)).sum(-1)
        dq, ds_key, dv = soft_sort_gather_bwd(q, s, v3, lse, de.contiguous(), delta, ctx.tau, ctx.backend)
        ds = ds_key.scatter_add(1, idx, dq)  # the sorted values' gradient, as torch.sort routes it
        dv = dv.reshape(v.shape)
        return _to(ds, s), _to(dv, v), None, None, None


class SortedCosineFunction(torch.autograd.Function):
    """``c[i, k] = cos((SoftSort(s_i) z1)[k], z2[i])`` without building ``P`` or ``E``."""

    @staticmethod
    def forward(ctx, s: Tensor, z1: Tensor, z2: Tensor, tau: float, descending: bool, eps: float, backend: str):
        q, idx = torch.sort(s, dim=-1, descending=descending)
        acc = chunked.acc_dtype(s, z1, z2)
        u = torch.nn.functional.normalize(z2.to(acc), dim=-1, eps=eps)
        c, lse = soft_sort_gather_fwd(q, s, z1.unsqueeze(0), tau, u, eps, backend)
        ctx.save_for_backward(q, idx, s, z1, z2, lse)
        ctx.tau, ctx.eps, ctx.backend = tau, eps, backend
        return c

    @staticmethod
    def backward(ctx, dc: Tensor):
        q, idx, s, z1, z2, lse = ctx.saved_tensors
        ds, dz1, dz2 = sorted_cosine_bwd(q, idx, s, z1, z2, lse, dc.contiguous(), ctx.tau, ctx.eps, ctx.backend)
        return _to(ds, s), _to(dz1, z1), _to(dz2, z2), None, None, None, None
