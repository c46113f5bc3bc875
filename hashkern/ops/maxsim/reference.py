"""Plain-PyTorch oracle of MaxSim (materialises every similarity block; float64-safe).

``score[n, j] = scale_n * sum_{i real in q[n]} max_{t real in document j} dot(q[n, i], d_j[t])``, with
``scale_n = 1`` (``reduce="sum"``, ColBERT) or ``1 / #real query tokens`` (``reduce="mean"``, WCH), on
L2-normalised tokens when ``normalize``. Ties send the gradient to the first maximising token. Used by
the tests as the oracle and by the benchmark as the naive baseline.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCES = ("sum", "mean")


def pad_packed(d: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """d [T, D] with offsets [nd + 1] -> padded [nd, Lmax, D] (zeros past each end), mask [nd, Lmax]."""
    lengths = offsets.diff()
    span = torch.arange(int(lengths.max()), device=d.device)
    real = span[None] < lengths[:, None]
    padded = d.new_zeros(lengths.numel(), span.numel(), d.shape[-1])
    padded[real] = d  # row-major order of the real positions is the packed order
    return padded, real


def _score(sim: torch.Tensor, q_mask, d_mask, reduce: str) -> torch.Tensor:
    """sim [..., Lq, Ld] with d_mask broadcast to [..., 1, Ld] and q_mask to [..., Lq] -> [...]."""
    if d_mask is not None:
        sim = sim.masked_fill(~d_mask, float("-inf"))
    best = sim.gather(-1, sim.argmax(-1, keepdim=True)).squeeze(-1)  # the first argmax carries the gradient
    if q_mask is not None:
        best = best * q_mask
    total = best.sum(-1)
    if reduce == "mean":
        total = total / (best.shape[-1] if q_mask is None else q_mask.sum(-1))
    return total


def maxsim_reference(q: torch.Tensor, d: torch.Tensor, q_mask: torch.Tensor | None = None,
                     d_mask: torch.Tensor | None = None, *, offsets: torch.Tensor | None = None,
                     reduce: str = "sum", normalize: bool = False) -> torch.Tensor:
    """q [nq, Lq, D]; d [nd, Ld, D] with d_mask [nd, Ld], or packed d [T, D] with offsets [nd + 1]
    -> [nq, nd]. No input checks."""
    if offsets is not None:
        d, d_mask = pad_packed(d, offsets)
    if normalize:
        q, d = F.normalize(q, dim=-1), F.normalize(d, dim=-1)
    sim = torch.einsum("nid,jtd->njit", q, d)
    return _score(sim, None if q_mask is None else q_mask[:, None, :],
                  None if d_mask is None else d_mask[None, :, None, :], reduce)


def maxsim_paired_reference(q: torch.Tensor, d: torch.Tensor, q_mask: torch.Tensor | None = None,
                            d_mask: torch.Tensor | None = None, *, offsets: torch.Tensor | None = None,
                            reduce: str = "sum", normalize: bool = False) -> torch.Tensor:
    """q [nq, Lq, D]; d [nq, c, Ld, D] with d_mask [nq, c, Ld], or packed d [T, D] with offsets
    [nq c + 1] -> [nq, c]. No input checks."""
    nq = q.shape[0]
    if offsets is not None:
        d, d_mask = pad_packed(d, offsets)
        d, d_mask = d.view(nq, -1, *d.shape[1:]), d_mask.view(nq, -1, d_mask.shape[-1])
    if normalize:
        q, d = F.normalize(q, dim=-1), F.normalize(d, dim=-1)
    sim = torch.einsum("nid,nctd->ncit", q, d)
    return _score(sim, None if q_mask is None else q_mask[:, None, :],
                  None if d_mask is None else d_mask[:, :, None, :], reduce)
