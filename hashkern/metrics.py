"""Retrieval metrics for hash codes: mAP@k, precision-recall over Hamming radii or rank cut-offs, P@H<=r.

Every metric takes its arrays by keyword only (``q_codes=``, ``db_codes=``, ``q_labels=``,
``db_labels=``): libraries disagree on the order (DeepHash-pytorch's ``CalcTopMap(rB, qB, rL, qL,
topk)`` puts the database first), and a swapped positional call would silently evaluate the
database against the queries.

Relevance follows DeepHash-pytorch / CIBHash: with single-label ``int [n]`` labels a database
item is relevant when its label equals the query's; with multi-hot ``[n, C]`` labels when they
share at least one label. AP@k of a query is the mean of precision@j over the relevant
positions j <= k, normalised by the relevant items found in the top k (0 when there are none);
mAP is its mean over all queries.

Labels: class ids are an integer tensor ``[n]``, or an integer column ``[n, 1]`` (read as class
ids, not as a one-class multi-hot); multi-hot labels ``[n, C]`` are bool, or hold only 0 and 1
(NaN and other values are refused); a one-class multi-hot is a bool or float ``[n, 1]``.

Codes are ``±1`` (or ``{0, 1}`` of a dtype other than uint8, or bool) tensors ``[n, K]``, or packed
uint8 ``[n, ceil(K/8)]`` with ``nbits=K``: uint8 is always packed and needs ``nbits``, the same rule
as :class:`~hashkern.index.HammingIndex` (:func:`hashkern.codes.as_packed`). Queries are
processed in blocks so memory stays bounded for any database size.
"""
from __future__ import annotations

import operator

import torch

from hashkern._validation import as_tensor, check_int, check_tensor
from hashkern.codes import as_packed, hamming_distance
from hashkern.ops.search import check_search_inputs, hamming_topk

__all__ = ["mean_average_precision", "precision_at_radius", "precision_recall_curve", "precision_recall_at_ranks"]

_BUDGET = 1 << 26  # elements per block of query x database work


def _packed(name: str, codes, nbits: int | None) -> tuple[torch.Tensor, int]:
    """Codes ``[n, K]`` or packed uint8 with ``nbits`` -> (packed uint8 ``[n, ceil(K/8)]``, K)."""
    codes = as_tensor(codes)
    check_tensor(name, codes, ndim=2)
    if codes.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (no data): metrics need code values")
    return as_packed(name, codes, nbits)


