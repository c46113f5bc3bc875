"""Chunked-PyTorch forward and backward of the soft-sort gather (the CPU path).

Same contract as the Triton launchers in ``triton_fwd.py`` / ``triton_bwd.py``:

* rank ``k`` of row ``b`` is a query with scalar key ``q[b, k]`` (the sorted values),
  sample ``j`` a key ``s[b, j]``, the score ``-|q - s| / tau`` and the value ``v[j]``;
* forward returns ``E = softmax(scores) v`` (or the cosine of ``E`` with ``u``) and the
  row log-sum-exp ``lse [b, n]``, which the backward reuses to rebuild ``P`` chunk by chunk.

Scores are built for at most ``CHUNK_ELEMS`` (row, rank, sample) triples at a time, so memory
stays O(n^2 + n d) and never reaches ``n^3``.
"""
from __future__ import annotations

import torch

CHUNK_ELEMS = 1 << 22  # (rows x ranks x samples) scores live at once: 16 MiB in fp32


def _chunks(b: int, n: int, budget: int = CHUNK_ELEMS):
    """Yield ``(r0, r1, k0, k1)`` blocks of rows and ranks with ``(r1-r0)*(k1-k0)*n <= budget``."""
    per_row = max(n * n, 1)
    if per_row <= budget:
        rows = max(1, budget // per_row)
        for r0 in range(0, b, rows):
            yield r0, min(b, r0 + rows), 0, n
        return
    ranks = max(1, budget // max(n, 1))
    for r0 in range(b):
        for k0 in range(0, n, ranks):
            yield r0, r0 + 1, k0, min(n, k0 + ranks)


def acc_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """fp64 when any input is fp64 (gradcheck), fp32 otherwise (half inputs accumulate in fp32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _scores(q, s, tau):
    # q [r, kc], s [r, n] -> -|q - s| / tau  [r, kc, n]
    return (q.unsqueeze(-1) - s.unsqueeze(-2)).abs_().mul_(-1.0 / tau)


def soft_sort_gather_fwd_torch(q: torch.Tensor, s: torch.Tensor, v: torch.Tensor, tau: float,
                               u: torch.Tensor | None = None, eps: float = 1e-8):
    """``q, s [b, n]``, ``v [bv, n, d]`` (bv = 1: shared) -> ``(out, lse [b, n])``.

    ``out`` is ``E [b, n, d]`` in ``v.dtype``, or, when ``u [b, d]`` (unit vectors) is given,
    the cosines ``c [b, n]`` of ``E`` with ``u`` in the accumulation dtype.
    """
    b, n = s.shape
    acc = acc_dtype(s, v)
    qa, sa, va = q.to(acc), s.to(acc), v.to(acc)
    lse = torch.empty(b, n, dtype=acc, device=s.device)
    if u is None:
        out = torch.empty(b, n, v.shape[-1], dtype=v.dtype, device=s.device)
    else:
        out = torch.empty(b, n, dtype=acc, device=s.device)
        ua = u.to(acc)
    for r0, r1, k0, k1 in _chunks(b, n):
        x = _scores(qa[r0:r1, k0:k1], sa[r0:r1], tau)
        lse_c = torch.logsumexp(x, dim=-1)
        p = x.sub_(lse_c.unsqueeze(-1)).exp_()
        e = torch.matmul(p, va if va.shape[0] == 1 else va[r0:r1])
        lse[r0:r1, k0:k1] = lse_c
        if u is None:
            out[r0:r1, k0:k1] = e
        else:
            norm = torch.linalg.vector_norm(e, dim=-1).clamp_min(eps)
            out[r0:r1, k0:k1] = (e * ua[r0:r1].unsqueeze(-2)).sum(-1) / norm
    return out, lse


def soft_sort_gather_bwd_torch(q: torch.Tensor, s: torch.Tensor, v: torch.Tensor, lse: torch.Tensor,
                               de: torch.Tensor, delta: torch.Tensor, tau: float,
                               need_v: bool = True):
    """Gradients of ``E`` given ``dE [b, n, d]`` and ``delta = rowsum(dE * E) [b, n]``.

    Returns ``dq [b, n]`` (to the sorted values), ``ds_key [b, n]`` (to ``s`` as keys) and
    ``dv`` shaped like ``v`` (``[bv, n, d]``; summed over rows when bv = 1), or None.
    With ``dS = P * (dE v^T - delta)`` and ``d|q - s|/dq = sign(q - s)``:
    ``dq = -sum_j dS sign / tau``, ``ds_key = sum_k dS sign / tau``, ``dv = P^T dE``.
    """
    b, n = s.shape
    acc = acc_dtype(s, v)
    qa, sa, va, lsea = q.to(acc), s.to(acc), v.to(acc), lse.to(acc)
    dea, deltaa = de.to(acc), delta.to(acc)
    dq = torch.empty(b, n, dtype=acc, device=s.device)
    ds_key = torch.zeros(b, n, dtype=acc, device=s.device)
    dv = torch.zeros(va.shape, dtype=acc, device=s.device) if need_v else None
    shared = va.shape[0] == 1
    for r0, r1, k0, k1 in _chunks(b, n):
        qc, sc = qa[r0:r1, k0:k1], sa[r0:r1]
        p = _scores(qc, sc, tau).sub_(lsea[r0:r1, k0:k1].unsqueeze(-1)).exp_()
        vr = va if shared else va[r0:r1]
        dec = dea[r0:r1, k0:k1]
        dp = torch.matmul(dec, vr.transpose(-1, -2))
        ds = p * dp.sub_(deltaa[r0:r1, k0:k1].unsqueeze(-1))
        ds.mul_(torch.sign(qc.unsqueeze(-1) - sc.unsqueeze(-2)))
        dq[r0:r1, k0:k1] = ds.sum(-1) * (-1.0 / tau)
        ds_key[r0:r1] += ds.sum(-2) * (1.0 / tau)
        if need_v:
            dv_c = torch.matmul(p.transpose(-1, -2), dec)
            if shared:
                dv[0] += dv_c.sum(0)
            else:
                dv[r0:r1] += dv_c
    return dq, ds_key, dv


def cosine_bwd(e: torch.Tensor, u: torch.Tensor, g: torch.Tensor, eps: float):
    """Backward of ``c = (e . u) / max(|e|, eps)``: ``e [r, n, d]``, ``u [r, d]``, ``g [r, n]``
    -> ``(de [r, n, d], delta = rowsum(de * e) [r, n], du [r, d])``."""
    norm = torch.linalg.vector_norm(e, dim=-1)
    clamped = norm.clamp_min(eps)
    c = (e * u.unsqueeze(1)).sum(-1) / clamped
    # The norm only has a gradient where the clamp is inactive.
    coef = torch.where(norm > eps, c / clamped, torch.zeros_like(c))
    gn = g / clamped
    de = gn.unsqueeze(-1) * (u.unsqueeze(1) - coef.unsqueeze(-1) * e)
    return de, (de * e).sum(-1), torch.einsum("rn,rnd->rd", gn, e)


def sorted_cosine_grad_torch(q: torch.Tensor, s: torch.Tensor, v: torch.Tensor, tau: float, u: torch.Tensor,
                             g: torch.Tensor, eps: float = 1e-8):
    """Rebuild ``E`` for rows ``q, s [r, n]`` (``v [1, n, d]``) and push the cosine gradient
    ``g [r, n]`` through ``c = cos(E, u)``: ``(dE [r, n, d], delta [r, n], du [r, d], lse [r, n])``."""
    acc = acc_dtype(s, v)
    e, lse = soft_sort_gather_fwd_torch(q, s, v.to(acc), tau)
    return (*cosine_bwd(e, u.to(acc), g.to(acc), eps), lse)
