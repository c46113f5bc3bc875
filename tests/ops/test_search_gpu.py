"""The CUDA search and Hamming kernels at the sizes that reach every path, against the CPU kernel.

Run on a GPU machine (``pytest -m gpu``); each call names ``backend="cuda"`` so a build without
the CUDA kernels fails instead of falling back. The CPU kernel, tested against NumPy and the
reference in test_search.py, is the oracle: integer outputs must match exactly.
"""
import pytest
import torch

from hashkern import _ext
from hashkern.ops.hamming import hamming_distance
from hashkern.ops.search import hamming_radius, hamming_topk

CUDA_OPS = ["hamming_distance", "hamming_topk", "hamming_radius_count", "hamming_radius_fill", "pack_bits",
            "unpack_bits"]


def random_packed(n, nbytes, device, distinct=None):
    """[n, nbytes] uint8 random codes (whole bytes, so every bit is a code bit); ``distinct`` draws
    the rows from that many codes (heavy ties)."""
    if distinct is None:
        return torch.randint(0, 256, (n, nbytes), dtype=torch.uint8, device=device)
    pool = torch.randint(0, 256, (distinct, nbytes), dtype=torch.uint8, device=device)
    return pool[torch.randint(0, distinct, (n,), device=device)]


def assert_topk_matches_cpu(q, db, ks):
    q_cpu, db_cpu = q.cpu(), db.cpu()
    for k in ks:
        dist, idx = hamming_topk(q, db, k, backend="cuda")
        ref_dist, ref_idx = hamming_topk(q_cpu, db_cpu, k, backend="cpu")
        assert torch.equal(dist.cpu(), ref_dist), f"distances differ at k={k}"
        assert torch.equal(idx.cpu(), ref_idx), f"indices differ at k={k}"


def assert_radius_matches_cpu(q, db, radii):
    q_cpu, db_cpu = q.cpu(), db.cpu()
    for r in radii:
        got = hamming_radius(q, db, r, backend="cuda")
        want = hamming_radius(q_cpu, db_cpu, r, backend="cpu")
        for name, a, b in zip(("offsets", "idx", "dist"), got, want):
            assert torch.equal(a.cpu(), b), f"{name} differ at r={r}"


@pytest.mark.gpu
def test_cuda_kernels_are_registered():
    for op in CUDA_OPS:
        assert _ext.has_kernel(op, "cuda"), f"hashkern._C has no CUDA kernel for {op}"


@pytest.mark.gpu
# On an H100/H200 (132 SMs) the plan of hamming_topk.cu gives: 4096 bits, 4097 bins > 1536, the
# global-atomic histogram, 128 slices, 31 queries a pass: 4 passes; 1000 bits (125 bytes, the
# byte-row reader), 1001 bins, the shared histogram, 1024 slices, 16 queries a pass: 2 passes.
@pytest.mark.parametrize("nbytes,n,nq", [(512, 131_072, 100), (125, 1 << 20, 32)])
def test_topk_several_query_passes(nbytes, n, nq):
    db = random_packed(n, nbytes, "cuda")
    q = torch.cat([random_packed(nq - 2, nbytes, "cuda"), db[:2]])  # two queries with an exact copy
    assert_topk_matches_cpu(q, db, (1, 1000, n))


@pytest.mark.gpu
def test_radius_many_slices_heavy_ties():
    db = random_packed(1 << 20, 8, "cuda", distinct=24)
    q = torch.cat([random_packed(4, 8, "cuda"), db[:3]])
    assert_radius_matches_cpu(q, db, (0, 20, 28, 32, 64))


@pytest.mark.gpu
def test_topk_ten_million_codes_few_queries():
    db = random_packed(10_000_000, 8, "cuda", distinct=1_000_000)
    q = random_packed(3, 8, "cuda")
    assert_topk_matches_cpu(q, db, (1, 1000, 1_000_000))


@pytest.mark.gpu
def test_topk_all_codes_equal_k_equals_n():
    n = 100_000
    db = random_packed(1, 16, "cuda").expand(n, 16).contiguous()
    q = torch.cat([db[:2], random_packed(2, 16, "cuda")])
    dist, idx = hamming_topk(q, db, n, backend="cuda")
    assert torch.equal(idx, torch.arange(n, device="cuda").expand(4, n))
    assert (dist[:2] == 0).all() and (dist == dist[:, :1]).all()
    assert_topk_matches_cpu(q, db, (n,))


