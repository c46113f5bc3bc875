"""What the backends share: the documents as one token matrix with offsets, and the padded backends.

Every backend takes the documents as token rows ``tokens [T, D]`` with ``offsets [nd + 1]`` (document
j is ``tokens[offsets[j]:offsets[j + 1]]``) and an optional ``token_mask [T]``; ``padded_len`` is the
common length when the documents came padded (``offsets = arange(nd + 1) * padded_len``), else 0.
``group`` is 0 for all pairs (scores ``[nq, nd]``) or c > 0 for paired scoring (document j against
query ``j // c`` only, scores ``[nd]``). ``scale [nq]`` multiplies each query's sum over its real
tokens (1 for ColBERT's sum, 1 / count for the mean).

The ``torch`` and ``triton`` backends run patch similarity's GEMM kernels (``hashkern.ops.patchsim``:
the max and first argmax of each (query token, document), the weighted sum over query tokens, and
their gather backward) on the documents padded to ``[nd, Lmax, D]``.
"""
from __future__ import annotations

import torch

from hashkern.ops.patchsim._common import acc_dtype

__all__ = ["acc_dtype", "score_shape", "argmax_rows", "padded_backend"]


def score_shape(nq: int, nd: int, group: int) -> tuple[int, ...]:
    return (nd,) if group > 0 else (nq, nd)


def argmax_rows(nq: int, Lq: int, group: int) -> int:
    """Query rows each document is scored against: all nq Lq, or its own query's Lq."""
    return Lq if group > 0 else nq * Lq


def _padded(tokens, offsets, token_mask, padded_len: int):
    """-> docs [nd, L, D], mask [nd, L] or None, real [nd, L] (positions inside a document) or None."""
    nd, D = offsets.numel() - 1, tokens.shape[1]
    if padded_len > 0:
        mask = None if token_mask is None else token_mask.view(nd, padded_len)
        return tokens.view(nd, padded_len, D), mask, None
    lengths = offsets.diff()
    span = torch.arange(int(lengths.max()), device=tokens.device)
    real = span[None] < lengths[:, None]
    position = (offsets[:-1, None] + span[None]).clamp_max(tokens.shape[0] - 1)  # past the end: masked anyway
    mask = real if token_mask is None else real & token_mask[position]
    return tokens[position], mask, real


def padded_backend(fwd, bwd):
    """MaxSim forward and backward over patch similarity's ``fwd(u1, u2, mask1, mask2, inv_count, reduce,
    temperature)`` and ``bwd(grad, u1, u2, mask1, mask2, inv_count, aux_a, aux_b, reduce, temperature)``
    (reduce="maxmean"; inv_count is the scale). Paired scoring runs one query against its c documents
    at a time."""

    def pairs(group: int, nq: int):
        return [(slice(None), slice(None))] if group == 0 else \
            [(slice(n, n + 1), slice(n * group, (n + 1) * group)) for n in range(nq)]

    def forward(q, q_mask, scale, tokens, offsets, token_mask, group, padded_len, need_argmax):
        docs, mask, _ = _padded(tokens, offsets, token_mask, padded_len)
        scores, argmax = [], []
        for qs, ds in pairs(group, q.shape[0]):
            s, a, _ = fwd(q[qs], docs[ds], None if q_mask is None else q_mask[qs], None if mask is None else mask[ds],
                          scale[qs], "maxmean", 1.0)
            scores.append(s.reshape(-1) if group > 0 else s)
            argmax.append(a)
        return torch.cat(scores), torch.cat(argmax)

    def backward(grad, q, q_mask, scale, tokens, offsets, token_mask, group, padded_len, argmax):
        docs, mask, real = _padded(tokens, offsets, token_mask, padded_len)
        dq, dd = [], []
        for qs, ds in pairs(group, q.shape[0]):
            g = grad[ds][None] if group > 0 else grad
            a, b = bwd(g, q[qs], docs[ds], None if q_mask is None else q_mask[qs], None if mask is None else mask[ds],
                       scale[qs], argmax[ds], argmax.new_empty(0), "maxmean", 1.0)
            dq.append(a)
            dd.append(b)
        dq, dd = torch.cat(dq), torch.cat(dd)
        return dq, (dd.reshape(tokens.shape) if real is None else dd[real])

    return forward, backward
