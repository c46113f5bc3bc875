"""Plain-PyTorch Hamming search: the oracle of the kernels (``torch_impl.py`` blocks it into the ``torch`` backend).

Codes are packed uint8 rows ``[n, W]`` (bit j of a code in byte j // 8, bit j % 8, padding
bits zero), so the Hamming distance is the popcount of the XOR of two rows
(:func:`hashkern.ops.hamming.reference.hamming_distance_reference`); selection is a stable
sort, so ties keep index order.
"""
from __future__ import annotations

import torch

from hashkern.ops.hamming.reference import hamming_distance_reference


def hamming_topk_reference(q_packed: torch.Tensor, db_packed: torch.Tensor, k: int):
    """Exact k nearest codes, ordered by (distance, database index) ascending.

    ``q_packed [nq, W]``, ``db_packed [N, W]`` uint8, ``1 <= k <= N`` ->
    ``(dist int32 [nq, k], idx int64 [nq, k])``. A stable sort keeps ties in index order.
    """
    dist = hamming_distance_reference(q_packed, db_packed)
    sorted_dist, order = torch.sort(dist, dim=1, stable=True)
    return sorted_dist[:, :k].contiguous(), order[:, :k].contiguous()


def hamming_radius_reference(q_packed: torch.Tensor, db_packed: torch.Tensor, r: int):
    """Every database code within Hamming distance ``r`` of each query, CSR style.

    Returns ``(offsets int64 [nq + 1], idx int64 [nnz], dist int32 [nnz])``: the hits of query
    i are ``idx[offsets[i]:offsets[i + 1]]``, ordered by (distance, database index) ascending.
    """
    dist = hamming_distance_reference(q_packed, db_packed)
    sorted_dist, order = torch.sort(dist, dim=1, stable=True)
    hit = sorted_dist <= min(r, 8 * q_packed.shape[1])  # an r past int32 would wrap in the comparison
    counts = hit.sum(1)
    offsets = torch.zeros(dist.shape[0] + 1, dtype=torch.int64, device=dist.device)
    offsets[1:] = torch.cumsum(counts, 0)
    return offsets, order[hit], sorted_dist[hit]
