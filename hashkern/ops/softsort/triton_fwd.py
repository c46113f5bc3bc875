"""Triton forward of the soft-sort gather, flash-attention style.

For row ``b``, rank ``k`` is a query with scalar key ``q[b, k] = sort(s_b)_k``, sample ``j`` a key
``s[b, j]``, the score ``-|q - s| / tau`` and the value ``v[j]``. One program owns ``BLOCK_K``
ranks of one row and streams the samples in ``BLOCK_J`` tiles: ``P`` only ever exists as a
``[BLOCK_K, BLOCK_J]`` tile in registers, and the value product runs on tensor cores.

The softmax needs no running maximum: ``q_k`` is itself one of the keys, so every rank's
largest score is exactly 0 and ``sum_j exp(score) >= 1``; it can neither overflow nor
vanish, however small ``tau`` is.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _soft_sort_gather_fwd_kernel(
    Q, S,            # [b, n] sorted values, similarities
    V,               # [bv, n, d] values (stride_vb = 0 when shared by every row)
    U,               # [b, d] unit anchors (MODE 1, 2)
    G,               # [b, n] gradient of the cosines (MODE 2)
    OUT,             # MODE 0: E [b, n, d]; 1: cosines c [b, n]; 2: dE [b, n, d]
    LSE,             # [b, n] log-sum-exp of each rank's scores
    DELTA,           # [b, n] rowsum(dE * E) (MODE 2)
    DU,              # [b, d] gradient of U, zeroed, by atomic adds (MODE 2)
    n, d,
    stride_qb, stride_sb, stride_vb, stride_vn, stride_ub, stride_ob, stride_on, stride_lb,
    inv_tau, eps,
    MODE: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # rows on axis 0: grid axis 1 is capped at 65535
    pid_k = tl.program_id(1)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_d = tl.arange(0, BLOCK_D)
    mask_k = offs_k < n
    mask_d = offs_d < d
    q = tl.load(Q + row * stride_qb + offs_k, mask=mask_k, other=0.0).to(ACC)

    denom = tl.zeros([BLOCK_K], dtype=ACC)
    acc = tl.zeros([BLOCK_K, BLOCK_D], dtype=ACC)
    for j0 in range(0, n, BLOCK_J):
        offs_j = j0 + tl.arange(0, BLOCK_J)
        mask_j = offs_j < n
        s = tl.load(S + row * stride_sb + offs_j, mask=mask_j, other=0.0).to(ACC)
        x = -tl.abs(q[:, None] - s[None, :]) * inv_tau
        p = tl.where(mask_j[None, :], tl.exp(x), 0.0)  # max score is 0: see module docstring
        denom += tl.sum(p, axis=1)
        v = tl.load(V + row * stride_vb + offs_j[:, None] * stride_vn + offs_d[None, :],
                    mask=mask_j[:, None] & mask_d[None, :], other=0.0)
        acc += tl.dot(p.to(v.dtype), v, input_precision=PRECISION).to(ACC)

    denom = tl.where(mask_k, denom, 1.0)  # padded ranks may underflow to 0; never stored
    e = acc / denom[:, None]
    tl.store(LSE + row * stride_lb + offs_k, tl.log(denom), mask=mask_k)
    mask_kd = mask_k[:, None] & mask_d[None, :]
    if MODE == 0:
        tl.store(OUT + row * stride_ob + offs_k[:, None] * stride_on + offs_d[None, :],
                 e.to(OUT.dtype.element_ty), mask=mask_kd)
    else:
        # c = e.u / max(|e|, eps); the norm has a gradient only where the clamp is inactive
        u = tl.load(U + row * stride_ub + offs_d, mask=mask_d, other=0.0).to(ACC)
        norm = tl.sqrt(tl.sum(e * e, axis=1))
        clamped = tl.maximum(norm, eps)
        c = tl.sum(e * u[None, :], axis=1) / clamped
        if MODE == 1:
            tl.store(OUT + row * stride_ob + offs_k * stride_on, c, mask=mask_k)
        else:  # the cosine's backward, fused: E never leaves registers
            gn = tl.load(G + row * stride_lb + offs_k, mask=mask_k, other=0.0).to(ACC) / clamped
            coef = tl.where(norm > eps, c / clamped, 0.0)
            de = gn[:, None] * (u[None, :] - coef[:, None] * e)
            tl.store(OUT + row * stride_ob + offs_k[:, None] * stride_on + offs_d[None, :], de, mask=mask_kd)
            tl.store(DELTA + row * stride_lb + offs_k, tl.sum(de * e, axis=1), mask=mask_k)
            tl.atomic_add(DU + row * stride_ub + offs_d, tl.sum(gn[:, None] * e, axis=0), mask=mask_d)


def _tl_acc(acc: torch.dtype):
    return tl.float64 if acc == torch.float64 else tl.float32


def launch_config(n: int, d: int, device: torch.device, dtype: torch.dtype, kind: str = "fwd"):
    """``(BLOCK_K, BLOCK_J, BLOCK_D, num_warps)`` for kernel ``kind`` ("fwd" or "bwd").

    CPU (interpreter): few, large tiles (~1 ms per program). CUDA: sizes that compile for sm_90
    without register spills (checked with ptxas) and within Hopper's shared memory; not yet tuned
    on a GPU.
    """
    block_d = max(16, triton.next_power_of_2(d))
    if device.type != "cuda":
        block = min(128, max(16, triton.next_power_of_2(n)))
        return block, block, block_d, 4
    if dtype == torch.float64:  # tests only: small tiles keep fp64 within shared memory
        return 16, 16, block_d, 4
    if dot_precision(dtype) == "ieee":  # exact fp32 products run on FMA units, not tensor cores
        if kind == "fwd":
            return (32, 32, block_d, 4) if block_d <= 128 else (16, 32, block_d, 4)
        return 16, 16, block_d, 4 if block_d <= 64 else 8
    if kind == "bwd":  # holds dv [BLOCK_J, BLOCK_D] and v besides the tile
        if block_d <= 64:
            return 64, 64, block_d, 8
        return (32, 64, block_d, 8) if block_d <= 128 else (32, 32, block_d, 8)
    return (64, 64, block_d, 4) if block_d <= 128 else (32, 64, block_d, 8)


def dot_precision(dtype: torch.dtype) -> str | None:
    """fp32 values use TF32 tensor cores only where torch's own matmuls may; half types need no choice."""
    if dtype == torch.float32:
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    return "ieee" if dtype == torch.float64 else None


