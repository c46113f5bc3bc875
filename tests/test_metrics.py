"""Retrieval metrics against independent per-query NumPy loops and exhaustive tie enumeration."""
import itertools

import numpy as np
import pytest
import torch

from hashkern.codes import pack_bits
from hashkern.metrics import (
    mean_average_precision,
    precision_at_radius,
    precision_recall_at_ranks,
    precision_recall_curve,
)


# Positional shorthands for these tests (queries first); the library itself takes keywords only.
def _map(q, db, ql, dl, topk, **kwargs):
    return mean_average_precision(q_codes=q, db_codes=db, q_labels=ql, db_labels=dl, topk=topk, **kwargs)


def _pr(q, db, ql, dl, **kwargs):
    return precision_recall_curve(q_codes=q, db_codes=db, q_labels=ql, db_labels=dl, **kwargs)


def _p_at_r(q, db, ql, dl, r, **kwargs):
    return precision_at_radius(q_codes=q, db_codes=db, q_labels=ql, db_labels=dl, r=r, **kwargs)


def codes(n, nbits, device, distinct=None):
    if distinct is None:
        return torch.randint(0, 2, (n, nbits), device=device).float() * 2 - 1
    pool = torch.randint(0, 2, (distinct, nbits), device=device).float() * 2 - 1
    return pool[torch.randint(0, distinct, (n,), device=device)]


def numpy_relevance(q_labels, db_labels):
    ql, dl = q_labels.cpu().numpy(), db_labels.cpu().numpy()
    if ql.ndim == 1:
        return (ql[:, None] == dl[None, :]).astype(np.float64)
    return ((ql @ dl.T) > 0).astype(np.float64)


def numpy_distances(q, db):
    q, db = q.double().cpu().numpy(), db.double().cpu().numpy()
    return ((q.shape[1] - q @ db.T) / 2).round().astype(np.int64)


def numpy_map(q, db, q_labels, db_labels, topk):
    """The DeepHash-pytorch / CIBHash loop, with a stable argsort (ties by index)."""
    gnd_all, hamm_all = numpy_relevance(q_labels, db_labels), numpy_distances(q, db)
    total = 0.0
    for gnd, hamm in zip(gnd_all, hamm_all):
        tgnd = gnd[np.argsort(hamm, kind="stable")][:topk]
        tsum = int(tgnd.sum())
        if tsum == 0:
            continue
        count = np.linspace(1, tsum, tsum)
        tindex = np.asarray(np.where(tgnd == 1)).flatten() + 1.0
        total += np.mean(count / tindex)
    return total / q.shape[0]


def enumerated_expected_map(q, db, q_labels, db_labels, topk):
    """Mean AP over every order inside each group of tied distances (exhaustive: tiny N only)."""
    gnd_all, hamm_all = numpy_relevance(q_labels, db_labels), numpy_distances(q, db)
    total = 0.0
    for gnd, hamm in zip(gnd_all, hamm_all):
        groups = [np.flatnonzero(hamm == d) for d in np.unique(hamm)]
        aps = []
        for combo in itertools.product(*[itertools.permutations(g) for g in groups]):
            rel = gnd[np.concatenate(combo)][:topk]
            found = rel.sum()
            aps.append((np.cumsum(rel) / np.arange(1, len(rel) + 1) * rel).sum() / found if found else 0.0)
        total += np.mean(aps)
    return total / q.shape[0]


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("distinct", [None, 5])
def test_map_index_ties_matches_numpy_loop(device, multi_label, distinct):
    q, db = codes(23, 32, device), codes(301, 32, device, distinct)
    if multi_label:
        q_labels = (torch.rand(23, 6, device=device) < 0.25).long()
        db_labels = (torch.rand(301, 6, device=device) < 0.25).long()
    else:
        q_labels, db_labels = torch.randint(0, 4, (23,), device=device), torch.randint(0, 4, (301,), device=device)
    for topk in (1, 17, 300, 301, 5000):
        got = _map(q, db, q_labels, db_labels, topk)
        assert got == pytest.approx(numpy_map(q, db, q_labels, db_labels, topk), abs=1e-12)
    assert _map(q, db, q_labels, db_labels, None) == pytest.approx(
        numpy_map(q, db, q_labels, db_labels, 301), abs=1e-12)
    small_batches = _map(q, db, q_labels, db_labels, 40, batch_size=4)
    assert small_batches == pytest.approx(numpy_map(q, db, q_labels, db_labels, 40), abs=1e-12)


