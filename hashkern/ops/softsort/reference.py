"""Plain-PyTorch SoftSort (Prillo & Eisenschlos, 2020): the oracle for every softsort kernel.

These materialise the relaxed permutation ``P [b, n, n]`` (and ``E [b, n, d]``), so they
are for tests and small n only; the library paths never build ``P``.

For row ``s_b`` with sorted values ``q = sort(s_b)``::

    P[b, k, j] = softmax_j(-|q_k - s_bj| / tau)

Gradients flow through both ``s_bj`` and the sorted values ``q_k`` (``torch.sort``'s own
gradient), and ``|x|`` has gradient ``sign(x)`` with ``sign(0) = 0``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_sort_reference(s: torch.Tensor, tau: float, descending: bool = True, hard: bool = False) -> torch.Tensor:
    """``s [b, n]`` -> ``P [b, n, n]`` (rank k, sample j).

    ``hard=True`` returns the straight-through permutation: forward is the one-hot of the sort
    index (a true permutation even with ties), backward is the soft ``P``'s.
    """
    q, idx = torch.sort(s, dim=-1, descending=descending, stable=True)
    distance = (q.unsqueeze(-1) - s.unsqueeze(-2)).abs()
    if 1.0 / tau > torch.finfo(s.dtype).max:  # tau too small for s's dtype: 0/tau must stay 0, not NaN
        scores = (-(distance.double() / tau)).to(s.dtype)
    else:
        scores = -distance / tau
    p = torch.softmax(scores, dim=-1)
    if not hard:
        return p
    p_hard = torch.zeros_like(p).scatter_(-1, idx.unsqueeze(-1), 1.0)
    return p_hard - p.detach() + p


def soft_sort_gather_reference(s: torch.Tensor, v: torch.Tensor, tau: float, descending: bool = True) -> torch.Tensor:
    """``s [b, n]``, ``v [n, d]`` or ``[b, n, d]`` -> ``E = P v`` ``[b, n, d]``."""
    p = soft_sort_reference(s, tau, descending)
    return torch.matmul(p.to(v.dtype), v)


def cosine_rows(e: torch.Tensor, z2: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``e [b, n, d]``, ``z2 [b, d]`` -> ``c [b, n]``, ``c[i, k] = cos(e[i, k], z2[i])``.

    Both sides are normalised with ``max(norm, eps)`` (as ``F.normalize``) so a zero vector
    gives 0, never NaN.
    """
    u = F.normalize(z2, dim=-1, eps=eps)
    norm = torch.linalg.vector_norm(e, dim=-1).clamp_min(eps)
    return (e * u.unsqueeze(-2)).sum(-1) / norm


def sorted_cosine_reference(s: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, tau: float,
                            descending: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``s [n, n]``, ``z1 [n, d]``, ``z2 [n, d]`` -> ``c [n, n]``, ``c[i, k] = cos((P_i z1)[k], z2[i])``."""
    e = soft_sort_gather_reference(s, z1, tau, descending)
    return cosine_rows(e, z2, eps)
