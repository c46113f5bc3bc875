"""Every CPU kernel set this machine runs (portable, AVX2, AVX-512 VPOPCNTDQ), forced in turn,
against the plain-PyTorch references: hamming_distance, hamming_topk, hamming_radius, exact."""
import os
import subprocess
import sys

import pytest
import torch

from hashkern import _ext
from hashkern.codes import pack_bits
from hashkern.ops.hamming import hamming_distance, hamming_distance_reference
from hashkern.ops.search import hamming_radius, hamming_radius_reference, hamming_topk, hamming_topk_reference

pytestmark = pytest.mark.skipif(not _ext.has_kernel("hamming_topk", "cpu"), reason="CPU kernels not built")

# Every width from 1 to 130 bits, the wide lengths, and widths with a byte tail past the words.
WIDTHS = list(range(1, 131)) + [256, 512, 1000, 1024]


def kernel_sets():
    """The kernel sets this CPU supports, best first (the first name returned is the one in use)."""
    if not _ext.has_kernel("hamming_topk", "cpu"):
        return []
    return list(torch.ops.hashkern._cpu_kernels(""))[1:]


@pytest.fixture(params=kernel_sets())
def kernels(request):
    previous = torch.ops.hashkern._cpu_kernels("")[0]
    assert torch.ops.hashkern._cpu_kernels(request.param)[0] == request.param
    yield request.param
    torch.ops.hashkern._cpu_kernels(previous)


def codes(n, nbits, tied, generator):
    """{0, 1} codes [n, nbits]; tied: only 3 distinct codes with a few bits set (most distances tie)."""
    if not tied:
        return torch.randint(0, 2, (n, nbits), generator=generator)
    pool = (torch.rand(3, nbits, generator=generator) < 0.1).long()
    return pool[torch.randint(0, 3, (n,), generator=generator)]


def assert_all_ops_match(q, db, ks, radius):
    assert torch.equal(hamming_distance(q, db), hamming_distance_reference(q, db))
    for k in ks:
        dist, idx = hamming_topk(q, db, k, backend="cpu")
        ref_dist, ref_idx = hamming_topk_reference(q, db, k)
        assert torch.equal(dist, ref_dist) and torch.equal(idx, ref_idx), f"k={k}"
    for got, want in zip(hamming_radius(q, db, radius, backend="cpu"), hamming_radius_reference(q, db, radius)):
        assert torch.equal(got, want), f"r={radius}"


@pytest.mark.parametrize("tied", [False, True])
def test_every_width_matches_reference(kernels, tied):
    # 45 rows: one full 32-row vector of 8-bit codes and a scalar remainder; k = 1 and 5 stream
    # (8k <= N), k = 20 and N count all distances.
    g = torch.Generator().manual_seed(1)
    for nbits in WIDTHS:
        packed = pack_bits(codes(52, nbits, tied, g))
        q, db = packed[:7], packed[7:]
        assert_all_ops_match(q, db, (1, 5, 20, db.shape[0]), radius=nbits // 3)


@pytest.mark.parametrize("nbits", [3, 16, 24, 32, 48, 64, 128])
def test_block_boundaries_and_ties_at_the_threshold(kernels, nbits):
    # Past one 2048-row block, with 17 distinct codes: the k-th distance has thousands of ties.
    g = torch.Generator().manual_seed(nbits)
    packed = pack_bits(codes(2 * 2048 + 45, nbits, True, g))
    q, db = packed[:5], packed[5:]
    assert_all_ops_match(q, db, (1, 100, 700, db.shape[0] // 2), radius=1)


@pytest.mark.parametrize("nbits", [128, 256])
@pytest.mark.parametrize("tied", [False, True])
def test_wide_codes_across_query_tiles_and_blocks(kernels, nbits, tied):
    # The bit-sliced search of 128- and 256-bit codes (AVX2), which takes every block after a
    # chunk's first: 70 queries, more than one tile; 4,396 rows, two 2048-row blocks and a tail
    # whose last 256-row group is partial; all-ones and all-zeros codes, whose weights reach the
    # counters' limits; rows at an odd address.
    g = torch.Generator().manual_seed(nbits + tied)
    bits = codes(70 + 4396, nbits, tied, g)
    bits[0], bits[1], bits[2500], bits[-1] = 1, 0, 1, 0
    packed = pack_bits(bits)
    flat = torch.cat([torch.zeros(1, dtype=torch.uint8), packed[70:].flatten()])
    db = flat[1:].view(4396, -1)
    assert db.data_ptr() % 2 == 1
    assert_all_ops_match(packed[:70], db, (1, 37, 500), radius=nbits // 3)


def test_few_queries_split_database(kernels):
    # One query, 40,000 codes: the database is split across threads and the parts merged.
    g = torch.Generator().manual_seed(0)
    packed = pack_bits(codes(40001, 16, True, g))
    q, db = packed[:1], packed[1:]
    for k in (1, 1000, 4999):
        dist, idx = hamming_topk(q, db, k, backend="cpu")
        ref_dist, ref_idx = hamming_topk_reference(q, db, k)
        assert torch.equal(dist, ref_dist) and torch.equal(idx, ref_idx)


def test_unaligned_rows(kernels):
    # A storage offset of one byte: no kernel may assume aligned rows.
    g = torch.Generator().manual_seed(2)
    for nbits in (16, 32, 64, 128, 256):
        packed = pack_bits(codes(101, nbits, False, g))
        flat = torch.cat([torch.zeros(1, dtype=torch.uint8), packed.flatten()])
        db = flat[1:].view(101, -1)[1:]
        assert db.data_ptr() % 2 == 1
        assert_all_ops_match(packed[:3], db, (1, 12, 100), radius=nbits // 2)


def test_unknown_kernel_set_is_refused():
    names = kernel_sets()
    assert names[-1] == "portable"
    with pytest.raises(ValueError, match="available: .*portable"):
        torch.ops.hashkern._cpu_kernels("sse9")


def test_environment_variable_picks_the_kernels():
    from hashkern import _C

    env = dict(os.environ, HASHKERN_CPU_KERNELS="portable")
    # Only torch and the extension: importing all of hashkern would triple the time.
    script = f"import torch; torch.ops.load_library({_C.__file__!r}); print(torch.ops.hashkern._cpu_kernels('')[0])"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "portable"
