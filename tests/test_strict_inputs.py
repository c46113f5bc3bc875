"""Input forms the first bad-input campaign did not reach (issue 25): label forms, uint8 codes,
numpy scalars, 0-query metrics."""
import numpy as np
import pytest
import torch

from hashkern import HammingIndex
from hashkern.codes import pack_bits
from hashkern.metrics import (
    mean_average_precision,
    precision_at_radius,
    precision_recall_at_ranks,
    precision_recall_curve,
)
from hashkern.ops.search import hamming_radius, hamming_topk


def _data(nq=20, n=200, k=16, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 2, (nq, k), generator=g).float() * 2 - 1
    db = torch.randint(0, 2, (n, k), generator=g).float() * 2 - 1
    return q, db, torch.randint(0, classes, (nq,), generator=g), torch.randint(0, classes, (n,), generator=g)


def test_an_integer_column_of_class_ids_is_read_as_class_ids():
    q, db, ql, dl = _data()
    flat = mean_average_precision(q_codes=q, db_codes=db, q_labels=ql, db_labels=dl, topk=50)
    column = mean_average_precision(q_codes=q, db_codes=db, q_labels=ql[:, None], db_labels=dl[:, None], topk=50)
    assert column == flat
    for metric in (precision_at_radius, precision_recall_at_ranks, precision_recall_curve):
        a = metric(q_codes=q, db_codes=db, q_labels=ql, db_labels=dl)
        b = metric(q_codes=q, db_codes=db, q_labels=ql[:, None], db_labels=dl[:, None])
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert torch.equal(torch.as_tensor(x), torch.as_tensor(y))


@pytest.mark.parametrize("bad", [float("nan"), 2.0, -1.0, 0.5])
def test_multi_hot_labels_must_be_zero_or_one(bad):
    q, db, _, _ = _data()
    ql = torch.zeros(q.shape[0], 3)
    ql[:, 0] = 1
    dl = torch.zeros(db.shape[0], 3)
    dl[::2, 0] = 1
    dl[5, 1] = bad
    with pytest.raises(ValueError, match="db_labels is multi-hot.*0 or 1"):
        mean_average_precision(q_codes=q, db_codes=db, q_labels=ql, db_labels=dl, topk=10)
    ok = mean_average_precision(q_codes=q, db_codes=db, q_labels=ql.bool(), db_labels=(dl == 1), topk=10)
    assert 0 < ok <= 1


def test_unpacked_uint8_codes_follow_the_index_rule():
    q, db, ql, dl = _data(k=16)
    q01, db01 = ((q + 1) / 2).to(torch.uint8), ((db + 1) / 2).to(torch.uint8)
    with pytest.raises(ValueError, match="uint8, so it is taken as packed codes"):
        precision_recall_curve(q_codes=q01, db_codes=db01, q_labels=ql, db_labels=dl)
    with pytest.raises(ValueError, match="uint8, so it is taken as packed codes"):
        HammingIndex(16).add(db01)
    radii, _, _ = precision_recall_curve(q_codes=q01.bool(), db_codes=db01.bool(), q_labels=ql, db_labels=dl)
    assert radii.shape == (17,)
    packed = precision_recall_curve(q_codes=pack_bits(q), db_codes=pack_bits(db), q_labels=ql, db_labels=dl, nbits=16)
    assert packed[0].shape == (17,)


@pytest.mark.parametrize("metric", [precision_recall_curve, precision_at_radius, precision_recall_at_ranks,
                                    mean_average_precision])
def test_zero_queries_are_refused_clearly(metric):
    q, db, ql, dl = _data()
    kwargs = {"topk": 5} if metric is mean_average_precision else {}
    with pytest.raises(ValueError, match="q_codes is empty"):
        metric(q_codes=q[:0], db_codes=db, q_labels=ql[:0], db_labels=dl, **kwargs)


def test_numpy_scalars_are_accepted_everywhere():
    from hashkern.losses import NTXentLoss, SortedNCELoss
    from hashkern.ops.softsort import sorted_cosine

    q, db, ql, dl = _data()
    qp, dbp = pack_bits(q), pack_bits(db)
    assert torch.equal(hamming_topk(qp, dbp, np.int64(3))[1], hamming_topk(qp, dbp, 3)[1])
    assert torch.equal(hamming_radius(qp, dbp, np.int32(2))[1], hamming_radius(qp, dbp, 2)[1])
    index = HammingIndex(np.int64(16))
    index.add(db)
    assert torch.equal(index.search(q, np.int64(4))[1], index.search(q, 4)[1])
    assert index.radius_search(q, np.uint8(2))[0].shape == (q.shape[0] + 1,)
    args = dict(q_codes=q, db_codes=db, q_labels=ql, db_labels=dl)
    assert mean_average_precision(**args, topk=np.int64(10), batch_size=np.int64(7)) == \
        mean_average_precision(**args, topk=10)
    assert precision_at_radius(**args, r=np.int64(2)) == precision_at_radius(**args, r=2)
    z1, z2 = torch.randn(8, 5), torch.randn(8, 5)
    assert torch.equal(NTXentLoss(np.float32(0.5))(z1, z2), NTXentLoss(0.5)(z1, z2))
    b1, b2 = torch.randn(8, 4), torch.randn(8, 4)
    assert torch.equal(SortedNCELoss(num_positives=np.int64(2))(b1, b2, z1, z2),
                       SortedNCELoss(num_positives=2)(b1, b2, z1, z2))
    s = torch.randn(8, 8)
    assert torch.allclose(sorted_cosine(s, z1, z2, np.float32(0.5)), sorted_cosine(s, z1, z2, float(np.float32(0.5))))
    for bad in (np.bool_(True), np.float64(3.0)):
        with pytest.raises(TypeError, match="k must be an int"):
            hamming_topk(qp, dbp, bad)