def test_map_packed_codes_with_nbits(device):
    q, db = codes(9, 20, device), codes(50, 20, device)
    ql, dl = torch.randint(0, 3, (9,), device=device), torch.randint(0, 3, (50,), device=device)
    want = _map(q, db, ql, dl, 10)
    assert _map(pack_bits(q), pack_bits(db), ql, dl, 10, nbits=20) == want
    assert _map(q > 0, db > 0, ql, dl, 10) == want  # bool codes


@pytest.mark.parametrize("nbits", [1, 2, 3])
def test_map_expected_ties_is_exact(device, nbits):
    for _ in range(6):
        q, db = codes(3, nbits, device), codes(7, nbits, device)
        if torch.rand(()) < 0.5:
            ql, dl = torch.randint(0, 2, (3,), device=device), torch.randint(0, 2, (7,), device=device)
        else:
            ql = (torch.rand(3, 3, device=device) < 0.5).int()
            dl = (torch.rand(7, 3, device=device) < 0.5).int()
        for topk in (1, 2, 4, 7):
            got = _map(q, db, ql, dl, topk, ties="expected")
            assert got == pytest.approx(enumerated_expected_map(q, db, ql, dl, topk), abs=1e-12)


def test_map_expected_equals_index_without_ties(device):
    # Database code i differs from the all-ones query in its first i bits: distances are distinct.
    nbits = 24
    db = torch.ones(nbits + 1, nbits, device=device)
    for i in range(nbits + 1):
        db[i, :i] = -1
    q = torch.ones(2, nbits, device=device)
    ql, dl = torch.tensor([0, 1], device=device), torch.randint(0, 2, (nbits + 1,), device=device)
    for topk in (1, 10, nbits + 1):
        a = _map(q, db, ql, dl, topk, ties="expected")
        assert a == pytest.approx(_map(q, db, ql, dl, topk), abs=1e-12)


def test_map_no_relevant_item_counts_zero(device):
    q, db = codes(4, 16, device), codes(30, 16, device)
    assert _map(q, db, torch.full((4,), 7, device=device),
                                  torch.zeros(30, dtype=torch.long, device=device), 10) == 0.0
    assert _map(q, db, torch.zeros(4, dtype=torch.long, device=device),
                                  torch.zeros(30, dtype=torch.long, device=device), 10, ties="expected") == 1.0


def numpy_pr(q, db, q_labels, db_labels, empty):
    gnd, hamm = numpy_relevance(q_labels, db_labels), numpy_distances(q, db)
    precision, recall = [], []
    for r in range(q.shape[1] + 1):
        retrieved = hamm <= r
        n_ret, hits = retrieved.sum(1), (retrieved * gnd).sum(1)
        p = np.where(n_ret > 0, hits / np.maximum(n_ret, 1), 0.0)
        precision.append(p.mean() if empty == "zero" else (p[n_ret > 0].mean() if (n_ret > 0).any() else 0.0))
        has = gnd.sum(1) > 0
        recall.append((hits[has] / gnd.sum(1)[has]).mean())
    return np.array(precision), np.array(recall)


