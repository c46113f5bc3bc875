"""The ``torch`` backend of Hamming search: the reference in blocks of queries, so memory stays bounded."""
from __future__ import annotations

import torch

from hashkern.ops.hamming.reference import hamming_distance_reference
from hashkern.ops.search.reference import hamming_radius_reference


def query_block(n_db: int, width: int, budget_bytes: int = 1 << 27) -> int:
    """Queries per block so that a block's ``[block, N]`` distances and keys stay under ``budget_bytes``."""
    return max(1, budget_bytes // max(1, 16 * n_db + n_db * width))


def topk_torch(q_packed: torch.Tensor, db_packed: torch.Tensor, k: int):
    """Chunked top-k: a (distance, index) key makes ``torch.topk`` exact and deterministic."""
    n_q, n_db = q_packed.shape[0], db_packed.shape[0]
    dist = torch.empty(n_q, k, dtype=torch.int32, device=q_packed.device)
    idx = torch.empty(n_q, k, dtype=torch.int64, device=q_packed.device)
    position = torch.arange(n_db, device=q_packed.device)
    block = query_block(n_db, q_packed.shape[1])
    for start in range(0, n_q, block):
        block_dist = hamming_distance_reference(q_packed[start:start + block], db_packed)
        key = block_dist.to(torch.int64) * n_db + position
        best = torch.topk(key, k, dim=1, largest=False, sorted=True).values
        dist[start:start + block] = torch.div(best, n_db, rounding_mode="floor").to(torch.int32)
        idx[start:start + block] = best % n_db
    return dist, idx


def radius_torch(q_packed: torch.Tensor, db_packed: torch.Tensor, r: int):
    block = query_block(db_packed.shape[0], q_packed.shape[1])
    parts = [hamming_radius_reference(q_packed[s:s + block], db_packed, r)
             for s in range(0, q_packed.shape[0], block)]
    if not parts:
        return (torch.zeros(1, dtype=torch.int64, device=q_packed.device),
                torch.empty(0, dtype=torch.int64, device=q_packed.device),
                torch.empty(0, dtype=torch.int32, device=q_packed.device))
    offsets, base = [parts[0][0][:1]], 0
    for part_offsets, part_idx, _ in parts:
        offsets.append(part_offsets[1:] + base)
        base += part_idx.shape[0]
    return (torch.cat(offsets), torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts]))
