"""hamming_topk / hamming_radius against the reference and an independent NumPy oracle."""
import numpy as np
import pytest
import torch

from hashkern import _ext
from hashkern.codes import pack_bits
from hashkern.ops.search import hamming_radius, hamming_radius_reference, hamming_topk, hamming_topk_reference


def random_codes(n, nbits, device, distinct=None):
    """±1 codes [n, nbits]; with ``distinct`` only that many different codes (heavy ties)."""
    if distinct is None:
        return torch.randint(0, 2, (n, nbits), device=device).float() * 2 - 1
    pool = torch.randint(0, 2, (distinct, nbits), device=device).float() * 2 - 1
    return pool[torch.randint(0, distinct, (n,), device=device)]


def numpy_topk(q_codes, db_codes, k):
    """Oracle from ±1 codes: distance = (K - <q, b>) / 2, ordered by (distance, index)."""
    q, db = q_codes.double().cpu().numpy(), db_codes.double().cpu().numpy()
    dist = ((q.shape[1] - q @ db.T) / 2).round().astype(np.int64)
    order = np.stack([np.lexsort((np.arange(db.shape[0]), row)) for row in dist])[:, :k]
    return np.take_along_axis(dist, order, 1), order


def compiled(op, device):
    return _ext.has_kernel(op, device.type)


@pytest.fixture(params=["auto", "torch", "compiled"])
def backend(request, device):
    """auto, torch, and the device's compiled kernel named explicitly (backend="cpu" / "cuda"), so a
    build without that kernel fails here instead of passing through auto's fallback."""
    return device.type if request.param == "compiled" else request.param


@pytest.mark.parametrize("nbits", [8, 24, 64, 128, 256, 1000])
@pytest.mark.parametrize("ties", [None, 3])
def test_topk_matches_oracle(device, nbits, ties, backend):
    n_db, n_q = 67, 5
    db = random_codes(n_db, nbits, device, ties)
    q = torch.cat([random_codes(n_q - 1, nbits, device), db[:1]])  # one query hits an exact copy
    qp, dbp = pack_bits(q), pack_bits(db)
    for k in (1, 2, 31, n_db - 1, n_db):
        dist, idx = hamming_topk(qp, dbp, k, backend=backend)
        assert dist.dtype == torch.int32 and idx.dtype == torch.int64 and dist.shape == (n_q, k)
        ref_dist, ref_idx = numpy_topk(q, db, k)
        np.testing.assert_array_equal(dist.cpu().numpy(), ref_dist)
        np.testing.assert_array_equal(idx.cpu().numpy(), ref_idx)
        rd, ri = hamming_topk_reference(qp, dbp, k)
        assert torch.equal(dist, rd) and torch.equal(idx, ri)


def test_topk_all_codes_equal(device, backend):
    db = random_codes(1, 40, device).expand(50, 40).contiguous()
    dist, idx = hamming_topk(pack_bits(db[:3]), pack_bits(db), 50, backend=backend)
    assert (dist == 0).all()
    assert torch.equal(idx.cpu(), torch.arange(50).expand(3, 50))


def test_topk_size_one_and_odd_shapes(device, backend):
    q, db = random_codes(1, 1, device), random_codes(1, 1, device)
    dist, idx = hamming_topk(pack_bits(q), pack_bits(db), 1, backend=backend)
    assert dist.item() == int((q != db).sum()) and idx.item() == 0
    q, db = random_codes(3, 13, device), random_codes(9, 13, device)
    dist, idx = hamming_topk(pack_bits(q), pack_bits(db), 9, backend=backend)
    ref = numpy_topk(q, db, 9)
    np.testing.assert_array_equal(dist.cpu().numpy(), ref[0])
    np.testing.assert_array_equal(idx.cpu().numpy(), ref[1])
    empty_q = torch.empty(0, 2, dtype=torch.uint8, device=device)
    dist, idx = hamming_topk(empty_q, pack_bits(db), 4, backend=backend)
    assert dist.shape == (0, 4) and idx.shape == (0, 4)


def test_topk_non_contiguous_input(device):
    wide = pack_bits(random_codes(20, 128, device))
    q, db = wide[:4, 2:10], wide[:, 5:13]  # strided rows, 8 bytes each
    assert not db.is_contiguous()
    dist, idx = hamming_topk(q, db, 7)
    rd, ri = hamming_topk_reference(q.contiguous(), db.contiguous(), 7)
    assert torch.equal(dist, rd) and torch.equal(idx, ri)


