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

from hashkern._dispatch import OpBackends, declare, resolve_backend
from hashkern._validation import as_tensor, check_int
from hashkern.ops.hamming import check_packed_pair
from hashkern.ops.search import autograd  # noqa: F401  (registers the fakes for torch.compile)
from hashkern.ops.search.reference import hamming_radius_reference, hamming_topk_reference
from hashkern.ops.search.torch_impl import radius_torch, topk_torch

__all__ = [
    "hamming_radius",
    "hamming_radius_reference",
    "hamming_topk",
    "hamming_topk_reference",
]

# resolve_backend skips compiled backends this build of hashkern._C lacks.
TOPK_BACKENDS = declare(OpBackends("hamming_topk", preference=("cuda", "cpu", "torch")))
RADIUS_BACKENDS = declare(OpBackends("hamming_radius", preference=("cuda", "cpu", "torch"),
                                     kernel="hamming_radius_count"))


def check_search_inputs(q_packed: torch.Tensor, db_packed: torch.Tensor, q_name: str = "q_packed",
                        db_name: str = "db_packed") -> None:
    """Both uint8 ``[n, W]`` with the same W, on one device, and a non-empty database."""
    check_packed_pair(q_name, q_packed, db_name, db_packed)
    if db_packed.shape[0] == 0:
        raise ValueError(f"{db_name} is empty: the database needs at least one code to search")


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
    chosen = resolve_backend(backend, TOPK_BACKENDS, q_packed.device)
    q_packed, db_packed = q_packed.contiguous(), db_packed.contiguous()
    if chosen == "torch" or q_packed.shape[0] == 0:
        return topk_torch(q_packed, db_packed, k)
    dist = torch.empty(q_packed.shape[0], k, dtype=torch.int32, device=q_packed.device)
    idx = torch.empty(q_packed.shape[0], k, dtype=torch.int64, device=q_packed.device)
    torch.ops.hashkern.hamming_topk(q_packed, db_packed, k, dist, idx)
    return dist, idx


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
    chosen = resolve_backend(backend, RADIUS_BACKENDS, q_packed.device)
    q_packed, db_packed = q_packed.contiguous(), db_packed.contiguous()
    if chosen == "torch":
        return radius_torch(q_packed, db_packed, r)
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

