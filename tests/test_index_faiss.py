"""HammingIndex as a faiss drop-in: ntotal / d / reset / add_with_ids / remove_ids, -1 padding,
to_faiss / from_faiss round trips, and NumPy inputs across search, index and metrics."""
import numpy as np
import pytest
import torch

from hashkern.codes import pack_bits
from hashkern.index import HammingIndex
from hashkern.metrics import mean_average_precision, precision_at_radius
from hashkern.ops.hamming import hamming_distance_reference
from hashkern.ops.search import hamming_radius, hamming_radius_reference, hamming_topk, hamming_topk_reference


def packed_codes(n, nbits, seed):
    g = torch.Generator().manual_seed(seed)
    return pack_bits(torch.randint(0, 2, (n, nbits), generator=g))


def test_faiss_names_reset_and_ids():
    index = HammingIndex(24)
    assert (index.ntotal, index.d, index.code_size) == (0, 24, 3)
    db = packed_codes(10, 24, 0)
    index.add(db[:4])
    index.add_with_ids(db[4:7], np.array([100, 50, 70]))
    assert index.add(db[7:]).tolist() == [101, 102, 103]  # after the largest id given so far
    assert index.ntotal == len(index) == 10
    assert index.ids.tolist() == [0, 1, 2, 3, 100, 50, 70, 101, 102, 103]
    dist, idx = index.search(db, 1)
    assert (dist == 0).all() and idx[:, 0].tolist() == index.ids.tolist()
    assert index.remove_ids(np.array([1, 50, 999])) == 2
    assert index.ids.tolist() == [0, 2, 3, 100, 70, 101, 102, 103]
    assert torch.equal(index.codes, db[[0, 2, 3, 4, 6, 7, 8, 9]])
    offsets, idx, dist = index.radius_search(db[6:7], 0)
    assert idx.tolist() == [70] and dist.tolist() == [0]
    assert index.remove_ids(np.int64(0)) == 1 and index.remove_ids([2, 3]) == 2
    with pytest.raises(ValueError, match="ids must be >= 0"):
        index.add_with_ids(db[:1], [-1])
    with pytest.raises(ValueError, match="one entry per code"):
        index.add_with_ids(db[:2], [5])
    with pytest.raises(TypeError, match="ids must hold integers"):
        index.remove_ids(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="cannot keep"):
        index.save("unused.hkidx")
    index.reset()
    assert index.ntotal == 0 and index.add(db[:2]).tolist() == [0, 1]


def test_search_pads_like_faiss_when_k_exceeds_ntotal():
    index = HammingIndex(16)
    q = packed_codes(3, 16, 1)
    dist, idx = index.search(q, 4)  # empty: every slot is padding
    assert (idx == -1).all() and (dist == 2**31 - 1).all() and dist.dtype == torch.int32
    offsets, hits, _ = index.radius_search(q, 16)
    assert offsets.tolist() == [0, 0, 0, 0] and hits.numel() == 0
    db = packed_codes(5, 16, 2)
    index.add(db)
    dist, idx = index.search(q, 8)
    ref_dist, ref_idx = hamming_topk_reference(q, db, 5)
    assert torch.equal(dist[:, :5], ref_dist) and torch.equal(idx[:, :5], ref_idx)
    assert (idx[:, 5:] == -1).all() and (dist[:, 5:] == 2**31 - 1).all()