@pytest.mark.parametrize("nbits", [8, 24, 64, 1000])
@pytest.mark.parametrize("ties", [None, 4])
def test_radius_matches_oracle(device, nbits, ties, backend):
    db = random_codes(45, nbits, device, ties)
    q = torch.cat([random_codes(3, nbits, device), db[:2]])
    qp, dbp = pack_bits(q), pack_bits(db)
    full_dist, full_idx = numpy_topk(q, db, db.shape[0])
    for r in (0, 1, nbits // 2 - 2, nbits // 2, nbits, nbits + 5):
        offsets, idx, dist = hamming_radius(qp, dbp, r, backend=backend)
        assert offsets.dtype == torch.int64 and idx.dtype == torch.int64 and dist.dtype == torch.int32
        assert offsets[0] == 0 and offsets[-1] == idx.numel() == dist.numel()
        for i in range(q.shape[0]):
            keep = full_dist[i] <= r
            np.testing.assert_array_equal(idx[offsets[i]:offsets[i + 1]].cpu().numpy(), full_idx[i][keep])
            np.testing.assert_array_equal(dist[offsets[i]:offsets[i + 1]].cpu().numpy(), full_dist[i][keep])
        ro, ri, rdist = hamming_radius_reference(qp, dbp, r)
        assert torch.equal(offsets, ro) and torch.equal(idx, ri) and torch.equal(dist, rdist)


def test_radius_no_queries_and_no_hits(device):
    db = pack_bits(torch.ones(6, 16, device=device))
    offsets, idx, dist = hamming_radius(torch.empty(0, 2, dtype=torch.uint8, device=device), db, 3)
    assert offsets.tolist() == [0] and idx.numel() == 0 and dist.numel() == 0
    far = pack_bits(-torch.ones(2, 16, device=device))
    offsets, idx, dist = hamming_radius(far, db, 15)
    assert offsets.tolist() == [0, 0, 0] and idx.numel() == 0


@pytest.mark.parametrize("op", ["hamming_topk", "hamming_radius_count"])
def test_compiled_kernels_write_every_output(device, poisoned, op):
    if not compiled(op, device):
        pytest.skip(f"hashkern._C has no {device.type} kernel for {op} in this build")
    db = pack_bits(random_codes(300, 72, device, 9))
    q = pack_bits(random_codes(7, 72, device))
    if op == "hamming_topk":
        for k in (1, 150, 300):
            dist, idx = poisoned((7, k), torch.int32, device), poisoned((7, k), torch.int64, device)
            torch.ops.hashkern.hamming_topk(q, db, k, dist, idx)
            rd, ri = hamming_topk_reference(q, db, k)
            assert torch.equal(dist, rd) and torch.equal(idx, ri)
        return
    ro, ri, rdist = hamming_radius_reference(q, db, 33)
    counts = poisoned((7,), torch.int64, device)
    torch.ops.hashkern.hamming_radius_count(q, db, 33, counts)
    assert torch.equal(counts, ro.diff())
    idx, dist = poisoned((int(ro[-1]),), torch.int64, device), poisoned((int(ro[-1]),), torch.int32, device)
    torch.ops.hashkern.hamming_radius_fill(q, db, 33, ro, idx, dist)
    assert torch.equal(idx, ri) and torch.equal(dist, rdist)


def test_bad_inputs(device):
    q = pack_bits(random_codes(2, 16, device))
    db = pack_bits(random_codes(5, 16, device))
    with pytest.raises(ValueError, match="k must be >= 1"):
        hamming_topk(q, db, 0)
    with pytest.raises(ValueError, match="k must be <= 5"):
        hamming_topk(q, db, 6)
    with pytest.raises(TypeError, match="k must be an int"):
        hamming_topk(q, db, 2.0)
    with pytest.raises(ValueError, match="db_packed is empty"):
        hamming_topk(q, db[:0], 1)
    with pytest.raises(ValueError, match="same bytes per row"):
        hamming_topk(q, pack_bits(random_codes(5, 24, device)), 1)
    with pytest.raises(TypeError, match="q_packed must have dtype uint8"):
        hamming_topk(q.float(), db, 1)
    with pytest.raises(ValueError, match="db_packed must be 2-D"):
        hamming_topk(q, db[0], 1)
    with pytest.raises(ValueError, match="same device"):
        hamming_topk(q, db.to("meta"), 1)
    with pytest.raises(ValueError, match="r must be >= 0"):
        hamming_radius(q, db, -1)
    with pytest.raises(ValueError, match="db_packed is empty"):
        hamming_radius(q, db[:0], 1)
    with pytest.raises(ValueError, match="backend must be one of"):
        hamming_topk(q, db, 1, backend="faiss")


def staircase(n, nbits, device, descending):
    """Codes whose distance to the all-ones code steps through every value, in index order."""
    levels = torch.arange(n, device=device) * (nbits + 1) // n
    if descending:
        levels = nbits - levels
    bits = torch.arange(nbits, device=device)[None, :] < levels[:, None]  # the first `level` bits flipped
    return torch.where(bits, -1.0, 1.0)


@pytest.mark.parametrize("descending", [True, False])
def test_topk_streaming_worst_orders(device, descending, backend):
    # Descending: every item beats the ones before it, so a streaming selector keeps accepting.
    db = staircase(5000, 64, device, descending)
    q = torch.cat([torch.ones(1, 64, device=device), random_codes(2, 64, device)])
    for k in (1, 10, 77, 625):
        dist, idx = hamming_topk(pack_bits(q), pack_bits(db), k, backend=backend)
        ref = numpy_topk(q, db, k)
        np.testing.assert_array_equal(dist.cpu().numpy(), ref[0])
        np.testing.assert_array_equal(idx.cpu().numpy(), ref[1])


def test_topk_large_database_few_queries(device, backend):
    # Few queries and a large database: the kernels split the database and merge the parts.
    db = pack_bits(random_codes(40000, 32, device, 500))
    q = pack_bits(random_codes(2, 32, device))
    for k in (1, 100, 4999, 40000):
        dist, idx = hamming_topk(q, db, k, backend=backend)
        rd, ri = hamming_topk_reference(q, db, k)
        assert torch.equal(dist, rd) and torch.equal(idx, ri)


def test_topk_compiles_without_graph_breaks(device):
    q = pack_bits(random_codes(4, 64, device))
    db = pack_bits(random_codes(100, 64, device, 7))

    def search(q, db):
        dist, idx = hamming_topk(q, db, 10)
        return dist * 1000 + idx

    compiled_search = torch.compile(search, fullgraph=True, dynamic=False)
    assert torch.equal(compiled_search(q, db), search(q, db))


def test_compiled_ops_check_their_arguments(device):
    if not compiled("hamming_topk", device):
        pytest.skip(f"hashkern._C has no {device.type} search kernels in this build")
    q, db = pack_bits(random_codes(2, 16, device)), pack_bits(random_codes(5, 16, device))
    dist, idx = torch.empty(2, 6, dtype=torch.int32, device=device), torch.empty(2, 6, dtype=torch.int64, device=device)
    with pytest.raises(ValueError, match="k must be in"):
        torch.ops.hashkern.hamming_topk(q, db, 6, dist, idx)
    with pytest.raises(ValueError, match="out must have shape"):
        torch.ops.hashkern.hamming_topk(q, db, 3, dist, idx)
    with pytest.raises(ValueError, match="same bytes per row"):
        torch.ops.hashkern.hamming_topk(q[:, :1].contiguous(), db, 6, dist, idx)
    counts = torch.empty(2, dtype=torch.int64, device=device)
    with pytest.raises(ValueError, match="r must be >= 0"):
        torch.ops.hashkern.hamming_radius_count(q, db, -1, counts)
    offsets = torch.tensor([0, 1, 3], device=device)
    with pytest.raises(ValueError, match="out must have shape"):
        torch.ops.hashkern.hamming_radius_fill(q, db, 16, offsets, torch.empty(2, dtype=torch.int64, device=device),
                                               torch.empty(2, dtype=torch.int32, device=device))
    # offsets that disagree with the counts are caught, never written past
    idx3, dist3 = torch.empty(3, dtype=torch.int64, device=device), torch.empty(3, dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match="offsets do not match"):
        torch.ops.hashkern.hamming_radius_fill(q, db, 16, offsets, idx3, dist3)
    with pytest.raises(ValueError, match="offsets"):
        torch.ops.hashkern.hamming_radius_fill(q, db, 16, torch.tensor([-3, 0, 3], device=device), idx3, dist3)


@pytest.mark.parametrize("backend", ["auto", "cpu", "torch"])
@pytest.mark.parametrize("r", [2**31, 2**31 - 1, 2**32, 2**32 + 1, 2**63 - 1])
def test_radius_past_int32_is_not_wrapped(backend, r):
    """Every code is within any r >= K: an r wrapped to int32 (2**31 -> negative, 2**32+1 -> 1) lost hits."""
    from hashkern import HammingIndex

    db = random_codes(23, 20, torch.device("cpu"))
    q = -db[:4]  # at distance 20 from its own row, so only a radius >= 20 finds everything
    offsets, idx, dist = hamming_radius(pack_bits(q), pack_bits(db), r, backend=backend)
    assert offsets.tolist() == [0, 23, 46, 69, 92]
    exp_dist, exp_idx = numpy_topk(q, db, 23)
    assert torch.equal(idx, torch.from_numpy(exp_idx).reshape(-1)) and dist.tolist() == exp_dist.reshape(-1).tolist()
    index = HammingIndex(20)
    index.add(db)
    assert torch.equal(index.radius_search(q, r, backend=backend)[1], idx)


@pytest.mark.parametrize("r", [2**63, 2**64 + 1])
def test_radius_beyond_int64_is_a_clear_error(r):
    from hashkern import HammingIndex

    codes = pack_bits(random_codes(3, 8, torch.device("cpu")))
    with pytest.raises(ValueError, match=r"r must be <= 9223372036854775807"):
        hamming_radius(codes, codes, r)
    index = HammingIndex(8)
    index.add(codes)
    with pytest.raises(ValueError, match=r"r must be <= "):
        index.radius_search(codes, r)