def misaligned(packed: torch.Tensor, offset: int) -> torch.Tensor:
    """A contiguous copy of ``packed`` whose first byte sits ``offset`` bytes past an aligned address."""
    n, nbytes = packed.shape
    storage = torch.empty(n * nbytes + offset, dtype=torch.uint8, device=packed.device)
    view = storage[offset:].view(n, nbytes)
    view.copy_(packed)
    assert view.is_contiguous() and view.data_ptr() % 8 == offset % 8
    return view


@pytest.mark.parametrize("nbytes", [1, 3, 5, 8, 12, 125, 129])
@pytest.mark.parametrize("offset", [0, 1, 3, 7])
def test_misaligned_rows(device, nbytes, offset):
    """Widths that are not whole words and rows at odd addresses are read in place, exactly."""
    db = misaligned(random_packed(3001, nbytes, device, distinct=700), offset)
    q = misaligned(torch.cat([random_packed(5, nbytes, device), db[:2]]), (offset + 5) % 8)
    backend = device.type
    ref_q, ref_db = q.cpu().clone(), db.cpu().clone()  # aligned copies
    for k in (1, 33, 3001):
        dist, idx = hamming_topk(q, db, k, backend=backend)
        ref_dist, ref_idx = hamming_topk(ref_q, ref_db, k, backend="torch")
        assert torch.equal(dist.cpu(), ref_dist) and torch.equal(idx.cpu(), ref_idx)
    r = 4 * nbytes
    for got, want in zip(hamming_radius(q, db, r, backend=backend), hamming_radius(ref_q, ref_db, r, backend="torch")):
        assert torch.equal(got.cpu(), want)
    ref = hamming_distance(ref_q, ref_db, backend="torch")
    assert torch.equal(hamming_distance(q, db, backend=backend).cpu(), ref)
    assert torch.equal(hamming_distance(db[:40], q, backend=backend).cpu(), ref.T[:40])


@pytest.mark.gpu
def test_side_stream():
    """The kernels run on the caller's current stream: a database written there after a long
    kernel is the one searched (on the default stream they would read the old one)."""
    old = random_packed(200_000, 8, "cuda")
    new = random_packed(200_000, 8, "cuda", distinct=500)
    q = random_packed(6, 8, "cuda")
    db = old.clone()
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # ~25 ms of GPU time before the copy lands
        db.copy_(new)
        dist, idx = hamming_topk(q, db, 500, backend="cuda")
        offsets, r_idx, r_dist = hamming_radius(q, db, 24, backend="cuda")
        distances = hamming_distance(q, db, backend="cuda")
    side.synchronize()
    ref_dist, ref_idx = hamming_topk(q.cpu(), new.cpu(), 500, backend="cpu")
    assert torch.equal(dist.cpu(), ref_dist) and torch.equal(idx.cpu(), ref_idx)
    ref = hamming_radius(q.cpu(), new.cpu(), 24, backend="cpu")
    assert all(torch.equal(a.cpu(), b) for a, b in zip((offsets, r_idx, r_dist), ref))
    assert torch.equal(distances.cpu(), hamming_distance(q.cpu(), new.cpu(), backend="cpu"))


@pytest.mark.gpu
@pytest.mark.parametrize("nbytes,offset", [(3, 0), (8, 3)])
def test_database_is_read_in_place(nbytes, offset):
    """24-bit codes and a misaligned 64-bit view are searched without a padded or aligned copy of
    the database (such a copy alone would take more than the database's own bytes)."""
    db = misaligned(random_packed(1 << 22, nbytes, "cuda"), offset)
    q = random_packed(1, nbytes, "cuda")
    for search in (lambda: hamming_topk(q, db, 10, backend="cuda"),
                   lambda: hamming_radius(q, db, 2, backend="cuda")):
        search()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        search()
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - before
        assert extra < db.numel() // 2, f"{extra} bytes allocated for a {db.numel()}-byte database"
