"""What every SoftSort scan backend (``cpu``, ``triton``, ``torch``) shares: the contract and the cosine's gradient.

Contract shared by every backend (``q``, ``v``, ``u``, ``grad`` in one float dtype, fp32 or fp64):

* forward (Triton ``softsort_scan_fwd``, ``softsort_scan_torch_fwd``, C++ through ``autograd._cpu_fwd``)
  ``(q, idx, v, tau, u, eps)``: ``q [b, n]`` rows sorted descending, ``idx [b, n]``
  their sort permutation, ``v [1 or b, n, d]`` -> ``(E [b, n, d], None)`` when ``u`` is None,
  else ``(c [b, n], norms [b, n])`` with ``u [b, d]`` unit rows and ``norms = |E_r|``;
* backward ``(q, idx, v, tau, u, eps, grad, c, norms)`` -> ``(ds [b, n], dv like v, du [b, d] or None)``.
"""
from __future__ import annotations

import torch


def cosine_grad_coefficients(dc, c, norms, eps):
    """Backward of ``c = E.u / max(|E|, eps)`` per (row, rank), all ``[b, n]``: ``dE = alpha u + beta E``,
    ``delta = dE.E`` (0 unless the norm is clamped: the cosine is scale-invariant) and ``du = du_coef E``."""
    big = norms > eps
    safe = torch.where(big, norms, torch.ones_like(norms))
    alpha = torch.where(big, dc / safe, dc / eps)
    beta = torch.where(big, -dc * c / (safe * safe), torch.zeros_like(dc))
    delta = torch.where(big, torch.zeros_like(dc), dc * c)
    return alpha, beta, delta, dc / norms.clamp_min(eps)


def refuse_shared_atomics_if_deterministic(shared: bool, q: torch.Tensor) -> None:
    """The Triton backwards add the gradient of shared values ``[1, n, d]`` with float atomics on a GPU."""
    if shared and q.is_cuda and torch.are_deterministic_algorithms_enabled():
        raise RuntimeError("softsort backend='triton' accumulates the gradient of shared values with float "
                           "atomics, which torch.use_deterministic_algorithms(True) forbids; use backend='torch'")