def _is_integer(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def _labels(name: str, labels, n: int, codes_name: str) -> torch.Tensor:
    """Class ids ``[n]`` (or an integer column ``[n, 1]``, read as class ids), or multi-hot ``[n, C]`` of {0, 1}."""
    labels = as_tensor(labels)
    check_tensor(name, labels, ndim=(1, 2))
    if labels.shape[0] != n:
        raise ValueError(f"{name} must have one row per code of {codes_name} ({n}), got {labels.shape[0]}")
    if labels.is_complex():
        raise TypeError(f"{name} must be real or bool, got dtype {labels.dtype}")
    if labels.dim() == 1 and not _is_integer(labels):
        raise TypeError(f"{name} must be integer class ids [n] or multi-hot [n, C], got dtype {labels.dtype}")
    if labels.dim() == 2 and labels.shape[1] == 1 and _is_integer(labels):
        return labels[:, 0]  # an integer column is class ids, as [n]; a one-class multi-hot is bool or float
    if labels.dim() == 2 and labels.shape[1] == 0:
        raise ValueError(f"{name} is multi-hot with 0 classes (shape {tuple(labels.shape)}): it needs C >= 1 columns")
    if labels.dim() == 2 and labels.dtype != torch.bool and labels.numel() \
            and not bool(((labels == 0) | (labels == 1)).all()):
        bad = labels[(labels != 0) & (labels != 1)][0].item()
        raise ValueError(f"{name} is multi-hot [n, C], so its values must be 0 or 1 (or bool), got {bad} "
                         "(class ids go in an integer [n] or [n, 1] tensor)")
    return labels


def _prepare(q_codes, db_codes, q_labels, db_labels, nbits):
    q_packed, q_bits = _packed("q_codes", q_codes, nbits)
    db_packed, db_bits = _packed("db_codes", db_codes, nbits)
    if q_bits != db_bits:
        raise ValueError(f"q_codes and db_codes must have the same number of bits, got {q_bits} and {db_bits}")
    check_search_inputs(q_packed, db_packed, "q_codes", "db_codes")
    q_labels = _labels("q_labels", q_labels, q_packed.shape[0], "q_codes")
    db_labels = _labels("db_labels", db_labels, db_packed.shape[0], "db_codes")
    if q_labels.dim() != db_labels.dim() or (q_labels.dim() == 2 and q_labels.shape[1] != db_labels.shape[1]):
        raise ValueError(
            f"q_labels {tuple(q_labels.shape)} and db_labels {tuple(db_labels.shape)} must both be class ids "
            "[n] or both multi-hot [n, C] with the same C"
        )
    for name, t in (("q_labels", q_labels), ("db_labels", db_labels)):
        if t.device != q_packed.device:
            raise ValueError(f"{name} must be on {q_packed.device} like the codes, got {t.device}")
    if q_labels.dim() == 2:  # multi-hot: relevance is a shared label, i.e. a positive dot product
        q_labels, db_labels = (q_labels != 0).float(), (db_labels != 0).float()
    return q_packed, db_packed, q_labels, db_labels, q_bits


def _relevant(q_labels: torch.Tensor, db_labels: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
    """Bool relevance of database items (``idx [b, k]``, or all of them) to each query ``[b]``."""
    if q_labels.dim() == 1:
        db = db_labels[idx] if idx is not None else db_labels[None, :]
        return db == q_labels[:, None]
    if idx is None:
        return (q_labels @ db_labels.T) > 0
    return (db_labels[idx] * q_labels[:, None, :]).sum(-1) > 0


def _histograms(q_packed, db_packed, q_labels, db_labels, nbits, batch_size):
    """Per query and distance d in [0, K]: (items at d, relevant items at d), float64 ``[nq, K+1]``."""
    n_q, n_db, bins = q_packed.shape[0], db_packed.shape[0], nbits + 1
    hist = torch.zeros(n_q, bins, dtype=torch.float64, device=q_packed.device)
    rel_hist = torch.zeros_like(hist)
    block = batch_size or max(1, (_BUDGET >> 4) // n_db)
    for s in range(0, n_q, block):
        dist = hamming_distance(q_packed[s:s + block], db_packed)
        rows = dist.shape[0]
        # One histogram of 2 * (K+1) bins: the distance, with the relevance as its low bit.
        code = (dist * 2 + _relevant(q_labels[s:s + block], db_labels)).long()
        counts = torch.zeros(rows, 2 * bins, dtype=torch.int64, device=dist.device)
        counts.scatter_add_(1, code, torch.ones((), dtype=torch.int64, device=dist.device).expand_as(code))
        counts = counts.view(rows, bins, 2).to(torch.float64)
        hist[s:s + rows] = counts.sum(-1)
        rel_hist[s:s + rows] = counts[..., 1]
    return hist, rel_hist


def _expected_group_sum(a, g, r, r_prev, harmonic):
    """E[sum over relevant positions j of (#relevant up to j) / j] for one tie group.

    The group fills positions a+1..a+g in uniformly random order, r of its g items relevant,
    r_prev relevant items before it. Position a+s is relevant with probability r/g and then
    has (s-1)(r-1)/(g-1) relevant group-mates before it on average, so the sum is
    (r/g) * [(1 + r_prev) * (H(a+g) - H(a)) + (r-1)/(g-1) * (g - (a+1) * (H(a+g) - H(a)))].
    All arguments are float64 tensors of one shape; ``harmonic[n] = H(n)``.
    """
    h = harmonic[(a + g).long()] - harmonic[a.long()]
    safe_g = g.clamp(min=1)
    pair = torch.where(g > 1, (r - 1) / (g - 1).clamp(min=1), torch.zeros_like(g))
    return (r / safe_g) * ((1 + r_prev) * h + pair * (g - (a + 1) * h))


def _log_choose(n, k):
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


def _expected_ap(hist, rel_hist, topk):
    """Exact expected AP@topk per query under uniformly random order inside tied distances."""
    device = hist.device
    harmonic = torch.zeros(topk + 1, dtype=torch.float64, device=device)
    harmonic[1:] = torch.cumsum(1.0 / torch.arange(1, topk + 1, dtype=torch.float64, device=device), 0)
    before = torch.cumsum(hist, 1) - hist  # items at smaller distances: a
    rel_before = torch.cumsum(rel_hist, 1) - rel_hist
    full = (before + hist) <= topk  # whole tie group inside the top k
    group = _expected_group_sum(before.clamp(max=topk), torch.where(full, hist, 0), rel_hist, rel_before, harmonic)
    s_full = torch.where(full & (hist > 0), group, torch.zeros_like(group)).sum(1)
    # The boundary group: its first distance where the top k ends inside (or exactly at) it.
    boundary = (before + hist >= topk).to(torch.int8).argmax(1, keepdim=True)
    a = before.gather(1, boundary)[:, 0]
    g = hist.gather(1, boundary)[:, 0]
    r = rel_hist.gather(1, boundary)[:, 0]
    r_b = rel_before.gather(1, boundary)[:, 0]
    t = topk - a  # items of the boundary group that make the cut (may be all of it: then full)
    take_all = t >= g  # already counted in s_full
    most = int(torch.minimum(t, r).max())
    x = torch.arange(most + 1, dtype=torch.float64, device=device)[None, :]  # relevant among the t
    t_, g_, r_ = t[:, None], g[:, None], r[:, None]
    valid = (x <= r_) & (x <= t_) & (t_ - x <= g_ - r_)
    # Hypergeometric P(x relevant among t drawn from g with r relevant); invalid x get 0 below.
    log_p = (_log_choose(r_, torch.minimum(x, r_)) + _log_choose(g_ - r_, (t_ - x).clamp(min=0).minimum(g_ - r_))
             - _log_choose(g_, torch.minimum(t_, g_)))
    prob = torch.where(valid & ~take_all[:, None], torch.exp(log_p), torch.zeros_like(log_p))
    prob[:, 0] += take_all.to(torch.float64)  # nothing more to draw: x = 0 surely
    s_bound = torch.where(take_all[:, None], torch.zeros_like(log_p),
                          _expected_group_sum(a[:, None].expand_as(log_p), t_.expand_as(log_p), x.expand_as(log_p),
                                              r_b[:, None].expand_as(log_p), harmonic))
    found = r_b[:, None] + torch.where(take_all[:, None], r[:, None], x)
    ap = torch.where(found > 0, (s_full[:, None] + s_bound) / found.clamp(min=1), torch.zeros_like(found))
    return (prob * ap).sum(1)


def _index_ap(q_packed, db_packed, q_labels, db_labels, topk, batch_size):
    n_q = q_packed.shape[0]
    aps = torch.zeros(n_q, dtype=torch.float64, device=q_packed.device)
    classes = db_labels.shape[1] if db_labels.dim() == 2 else 1
    block = batch_size or max(1, (_BUDGET >> 2) // (topk * classes))  # [block, topk, C] gathered labels
    ranks = torch.arange(1, topk + 1, dtype=torch.float64, device=q_packed.device)
    for s in range(0, n_q, block):
        _, idx = hamming_topk(q_packed[s:s + block], db_packed, topk)
        rel = _relevant(q_labels[s:s + block], db_labels, idx).to(torch.float64)
        found = rel.sum(1)
        precision_sum = (torch.cumsum(rel, 1) / ranks * rel).sum(1)
        aps[s:s + block] = torch.where(found > 0, precision_sum / found.clamp(min=1), torch.zeros_like(found))
    return aps


def mean_average_precision(*, q_codes, db_codes, q_labels, db_labels, topk: int | None, ties: str = "index",
                           nbits: int | None = None, batch_size: int | None = None) -> float:
    """mAP@topk of hash-code retrieval. Keyword arguments only.

    Args:
        q_codes: ``[nq, K]`` ±1 codes (or packed uint8 ``[nq, ceil(K/8)]`` with ``nbits``).
        db_codes: ``[N, K]`` likewise.
        q_labels, db_labels: int class ids ``[nq]``/``[N]`` or multi-hot ``[nq, C]``/``[N, C]``.
        topk: cut-off (clipped to N), required; ``None`` means the whole database (DeepHash's
            ``topK=-1``, which in fact slices ``[0:-1]`` and drops the last-ranked item).
        ties: ``"index"`` ranks equal distances by database index (deterministic, like a stable
            sort); ``"expected"`` gives the exact expectation of AP over uniformly random orders
            inside every group of equal distances.
        nbits: bits per code when the codes are packed.
        batch_size: queries per block (default: chosen to bound memory).
    """
    if ties not in ("index", "expected"):
        raise ValueError(f"ties must be 'index' or 'expected', got {ties!r}")
    q_packed, db_packed, q_labels, db_labels, bits = _prepare(q_codes, db_codes, q_labels, db_labels, nbits)
    n_db = db_packed.shape[0]
    topk = n_db if topk is None else min(check_int("topk", topk, low=1), n_db)
    if batch_size is not None:
        check_int("batch_size", batch_size, low=1)
    if q_packed.shape[0] == 0:
        raise ValueError("q_codes is empty: mAP needs at least one query")
    if ties == "index":
        aps = _index_ap(q_packed, db_packed, q_labels, db_labels, topk, batch_size)
    else:
        hist, rel_hist = _histograms(q_packed, db_packed, q_labels, db_labels, bits, batch_size)
        block = max(1, (_BUDGET >> 4) // (topk + 1))  # the boundary group's draws: [block, <= topk + 1]
        aps = torch.cat([_expected_ap(hist[s:s + block], rel_hist[s:s + block], topk)
                         for s in range(0, hist.shape[0], block)])
    return float(aps.mean())


def precision_recall_curve(*, q_codes, db_codes, q_labels, db_labels, nbits: int | None = None,
                           empty: str = "zero", batch_size: int | None = None):
    """Precision and recall of "retrieve everything within Hamming radius r", for r = 0..K (keywords only).

    For the curve over rank cut-offs (the first k items of the ranking), see
    :func:`precision_recall_at_ranks`.

    Returns ``(radii int64 [K+1], precision float64 [K+1], recall float64 [K+1])``, each the mean
    over queries. A query that retrieves nothing at radius r has precision 0 there with
    ``empty="zero"`` (the usual convention), or is left out of that radius' mean with
    ``empty="skip"``. Queries with no relevant item in the database are left out of recall.
    """
    if empty not in ("zero", "skip"):
        raise ValueError(f"empty must be 'zero' or 'skip', got {empty!r}")
    if batch_size is not None:
        check_int("batch_size", batch_size, low=1)
    q_packed, db_packed, q_labels, db_labels, bits = _prepare(q_codes, db_codes, q_labels, db_labels, nbits)
    if q_packed.shape[0] == 0:
        raise ValueError("q_codes is empty: a precision-recall curve needs at least one query")
    hist, rel_hist = _histograms(q_packed, db_packed, q_labels, db_labels, bits, batch_size)
    retrieved, hits = torch.cumsum(hist, 1), torch.cumsum(rel_hist, 1)
    precision = torch.where(retrieved > 0, hits / retrieved.clamp(min=1), torch.zeros_like(hits))
    counted = (retrieved > 0).sum(0) if empty == "skip" else torch.full_like(hits[0], hits.shape[0])
    precision = precision.sum(0) / counted.clamp(min=1)
    total = rel_hist.sum(1, keepdim=True)
    has_relevant = total[:, 0] > 0
    recall = (hits[has_relevant] / total[has_relevant]).sum(0) / has_relevant.sum().clamp(min=1)
    radii = torch.arange(bits + 1, device=hist.device)
    return radii, precision, recall


def precision_at_radius(*, q_codes, db_codes, q_labels, db_labels, r: int = 2, nbits: int | None = None,
                        empty: str = "zero", batch_size: int | None = None) -> float:
    """Mean precision of the items within Hamming distance ``r`` (P@H<=r; r >= K means everything).
    Keyword arguments only."""
    r = check_int("r", r, low=0)
    _, precision, _ = precision_recall_curve(q_codes=q_codes, db_codes=db_codes, q_labels=q_labels,
                                             db_labels=db_labels, nbits=nbits, empty=empty, batch_size=batch_size)
    return float(precision[min(r, precision.shape[0] - 1)])


def _ranks(ranks, n_db: int, device) -> torch.Tensor:
    if ranks is None:
        return torch.arange(1, n_db + 1, device=device)
    if isinstance(ranks, torch.Tensor):
        if ranks.dim() != 1 or ranks.is_floating_point() or ranks.is_complex() or ranks.dtype == torch.bool:
            raise TypeError(f"ranks must be a 1-D integer tensor or a sequence of ints, got {ranks.dtype} "
                            f"of shape {tuple(ranks.shape)}")
        ranks = ranks.tolist()
    if isinstance(ranks, (str, bytes)) or not hasattr(ranks, "__iter__"):
        raise TypeError(f"ranks must be a sequence of ints, got {type(ranks).__name__}")
    # numpy / torch integer scalars become ints; bools and floats are refused by check_int
    ranks = [check_int("ranks", operator.index(r) if hasattr(r, "__index__") and not isinstance(r, bool) else r,
                       low=1, high=n_db) for r in ranks]
    if not ranks:
        raise ValueError("ranks must hold at least one cut-off")
    return torch.tensor(ranks, dtype=torch.int64, device=device)


def precision_recall_at_ranks(*, q_codes, db_codes, q_labels, db_labels, ranks=None, nbits: int | None = None,
                              batch_size: int | None = None):
    """Precision and recall of the first k retrieved items, for each rank cut-off k. Keyword arguments only.

    The ranking is by Hamming distance, ties by database index (as ``mean_average_precision`` with
    ``ties="index"``). precision@k = relevant among the first k / k; recall@k = relevant among the
    first k / relevant in the whole database. Each is the mean over the queries that have at least
    one relevant item in the database (recall is undefined for the others).

    Args:
        ranks: cut-offs k, each in [1, N] (ints, any order); ``None`` (default) for every k = 1..N,
            as DeepHash-pytorch's ``CalcTopMapWithPR``; WCH's ``pr_curve`` uses
            ``[1, 500, 1000, ..., 10000]``.
    Returns:
        ``(ranks int64 [R], precision float64 [R], recall float64 [R])``.
    """
    if batch_size is not None:
        check_int("batch_size", batch_size, low=1)
    q_packed, db_packed, q_labels, db_labels, _ = _prepare(q_codes, db_codes, q_labels, db_labels, nbits)
    n_q, n_db = q_packed.shape[0], db_packed.shape[0]
    if n_q == 0 or n_db == 0:
        raise ValueError(f"{'q_codes' if n_q == 0 else 'db_codes'} is empty: a ranking needs queries and a database")
    ranks = _ranks(ranks, n_db, q_packed.device)
    kmax = int(ranks.max())
    classes = db_labels.shape[1] if db_labels.dim() == 2 else 1
    block = batch_size or max(1, (_BUDGET >> 2) // (max(kmax, n_db) * classes))
    precision = torch.zeros(ranks.shape[0], dtype=torch.float64, device=q_packed.device)
    recall = torch.zeros_like(precision)
    counted = 0
    for s in range(0, n_q, block):
        _, idx = hamming_topk(q_packed[s:s + block], db_packed, kmax)
        q_block = q_labels[s:s + block]
        hits = torch.cumsum(_relevant(q_block, db_labels, idx).to(torch.float64), 1)[:, ranks - 1]  # [b, R]
        total = _relevant(q_block, db_labels).sum(1).to(torch.float64)  # relevant in the whole database
        keep = total > 0
        precision += (hits[keep] / ranks.to(torch.float64)).sum(0)
        recall += (hits[keep] / total[keep, None]).sum(0)
        counted += int(keep.sum())
    return ranks, precision / max(counted, 1), recall / max(counted, 1)