@pytest.mark.parametrize("empty", ["zero", "skip"])
@pytest.mark.parametrize("multi_label", [False, True])
def test_precision_recall_curve_matches_numpy(device, empty, multi_label):
    q, db = codes(15, 12, device), codes(80, 12, device, 20)
    if multi_label:
        ql, dl = (torch.rand(15, 4, device=device) < 0.3).long(), (torch.rand(80, 4, device=device) < 0.3).long()
    else:
        ql, dl = torch.randint(0, 3, (15,), device=device), torch.randint(0, 3, (80,), device=device)
    radii, precision, recall = _pr(q, db, ql, dl, empty=empty, batch_size=4)
    want_p, want_r = numpy_pr(q, db, ql, dl, empty)
    assert radii.tolist() == list(range(13))
    np.testing.assert_allclose(precision.cpu().numpy(), want_p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(recall.cpu().numpy(), want_r, rtol=0, atol=1e-12)
    assert recall[-1].item() == pytest.approx(1.0)
    for r in (0, 2, 5, 12, 40):
        got = _p_at_r(q, db, ql, dl, r, empty=empty)
        assert got == pytest.approx(want_p[min(r, 12)], abs=1e-12)


def test_metric_bad_inputs(device):
    q, db = codes(3, 16, device), codes(10, 16, device)
    ql, dl = torch.zeros(3, dtype=torch.long, device=device), torch.zeros(10, dtype=torch.long, device=device)
    with pytest.raises(ValueError, match="ties must be"):
        _map(q, db, ql, dl, 5, ties="random")
    with pytest.raises(ValueError, match="topk must be >= 1"):
        _map(q, db, ql, dl, 0)
    with pytest.raises(ValueError, match="db_labels must have one row per code"):
        _map(q, db, ql, dl[:9], 5)
    with pytest.raises(TypeError, match="q_labels must be integer class ids"):
        _map(q, db, ql.float(), dl, 5)
    with pytest.raises(ValueError, match="both multi-hot"):
        _map(q, db, torch.ones(3, 4, device=device), torch.ones(10, 5, device=device), 5)
    with pytest.raises(ValueError, match="both be class ids"):
        _map(q, db, ql, torch.ones(10, 5, device=device), 5)
    with pytest.raises(ValueError, match="same number of bits"):
        _map(q, codes(10, 17, device), ql, dl, 5)
    with pytest.raises(ValueError, match="does not hold nbits=20"):
        _map(pack_bits(q), pack_bits(db), ql, dl, 5, nbits=20)
    padded = pack_bits(q)
    padded[:, -1] |= 0x80  # bit 15 of a 14-bit code
    with pytest.raises(ValueError, match="bits set beyond nbits=14"):
        _map(padded, pack_bits(db) & 0x3F, ql, dl, 5, nbits=14)
    with pytest.raises(ValueError, match="db_codes is empty"):
        _map(q, db[:0], ql, dl[:0], 5)
    with pytest.raises(ValueError, match="q_codes is empty"):
        _map(q[:0], db, ql[:0], dl, 5)
    with pytest.raises(ValueError, match="empty must be"):
        _pr(q, db, ql, dl, empty="nan")
    with pytest.raises(ValueError, match="r must be >= 0"):
        _p_at_r(q, db, ql, dl, -1)


def test_metrics_take_queries_and_database_by_keyword_only(device):
    """The swap DeepHash's CalcTopMap(rB, qB, rL, qL, topk) invites cannot happen: positional calls fail."""
    q, db = codes(4, 16, device), codes(30, 16, device)
    ql, dl = torch.randint(0, 3, (4,), device=device), torch.randint(0, 3, (30,), device=device)
    with pytest.raises(TypeError, match="positional"):
        mean_average_precision(db, q, dl, ql, 10)
    with pytest.raises(TypeError, match="positional"):
        precision_recall_curve(q, db, ql, dl)
    with pytest.raises(TypeError, match="positional"):
        precision_at_radius(q, db, ql, dl, 2)
    with pytest.raises(TypeError, match="positional"):
        precision_recall_at_ranks(q, db, ql, dl)
    with pytest.raises(TypeError, match="topk"):  # the cut-off is always stated
        mean_average_precision(q_codes=q, db_codes=db, q_labels=ql, db_labels=dl)
    # keyword order does not matter, and topk=None is the whole database
    a = mean_average_precision(db_labels=dl, q_labels=ql, db_codes=db, q_codes=q, topk=None)
    assert a == pytest.approx(numpy_map(q, db, ql, dl, 30), abs=1e-12)


def numpy_pr_at_ranks(q, db, q_labels, db_labels, ranks):
    """Per query: stable ranking by distance; precision = hits in the first k / k, recall = hits / all
    relevant; means over the queries with a relevant item in the database."""
    gnd_all, hamm_all = numpy_relevance(q_labels, db_labels), numpy_distances(q, db)
    precision, recall = np.zeros(len(ranks)), np.zeros(len(ranks))
    counted = 0
    for gnd, hamm in zip(gnd_all, hamm_all):
        if gnd.sum() == 0:
            continue
        counted += 1
        ranked = gnd[np.argsort(hamm, kind="stable")]
        for j, k in enumerate(ranks):
            precision[j] += ranked[:k].sum() / k
            recall[j] += ranked[:k].sum() / gnd.sum()
    return precision / max(counted, 1), recall / max(counted, 1)


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("ranks", [None, [1, 5, 17, 40, 80], (80, 3)])
def test_precision_recall_at_ranks_matches_numpy(device, multi_label, ranks):
    q, db = codes(15, 12, device), codes(80, 12, device, 20)
    if multi_label:
        ql, dl = (torch.rand(15, 4, device=device) < 0.3).long(), (torch.rand(80, 4, device=device) < 0.3).long()
        ql[0] = 0  # a query with nothing relevant: left out of both means
    else:
        ql, dl = torch.randint(0, 3, (15,), device=device), torch.randint(0, 3, (80,), device=device)
    got_ranks, precision, recall = precision_recall_at_ranks(q_codes=q, db_codes=db, q_labels=ql, db_labels=dl,
                                                             ranks=ranks, batch_size=4)
    want_ranks = list(range(1, 81)) if ranks is None else list(ranks)
    assert got_ranks.tolist() == want_ranks and precision.dtype == recall.dtype == torch.float64
    want_p, want_r = numpy_pr_at_ranks(q, db, ql, dl, want_ranks)
    np.testing.assert_allclose(precision.cpu().numpy(), want_p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(recall.cpu().numpy(), want_r, rtol=0, atol=1e-12)
    if ranks is None:
        assert recall[-1].item() == pytest.approx(1.0)


def test_precision_recall_at_ranks_bad_input(device):
    q, db = codes(3, 16, device), codes(10, 16, device)
    ql, dl = torch.zeros(3, dtype=torch.long, device=device), torch.zeros(10, dtype=torch.long, device=device)
    kw = dict(q_codes=q, db_codes=db, q_labels=ql, db_labels=dl)
    with pytest.raises(ValueError, match="ranks must be <= 10"):
        precision_recall_at_ranks(**kw, ranks=[1, 11])
    with pytest.raises(ValueError, match="ranks must be >= 1"):
        precision_recall_at_ranks(**kw, ranks=[0])
    with pytest.raises(TypeError, match="ranks must be an int"):
        precision_recall_at_ranks(**kw, ranks=[1.5])
    with pytest.raises(TypeError, match="ranks must be a sequence of ints"):
        precision_recall_at_ranks(**kw, ranks=5)
    with pytest.raises(TypeError, match="ranks must be a 1-D integer tensor"):
        precision_recall_at_ranks(**kw, ranks=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="q_labels is multi-hot with 0 classes"):
        precision_recall_at_ranks(q_codes=q, db_codes=db, q_labels=torch.zeros(3, 0, dtype=torch.long, device=device),
                                  db_labels=torch.zeros(10, 0, dtype=torch.long, device=device))
    with pytest.raises(ValueError, match="at least one cut-off"):
        precision_recall_at_ranks(**kw, ranks=[])
    with pytest.raises(ValueError, match="q_codes is empty"):
        precision_recall_at_ranks(q_codes=q[:0], db_codes=db, q_labels=ql[:0], db_labels=dl)
    assert precision_recall_at_ranks(**kw, ranks=np.array([2, 4]))[0].tolist() == [2, 4]
