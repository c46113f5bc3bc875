"""Exact Hamming search over packed codes: top-k and radius queries.

``hamming_topk`` returns the k nearest database codes of every query, ordered by
(distance, database index) ascending: exact and deterministic for every k from 1 to N.
``hamming_radius`` returns every code within distance r, CSR style, in the same order.

Backends: ``cpu`` / ``cuda`` are the compiled kernels of ``hashkern._C`` (a per-query
distance histogram selects the k nearest in O(N) for any k; the CUDA kernel never writes the
``[nq, N]`` distance matrix), ``torch`` a chunked plain-PyTorch path.
"""
from __future__ import annotations

import torch

from hashkern import _ext
from hashkern._dispatch import resolve_backend
from hashkern._validation import as_tensor, check_int
from hashkern.ops.hamming import check_packed_pair
from hashkern.ops.hamming.reference import hamming_distance_reference
from hashkern.ops.search.reference import (
    _query_block,
    hamming_radius_reference,
    hamming_topk_reference,
)

__all__ = [
    "hamming_radius",
    "hamming_radius_reference",
    "hamming_topk",
    "hamming_topk_reference",
]


# resolve_backend skips compiled backends this build of hashkern._C lacks.
_PREFERENCE = ("cuda", "cpu", "torch")


def check_search_inputs(q_packed: torch.Tensor, db_packed: torch.Tensor, q_name: str = "q_packed",
                        db_name: str = "db_packed") -> None:
    """Both uint8 ``[n, W]`` with the same W, on one device, and a non-empty database."""
    check_packed_pair(q_name, q_packed, db_name, db_packed)
    if db_packed.shape[0] == 0:
        raise ValueError(f"{db_name} is empty: the database needs at least one code to search")


def _topk_torch(q_packed: torch.Tensor, db_packed: torch.Tensor, k: int):
    """Chunked top-k: a (distance, index) key makes ``torch.topk`` exact and deterministic."""
    n_q, n_db = q_packed.shape[0], db_packed.shape[0]
    dist = torch.empty(n_q, k, dtype=torch.int32, device=q_packed.device)
    idx = torch.empty(n_q, k, dtype=torch.int64, device=q_packed.device)
    position = torch.arange(n_db, device=q_packed.device)
    block = _query_block(n_db, q_packed.shape[1])
    for start in range(0, n_q, block):
        block_dist = hamming_distance_reference(q_packed[start:start + block], db_packed)
        key = block_dist.to(torch.int64) * n_db + position
        best = torch.topk(key, k, dim=1, largest=False, sorted=True).values
        dist[start:start + block] = torch.div(best, n_db, rounding_mode="floor").to(torch.int32)
        idx[start:start + block] = best % n_db
    return dist, idx


def hamming_topk(q_packed: torch.Tensor, db_packed: torch.Tensor, k: int, *, backend: str = "auto"):
    """The k nearest database codes of each query in Hamming distance.

    Args:
        q_packed: uint8 ``[nq, W]`` packed query codes (``hashkern.pack_bits``); a tensor or a
            NumPy array (faiss's layout: least significant bit first).
        db_packed: uint8 ``[N, W]`` packed database codes, same W, same device.
        k: ``1 <= k <= N`` (an int or a NumPy integer); no other limit.
        backend: ``"auto" | "cuda" | "cpu" | "torch"``.

    Returns:
        ``(dist int32 [nq, k], idx int64 [nq, k])`` ordered by (distance, index) ascending:
        ties are broken by the smaller database index, so results are reproducible.
    """
    q_packed, db_packed = as_tensor(q_packed), as_tensor(db_packed)
    check_search_inputs(q_packed, db_packed)
    k = check_int("k", k, low=1, high=db_packed.shape[0])
    chosen = resolve_backend(backend, "hamming_topk", q_packed.device, _PREFERENCE)
    q_packed, db_packed = q_packed.contiguous(), db_packed.contiguous()
    if chosen == "torch" or q_packed.shape[0] == 0:
        return _topk_torch(q_packed, db_packed, k)
    dist = torch.empty(q_packed.shape[0], k, dtype=torch.int32, device=q_packed.device)
    idx = torch.empty(q_packed.shape[0], k, dtype=torch.int64, device=q_packed.device)
    torch.ops.hashkern.hamming_topk(q_packed, db_packed, k, dist, idx)
    return dist, idx


def _radius_torch(q_packed: torch.Tensor, db_packed: torch.Tensor, r: int):
    block = _query_block(db_packed.shape[0], q_packed.shape[1])
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


def hamming_radius(q_packed: torch.Tensor, db_packed: torch.Tensor, r: int, *, backend: str = "auto"):
    """Every database code within Hamming distance ``r`` (inclusive) of each query.

    Args:
        q_packed: uint8 ``[nq, W]``; db_packed: uint8 ``[N, W]``, same W and device (tensors
            or NumPy arrays).
        r: radius, an int (or NumPy integer) in ``[0, 2**63 - 1]``; any r >= K (the code length)
            returns every code. Inclusive: faiss's ``range_search`` keeps d < radius, so its
            radius r + 1 gives this set.
        backend: ``"auto" | "cuda" | "cpu" | "torch"``.

    Returns:
        ``(offsets int64 [nq + 1], idx int64 [nnz], dist int32 [nnz])``: query i's hits are
        ``idx[offsets[i]:offsets[i + 1]]`` ordered by (distance, index) ascending.
    """
    q_packed, db_packed = as_tensor(q_packed), as_tensor(db_packed)
    check_search_inputs(q_packed, db_packed)
    # Clamped to the longest possible distance, so no backend ever sees an r its integers would wrap.
    r = min(check_int("r", r, low=0, high=2**63 - 1), 8 * q_packed.shape[1])
    chosen = resolve_backend(backend, "hamming_radius_count", q_packed.device, _PREFERENCE)
    q_packed, db_packed = q_packed.contiguous(), db_packed.contiguous()
    if chosen == "torch":
        return _radius_torch(q_packed, db_packed, r)
    n_q = q_packed.shape[0]
    counts = torch.empty(n_q, dtype=torch.int64, device=q_packed.device)
    torch.ops.hashkern.hamming_radius_count(q_packed, db_packed, r, counts)
    offsets = torch.zeros(n_q + 1, dtype=torch.int64, device=q_packed.device)
    torch.cumsum(counts, 0, out=offsets[1:])
    nnz = int(offsets[-1])
    idx = torch.empty(nnz, dtype=torch.int64, device=q_packed.device)
    dist = torch.empty(nnz, dtype=torch.int32, device=q_packed.device)
    torch.ops.hashkern.hamming_radius_fill(q_packed, db_packed, r, offsets, idx, dist)
    return offsets, idx, dist


def _register_fakes() -> None:
    """Shapes for torch.compile: the compiled ops write caller-allocated outputs."""
    if not _ext.extension_loaded() or not hasattr(torch.ops.hashkern, "hamming_topk"):
        return

    @torch.library.register_fake("hashkern::hamming_topk")
    def _(q_packed, db_packed, k, dist, idx):
        return None

    @torch.library.register_fake("hashkern::hamming_radius_count")
    def _(q_packed, db_packed, r, counts):
        return None

    @torch.library.register_fake("hashkern::hamming_radius_fill")
    def _(q_packed, db_packed, r, offsets, idx, dist):
        return None


_register_fakes()