def _launch(q, s, v, tau, eps, mode, out, lse, u=None, g=None, delta=None, du=None):
    b, n = s.shape
    d = v.shape[-1]
    acc = lse.dtype
    if b == 0 or n == 0:
        return
    if g is not None:
        assert g.stride(0) == lse.stride(0) and delta.stride(0) == lse.stride(0) and du.stride(0) == u.stride(0)
    block_k, block_j, block_d, warps = launch_config(n, d, s.device, acc if acc == torch.float64 else v.dtype, "fwd")
    _soft_sort_gather_fwd_kernel[(b, triton.cdiv(n, block_k))](
        q, s, v, out if u is None else u, lse if g is None else g, out, lse,
        lse if delta is None else delta, out if du is None else du, n, d,
        q.stride(0), s.stride(0), v.stride(0) if v.shape[0] > 1 else 0, v.stride(1),
        0 if u is None else u.stride(0), out.stride(0), out.stride(1), lse.stride(0),
        1.0 / tau, eps,
        MODE=mode, ACC=_tl_acc(acc), PRECISION=dot_precision(v.dtype),
        BLOCK_K=block_k, BLOCK_J=block_j, BLOCK_D=block_d, num_warps=warps,
    )


def _acc(s, v):
    return torch.float64 if torch.float64 in (s.dtype, v.dtype) else torch.float32


def soft_sort_gather_fwd_triton(q: torch.Tensor, s: torch.Tensor, v: torch.Tensor, tau: float,
                                u: torch.Tensor | None = None, eps: float = 1e-8):
    """Same contract as ``chunked.soft_sort_gather_fwd_torch``: ``(out, lse)``."""
    b, n = s.shape
    acc = _acc(s, v)
    q, s, v = q.contiguous(), s.contiguous(), v.contiguous()
    lse = torch.empty(b, n, dtype=acc, device=s.device)
    if u is None:
        out = torch.empty(b, n, v.shape[-1], dtype=v.dtype, device=s.device)
        _launch(q, s, v, tau, eps, 0, out, lse)
    else:
        out = torch.empty(b, n, 1, dtype=acc, device=s.device)  # [b, n] with a unit stride for ranks
        _launch(q, s, v, tau, eps, 1, out, lse, u=u.to(acc).contiguous())
        out = out.squeeze(-1)
    return out, lse


def sorted_cosine_grad_triton(q: torch.Tensor, s: torch.Tensor, v: torch.Tensor, tau: float, u: torch.Tensor,
                              g: torch.Tensor, eps: float = 1e-8):
    """Same contract as ``chunked.sorted_cosine_grad_torch``: ``(dE, delta, du, lse)``."""
    b, n = s.shape
    acc = _acc(s, v)
    q, s, v = q.contiguous(), s.contiguous(), v.contiguous()
    lse = torch.empty(b, n, dtype=acc, device=s.device)
    de = torch.empty(b, n, v.shape[-1], dtype=acc, device=s.device)
    delta = torch.empty(b, n, dtype=acc, device=s.device)
    u = u.to(acc).contiguous()
    du = torch.zeros_like(u)
    _launch(q, s, v, tau, eps, 2, de, lse, u=u, g=g.to(acc).contiguous(), delta=delta, du=du)
    return de, delta, du, lse
