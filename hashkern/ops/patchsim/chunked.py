"""Chunked PyTorch path of patch similarity (the ``torch`` backend): bounded memory, any device.

Works on already-normalised tokens ``u1 [b1, P, D]``, ``u2 [b2, Q, D]``; the similarity tensor
is only ever materialised for a chunk of image pairs, at most ``CHUNK_ELEMENTS`` entries of
``[cn, cm, P, Q]``. The backward of ``maxmean`` does not recompute it: it scatters the upstream
gradient at the saved argmax into a one-hot ``[cn, P, cm * Q]`` matrix and uses two matmuls.
"""
from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 24  # 64 MiB of float32 similarities per chunk


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunks(b1: int, b2: int, P: int, Q: int):
    """Yield (n0, n1, m0, m1) tiles of the pair grid with (n1-n0)*(m1-m0)*P*Q <= CHUNK_ELEMENTS (or one pair)."""
    per_pair = max(P * Q, 1)
    cm = min(b2, max(1, CHUNK_ELEMENTS // per_pair))
    cn = min(b1, max(1, CHUNK_ELEMENTS // (cm * per_pair)))
    for n0 in range(0, b1, cn):
        for m0 in range(0, b2, cm):
            yield n0, min(n0 + cn, b1), m0, min(m0 + cm, b2)


def _sim(u1c: torch.Tensor, u2c: torch.Tensor, mask2c: torch.Tensor | None) -> torch.Tensor:
    """[cn, P, D] x [cm, Q, D] -> [cn, cm, P, Q], masked columns at -inf."""
    (cn, P, D), (cm, Q, _) = u1c.shape, u2c.shape
    sim = (u1c.reshape(cn * P, D) @ u2c.reshape(cm * Q, D).T).view(cn, P, cm, Q).transpose(1, 2)
    if mask2c is not None:
        sim = sim.masked_fill(~mask2c[None, :, None, :], float("-inf"))
    return sim


def patch_similarity_chunked_fwd(u1, u2, mask1, mask2, inv_count, reduce: str, temperature: float):
    """-> s [b1, b2] (float32, float64 for float64 input), aux_a, aux_b.

    maxmean: aux_a = argmax j int32 [b2, b1, P] (m-major; Q at padded patches of x1), aux_b empty.
    softmaxmean: aux_a = logsumexp_j(sim / temperature), aux_b = sum_j softmax * sim, both [b1, b2, P].
    """
    b1, P, _ = u1.shape
    b2, Q, _ = u2.shape
    acc = _acc_dtype(u1.dtype)
    s = torch.empty(b1, b2, dtype=acc, device=u1.device)
    if reduce == "maxmean":
        aux_a = torch.empty(b2, b1, P, dtype=torch.int32, device=u1.device)
        aux_b = torch.empty(0, dtype=acc, device=u1.device)
    else:
        aux_a = torch.empty(b1, b2, P, dtype=acc, device=u1.device)
        aux_b = torch.empty(b1, b2, P, dtype=acc, device=u1.device)
    for n0, n1, m0, m1 in _chunks(b1, b2, P, Q):
        sim = _sim(u1[n0:n1].to(acc), u2[m0:m1].to(acc), None if mask2 is None else mask2[m0:m1])
        if reduce == "maxmean":
            best = sim.argmax(dim=-1, keepdim=True)  # first index on ties
            per_patch = sim.gather(-1, best).squeeze(-1)
            best = best.squeeze(-1)
            if mask1 is not None:
                best = best.masked_fill(~mask1[n0:n1, None, :], Q)
            aux_a[m0:m1, n0:n1] = best.transpose(0, 1).to(torch.int32)
        else:
            z = sim / temperature
            lse = torch.logsumexp(z, dim=-1)
            p = torch.exp(z - lse[..., None])
            per_patch = torch.where(p > 0, p * sim, 0.0).sum(-1)
            aux_a[n0:n1, m0:m1] = lse
            aux_b[n0:n1, m0:m1] = per_patch
        if mask1 is not None:
            per_patch = per_patch * mask1[n0:n1, None, :]
        s[n0:n1, m0:m1] = per_patch.sum(-1) * inv_count[n0:n1, None]
    return s, aux_a, aux_b


def patch_similarity_chunked_bwd(grad_s, u1, u2, mask1, mask2, inv_count, aux_a, aux_b,
                                 reduce: str, temperature: float):
    """grad_s [b1, b2] -> (du1 [b1, P, D], du2 [b2, Q, D]) in the dtype of u1/u2."""
    b1, P, D = u1.shape
    b2, Q, _ = u2.shape
    acc = _acc_dtype(u1.dtype)
    du1 = torch.zeros(b1, P, D, dtype=acc, device=u1.device)
    du2 = torch.zeros(b2, Q, D, dtype=acc, device=u1.device)
    for n0, n1, m0, m1 in _chunks(b1, b2, P, Q):
        cn, cm = n1 - n0, m1 - m0
        u1c, u2c = u1[n0:n1].to(acc), u2[m0:m1].to(acc)
        # d s[n, m] / d per_patch[n, m, i] = mask1[n, i] / count[n]
        coef = (grad_s[n0:n1, m0:m1].to(acc) * inv_count[n0:n1, None])[..., None].expand(cn, cm, P)
        if mask1 is not None:
            coef = coef * mask1[n0:n1, None, :]
        if reduce == "maxmean":
            # padded patches carry j = Q: clamp them into range, their coefficient is 0
            best = aux_a[m0:m1, n0:n1].transpose(0, 1).long().clamp_max(Q - 1)
            cols = best + (torch.arange(cm, device=u1.device) * Q)[None, :, None]
            weight = torch.zeros(cn, P, cm * Q, dtype=acc, device=u1.device)
            weight.scatter_add_(2, cols.permute(0, 2, 1), coef.permute(0, 2, 1).contiguous())
        else:
            sim = _sim(u1c, u2c, None if mask2 is None else mask2[m0:m1])
            p = torch.exp(sim / temperature - aux_a[n0:n1, m0:m1, :, None])
            # d/dsim_j of sum_j p_j sim_j = p_j * (1 + (sim_j - f) / temperature)
            dsim = torch.where(p > 0, p * (1 + (sim - aux_b[n0:n1, m0:m1, :, None]) / temperature), 0.0)
            weight = (dsim * coef[..., None]).permute(0, 2, 1, 3).reshape(cn, P, cm * Q)
        du1[n0:n1] += torch.matmul(weight, u2c.reshape(cm * Q, D))
        du2[m0:m1] += (weight.reshape(cn * P, cm * Q).t() @ u1c.reshape(cn * P, D)).view(cm, Q, D)
    return du1.to(u1.dtype), du2.to(u2.dtype)
