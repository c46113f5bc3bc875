"""Sharded exact Hamming top-k over ``torch.distributed``.

The database is split across the ranks of a process group, rank r holding a contiguous shard
(global ids follow rank order: rank 0's codes first). Every rank searches its own shard with
:func:`hashkern.ops.search.hamming_topk`, the per-rank lists are all-gathered and merged by the
(distance, global id) key, so every rank gets the result a single process would get on the
concatenated database, ties included.

Works with any backend whose collectives support the tensors' device: gloo for CPU tensors,
NCCL for CUDA tensors.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from hashkern._validation import check_int
from hashkern.ops.hamming import check_packed_pair
from hashkern.ops.search import hamming_topk

__all__ = ["sharded_hamming_topk"]


def _all_gather(tensor: torch.Tensor, group) -> list[torch.Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return parts


def sharded_hamming_topk(q_packed: torch.Tensor, db_shard: torch.Tensor, k: int, *, group=None,
                         backend: str = "auto"):
    """Global top-k over a database sharded across the ranks of ``group``.

    Must be called by every rank of the group with the same queries and the same k.

    Args:
        q_packed: uint8 ``[nq, W]`` queries, identical on every rank.
        db_shard: uint8 ``[N_r, W]`` this rank's shard (may be empty on some ranks).
        k: ``1 <= k <= sum of N_r``.
        group: process group (default: the world).
        backend: kernel for the local search (see :func:`hashkern.ops.search.hamming_topk`).

    Returns:
        ``(dist int32 [nq, k], idx int64 [nq, k])`` on every rank, ``idx`` being global ids,
        ordered by (distance, global id) ascending.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("sharded_hamming_topk needs an initialised torch.distributed process group "
                           "(torch.distributed.init_process_group)")
    check_packed_pair("q_packed", q_packed, "db_shard", db_shard)
    k = check_int("k", k, low=1)
    rank = dist.get_rank(group)
    device = q_packed.device
    # Every rank learns every shard's size, and that all ranks agree on the queries' shape and k.
    meta = torch.tensor([db_shard.shape[0], q_packed.shape[0], q_packed.shape[1], k], dtype=torch.int64, device=device)
    metas = torch.stack(_all_gather(meta, group)).cpu()
    if not bool((metas[:, 1:] == metas[0, 1:]).all()):
        raise ValueError(
            "every rank must pass queries of the same shape and the same k; got (nq, bytes per code, k) = "
            + ", ".join(f"rank {i}: {tuple(m[1:].tolist())}" for i, m in enumerate(metas))
        )
    sizes = metas[:, 0]
    total = int(sizes.sum())
    if total == 0:
        raise ValueError("the sharded database is empty on every rank: nothing to search")
    if k > total:
        raise ValueError(f"k must be <= {total}, the size of the whole sharded database, got {k}")
    offset = int(sizes[:rank].sum())
    n_q, local_n = q_packed.shape[0], db_shard.shape[0]

    # Local top-min(k, N_r), padded to k with entries that sort after every real one.
    local_dist = torch.full((n_q, k), 8 * q_packed.shape[1] + 1, dtype=torch.int32, device=device)
    local_idx = torch.full((n_q, k), total, dtype=torch.int64, device=device)
    local_k = min(k, local_n)
    if local_k > 0 and n_q > 0:
        d, i = hamming_topk(q_packed, db_shard, local_k, backend=backend)
        local_dist[:, :local_k] = d
        local_idx[:, :local_k] = i + offset

    all_dist = torch.cat(_all_gather(local_dist, group), dim=1)  # [nq, world * k]
    all_idx = torch.cat(_all_gather(local_idx, group), dim=1)
    key = all_dist.to(torch.int64) * (total + 1) + all_idx  # unique: ids differ across entries
    best = torch.topk(key, k, dim=1, largest=False, sorted=True).values
    return (torch.div(best, total + 1, rounding_mode="floor").to(torch.int32), best % (total + 1))