def test_numpy_inputs_give_the_tensor_results():
    q, db = packed_codes(7, 40, 3), packed_codes(300, 40, 4)
    for k in (1, 17, np.int64(17), np.int32(300)):
        got = hamming_topk(q.numpy(), db.numpy(), k)
        assert all(torch.equal(a, b) for a, b in zip(got, hamming_topk(q, db, int(k))))
    for r in (np.int64(13), np.uint8(40)):
        assert all(torch.equal(a, b) for a, b in zip(hamming_radius(q.numpy(), db.numpy()[::1], r),
                                                     hamming_radius_reference(q, db, int(r))))
    index, np_index = HammingIndex(40), HammingIndex(40)
    index.add(db)
    np_index.add(db.numpy())
    assert all(torch.equal(a, b) for a, b in zip(np_index.search(q.numpy(), np.int64(9)), index.search(q, 9)))
    assert all(torch.equal(a, b) for a, b in zip(np_index.radius_search(q.numpy(), np.int16(12)),
                                                 index.radius_search(q, 12)))
    pm1 = torch.randint(0, 2, (80, 32), generator=torch.Generator().manual_seed(5)).float() * 2 - 1
    labels = torch.arange(80) % 4
    tensors = dict(q_codes=pm1[:20], db_codes=pm1[20:], q_labels=labels[:20], db_labels=labels[20:])
    arrays = {name: value.numpy() for name, value in tensors.items()}
    assert mean_average_precision(**arrays, topk=np.int64(25)) == mean_average_precision(**tensors, topk=25)
    assert precision_at_radius(**arrays, r=np.int64(14)) == precision_at_radius(**tensors, r=14)
    with pytest.raises(TypeError, match="k must be an int"):
        hamming_topk(q, db, np.float64(3.0))


faiss = pytest.importorskip("faiss")


@pytest.mark.parametrize("nbits", [8, 64, 256, 1024])
def test_to_faiss_search_equals_hashkern(nbits):
    q, db = packed_codes(20, nbits, 6), packed_codes(500, nbits, 7)
    index = HammingIndex(nbits)
    index.add(db)
    flat = index.to_faiss()
    every = hamming_distance_reference(q, db).numpy()
    assert isinstance(flat, faiss.IndexBinaryFlat) and flat.ntotal == 500 and flat.d == nbits
    for k in (1, 10, 500, 600):  # 600 > ntotal: both pad with -1
        f_dist, f_idx = flat.search(q.numpy(), k)
        dist, idx = index.search(q, k)
        assert np.array_equal(f_dist, dist.numpy()), k
        assert np.array_equal(f_idx == -1, idx.numpy() == -1), k
        # faiss orders ties arbitrarily: each id it returns must lie at the distance reported.
        found = f_idx >= 0
        rows = np.broadcast_to(np.arange(20)[:, None], f_idx.shape)
        assert np.array_equal(every[rows[found], f_idx[found]], f_dist[found]), k
    r = nbits // 3
    lims, f_dist, f_idx = flat.range_search(q.numpy(), r + 1)  # faiss: d < radius; hashkern: d <= r
    offsets, idx, dist = index.radius_search(q, r)
    assert np.array_equal(lims, offsets.numpy())
    for i in range(20):
        ours = sorted(zip(dist[offsets[i]:offsets[i + 1]].tolist(), idx[offsets[i]:offsets[i + 1]].tolist()))
        theirs = sorted(zip(f_dist[lims[i]:lims[i + 1]].astype(int).tolist(), f_idx[lims[i]:lims[i + 1]].tolist()))
        assert ours == theirs


def test_from_faiss_of_a_faiss_built_index_keeps_codes_and_ids():
    db = packed_codes(300, 128, 8).numpy()
    flat = faiss.IndexBinaryFlat(128)
    flat.add(db)
    index = HammingIndex.from_faiss(flat)
    assert index.nbits == 128 and np.array_equal(index.codes.numpy(), db) and index.ids.tolist() == list(range(300))
    mapped = faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(128))
    ids = np.arange(300, dtype=np.int64) * 7 + 3
    mapped.add_with_ids(db, ids)
    index = HammingIndex.from_faiss(mapped)
    assert np.array_equal(index.codes.numpy(), db) and np.array_equal(index.ids.numpy(), ids)
    q = db[::31]
    f_dist, f_idx = mapped.search(q, 1)
    dist, idx = index.search(q, 1)
    assert np.array_equal(f_dist, dist.numpy()) and np.array_equal(f_idx, idx.numpy())
    round_trip = index.to_faiss()
    assert isinstance(round_trip, faiss.IndexBinaryIDMap)
    assert np.array_equal(faiss.vector_to_array(round_trip.id_map), ids)
    with pytest.raises(TypeError, match="IndexBinaryFlat"):
        HammingIndex.from_faiss(faiss.IndexFlatL2(8))
    with pytest.raises(ValueError, match="whole bytes"):
        HammingIndex(12).to_faiss()
