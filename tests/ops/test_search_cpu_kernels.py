"""Every CPU kernel set this machine runs (portable, SSE4.1, AVX2 and AVX-512 VPOPCNTDQ, each
with and without its bit-sliced search), forced in turn, and the per-width choice calibration makes
("auto"), against the plain-PyTorch references: hamming_distance, hamming_topk, hamming_radius,
exact."""
import json
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
WIDTHS = list(range(1, 131)) + [256, 512, 768, 1000, 1024, 1536, 2048]


def kernel_sets():
    """The kernel sets this CPU supports, widest first, then "auto" (chosen per width by measuring)."""
    if not _ext.has_kernel("hamming_topk", "cpu"):
        return []
    return list(torch.ops.hashkern._cpu_kernels(""))[1:] + ["auto"]


def row_kernel_sets():
    """kernel_sets() less the "<isa>-rows" twin of each set that takes a bit-sliced search: for a
    test whose searches never take it (fewer than 8 queries or one block of rows) the two run the
    same code."""
    names = kernel_sets()
    return [name for name in names if not (name.endswith("-rows") and name[:-len("-rows")] in names)]


def _forced(name):
    previous = torch.ops.hashkern._cpu_kernels("")[0]
    assert torch.ops.hashkern._cpu_kernels(name)[0] == name
    return previous


@pytest.fixture(params=kernel_sets())
def kernels(request):
    previous = _forced(request.param)
    yield request.param
    torch.ops.hashkern._cpu_kernels(previous)


@pytest.fixture(params=row_kernel_sets())
def row_kernels(request):
    previous = _forced(request.param)
    yield request.param
    torch.ops.hashkern._cpu_kernels(previous)


def codes(n, nbits, tied, generator):
    """{0, 1} codes [n, nbits]; tied: only 3 distinct codes with a few bits set (most distances tie)."""
    if not tied:
        return torch.randint(0, 2, (n, nbits), generator=generator)
    pool = (torch.rand(3, nbits, generator=generator) < 0.1).long()
    return pool[torch.randint(0, 3, (n,), generator=generator)]


_REFERENCES = {}


@pytest.fixture(autouse=True, scope="module")
def _forget_references():
    yield
    _REFERENCES.clear()


def reference(op, q, db, *args):
    """op(q, db, *args), computed once per input: every kernel set is checked against the same
    answer (the references unpack every bit; recomputing them per set took most of this file's time)."""
    key = (op.__name__, q.shape, db.shape, hash(q.numpy().tobytes()), hash(db.numpy().tobytes()), args)
    if key not in _REFERENCES:
        _REFERENCES[key] = op(q, db, *args)
    return _REFERENCES[key]


def assert_topk_matches(q, db, k, message=""):
    dist, idx = hamming_topk(q, db, k, backend="cpu")
    ref_dist, ref_idx = reference(hamming_topk_reference, q, db, k)
    assert torch.equal(dist, ref_dist) and torch.equal(idx, ref_idx), message or f"k={k}"


def assert_radius_matches(q, db, radius):
    want = reference(hamming_radius_reference, q, db, radius)
    for got, expected in zip(hamming_radius(q, db, radius, backend="cpu"), want):
        assert torch.equal(got, expected), f"r={radius}"


def assert_all_ops_match(q, db, ks, radius):
    assert torch.equal(hamming_distance(q, db), reference(hamming_distance_reference, q, db))
    for k in ks:
        assert_topk_matches(q, db, k)
    assert_radius_matches(q, db, radius)


@pytest.mark.parametrize("tied", [False, True])
def test_every_width_matches_reference(row_kernels, tied):
    # 45 rows: one full 32-row vector of 8-bit codes and a scalar remainder; k = 1 and 5 stream
    # (8k <= N), k = 20 and N count all distances.
    g = torch.Generator().manual_seed(1)
    for nbits in WIDTHS:
        packed = pack_bits(codes(52, nbits, tied, g))
        q, db = packed[:7], packed[7:]
        assert_all_ops_match(q, db, (1, 5, 20, db.shape[0]), radius=nbits // 3)


@pytest.mark.parametrize("nbits", [3, 16, 24, 32, 48, 64, 128])
def test_block_boundaries_and_ties_at_the_threshold(row_kernels, nbits):
    # Past one 2048-row block, with 17 distinct codes: the k-th distance has thousands of ties.
    g = torch.Generator().manual_seed(nbits)
    packed = pack_bits(codes(2 * 2048 + 45, nbits, True, g))
    q, db = packed[:5], packed[5:]
    assert_all_ops_match(q, db, (1, 100, 700, db.shape[0] // 2), radius=1)


@pytest.mark.parametrize("nbits", [128, 256, 384, 1536])
@pytest.mark.parametrize("tied", [False, True])
def test_wide_codes_across_query_tiles_and_blocks(kernels, nbits, tied):
    # The bit-sliced search of 16m-byte codes (SSE4.1, AVX2 and AVX-512; 9 count planes up to 256
    # bits, 11 above), which takes every block after a chunk's first: 70 queries, more than one tile;
    # 4,396 rows, two 2048-row blocks and a tail whose last 128-, 256- and 512-row group is partial;
    # all-ones and all-zeros codes, whose weights reach the counters' limits; rows at an odd address.
    g = torch.Generator().manual_seed(nbits + tied)
    bits = codes(70 + 4396, nbits, tied, g)
    bits[0], bits[1], bits[2500], bits[-1] = 1, 0, 1, 0
    packed = pack_bits(bits)
    flat = torch.cat([torch.zeros(1, dtype=torch.uint8), packed[70:].flatten()])
    db = flat[1:].view(4396, -1)
    assert db.data_ptr() % 2 == 1
    assert_all_ops_match(packed[:70], db, (1, 37, 500), radius=nbits // 3)


@pytest.mark.parametrize("threads", [2, 3])
def test_few_queries_split_database(row_kernels, threads):
    # One query (and 2 < 3 threads), 40,000 codes with many ties: the database is split across
    # threads, the streaming parts merged (k <= N / 8), the two-pass parts (larger k, radius)
    # each given their slots after the ties of the parts before them.
    g = torch.Generator().manual_seed(threads)
    packed = pack_bits(codes(40002, 16, True, g))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for q in (packed[:1], packed[:2]):
            db = packed[2:]
            for k in (1, 1000, 4999, 5001, 40000):
                assert_topk_matches(q, db, k)
            for r in (0, 2, 16):
                assert_radius_matches(q, db, r)
    finally:
        torch.set_num_threads(before)


def test_unaligned_rows(row_kernels):
    # A storage offset of one byte: no kernel may assume aligned rows.
    g = torch.Generator().manual_seed(2)
    for nbits in (16, 32, 64, 128, 256, 512, 1000, 1536):
        packed = pack_bits(codes(101, nbits, False, g))
        flat = torch.cat([torch.zeros(1, dtype=torch.uint8), packed.flatten()])
        db = flat[1:].view(101, -1)[2:]  # 1 + 2 * width bytes from the start: odd for every width
        assert db.data_ptr() % 2 == 1
        assert_all_ops_match(packed[:3], db, (1, 12, 99), radius=nbits // 2)


def test_unknown_kernel_set_is_refused():
    names = kernel_sets()
    assert names[-2:] == ["portable", "auto"]
    with pytest.raises(ValueError, match="available: .*portable"):
        torch.ops.hashkern._cpu_kernels("sse9")


def test_environment_variable_picks_the_kernels():
    from hashkern import _C

    env = dict(os.environ, HASHKERN_CPU_KERNELS="portable")
    # Only torch and the extension: importing all of hashkern would triple the time.
    script = f"import torch; torch.ops.load_library({_C.__file__!r}); print(torch.ops.hashkern._cpu_kernels('')[0])"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "portable"


@pytest.mark.parametrize("nbits", [16, 128, 256, 1024])
def test_query_counts(kernels, nbits):
    # 1 and 3 queries (the database split across threads), 33 (past the bit-sliced search's
    # measured query count, so a tile slices), 1000 (several query tiles); 2,100 rows: a second
    # block, which is where the bit-sliced search starts.
    g = torch.Generator().manual_seed(nbits)
    packed = pack_bits(codes(1000 + 2100, nbits, False, g))
    db = packed[1000:]
    for nq in (1, 3, 33, 1000):
        assert_all_ops_match(packed[:nq], db, (1, 5, 20, db.shape[0]), radius=nbits // 3)


@pytest.mark.parametrize("nbits", [128, 512])
def test_sliced_groups_and_steps_around_their_boundaries(kernels, nbits):
    # The block after the first is bit-sliced: its rows one short of, at and one past a 16-row
    # transposition step (SSE), a 32-row one (AVX2), a 64-row one (AVX-512), a 128-, 256- and
    # 512-row plane group (SSE, AVX2, AVX-512); 9 queries, past the 8 from which a forced set slices.
    g = torch.Generator().manual_seed(nbits + 2)
    packed = pack_bits(codes(9 + 2048 + 1025, nbits, False, g))
    q = packed[:9]
    for tail in (1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1023, 1024,
                 1025):
        db = packed[9:9 + 2048 + tail]
        for k in (1, 20):
            assert_topk_matches(q, db, k, f"rows 2048 + {tail}, k={k}")


@pytest.mark.parametrize("tied", [False, True])
def test_avx512_bit_sliced_search_at_every_width_it_takes(tied):
    # Forced "avx512": the bit-sliced search on 512-row planes at every width it takes (16m bytes,
    # 128 to 1536 bits). 33 queries, one tile, past the 8 from which a forced set slices; 5,096
    # rows at an odd address: the first block computes every distance, the second is sliced whole
    # and the third's last 512-row group is partial; all-ones and all-zeros queries (one sums no
    # plane) and rows in sliced blocks; k = 500 still streams (8k <= N), k = N counts.
    if "avx512" not in _sliced_sets():
        pytest.skip("no AVX-512 VPOPCNTDQ on this CPU")
    previous = _forced("avx512")
    try:
        g = torch.Generator().manual_seed(7 + tied)
        if _ext.cpu_kernel_choice(128)["sliced"] is None:
            pytest.skip("AVX-512 VPOPCNTDQ without GFNI and VBMI: no 512-row bit-sliced search")
        for nbits in range(128, 1537, 128):
            choice = _ext.cpu_kernel_choice(nbits)
            assert (choice["sliced"], choice["sliced_min_queries"]) == ("avx512", 8), nbits
            bits = codes(33 + 5096, nbits, tied, g)
            bits[0], bits[1], bits[33 + 2048], bits[33 + 2049], bits[-1] = 1, 0, 1, 0, 1
            packed = pack_bits(bits)
            flat = torch.cat([torch.zeros(1, dtype=torch.uint8), packed[33:].flatten()])
            q, db = packed[:33], flat[1:].view(5096, -1)
            assert db.data_ptr() % 2 == 1
            ref_dist, ref_idx = torch.sort(hamming_distance_reference(q, db), dim=1, stable=True)
            for k in (1, 37, 500, db.shape[0]):
                dist, idx = hamming_topk(q, db, k, backend="cpu")
                assert torch.equal(dist, ref_dist[:, :k]) and torch.equal(idx, ref_idx[:, :k]), (nbits, k)
    finally:
        torch.ops.hashkern._cpu_kernels(previous)


@pytest.mark.parametrize("nbits", [8, 64, 128, 256, 768])
def test_database_sizes_around_block_boundaries(kernels, nbits):
    # Sizes one short of, at and one past: a 2048-row block, two blocks, and (one query, so the
    # database is split into chunks of at least 16,384 rows) two and three chunks.
    g = torch.Generator().manual_seed(nbits + 1)
    packed = pack_bits(codes(49153 + 40, nbits, True, g))
    for n in (2047, 2048, 2049, 4095, 4096, 4097):
        assert_all_ops_match(packed[:40], packed[40:40 + n], (1, 5, 20), radius=nbits // 4)
    for n in (32767, 32768, 32769, 49151, 49152, 49153):
        q, db = packed[:1], packed[40:40 + n]
        for k in (1, 20):
            assert_topk_matches(q, db, k, f"n={n}, k={k}")


def _choices_in_subprocess(env_overrides, widths):
    """{width: [kernels, sliced queries, source]} from a fresh process (the choice is cached per process)."""
    from hashkern import _C

    env = {k: v for k, v in os.environ.items() if k not in ("HASHKERN_CPU_KERNELS", "HASHKERN_CPU_CALIBRATION")}
    env.update(env_overrides)
    script = (f"import json, torch; torch.ops.load_library({_C.__file__!r}); "
              f"print(json.dumps({{w: torch.ops.hashkern._cpu_kernel_choice(w) for w in {widths!r}}}))")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return {int(w): c for w, c in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def test_calibration_cache_is_keyed_by_cpu_identity_and_forcing_overrides_it(tmp_path):
    cache = tmp_path / "calibration.tsv"
    measured = _choices_in_subprocess({"HASHKERN_CPU_CALIBRATION": str(cache)}, [5, 32])
    assert {c[2] for c in measured.values()} == {"measured"}
    lines = cache.read_text().splitlines()
    identity = torch.ops.hashkern._cpu_identity()
    assert len(lines) == 2 and all(line.split("\t")[1] == identity for line in lines)
    # This CPU's lines are read back; edit them to a choice calibration would not make here: other
    # per-row kernels, and at 32 bytes the other bit-sliced search (or none), from 3 queries.
    sets = [s for s in kernel_sets() if s != "auto" and s not in _sliced_sets()]  # "avx2" = "avx2-rows" + slicing
    planted = sets[-1] if measured[32][0] != sets[-1] else sets[0]
    searches = [s for s in _sliced_sets() if s != measured[32][3]]
    search, queries = (searches[0], "3") if searches else ("", "0")

    def plant(lines):
        widths = [int(line.split("\t")[2]) for line in lines]
        return "".join(line.rsplit("\t", 3)[0] + (f"\t{planted}\t{search or '-'}\t{queries}\n" if w == 32 else
                                                   f"\t{planted}\t-\t0\n") for line, w in zip(lines, widths))

    cache.write_text(plant(lines))
    again = _choices_in_subprocess({"HASHKERN_CPU_CALIBRATION": str(cache)}, [5, 32])
    assert again == {5: [planted, "0", "cache", ""], 32: [planted, queries, "cache", search]}
    # The same lines under another CPU's identity are ignored: measured again.
    family = identity.split(" model ")[0]
    cache.write_text(cache.read_text().replace(f"{family} model ", f"{family} model 9"))
    other = _choices_in_subprocess({"HASHKERN_CPU_CALIBRATION": str(cache)}, [32])
    assert other[32][2] == "measured"
    # A forced set wins over the cache.
    cache.write_text(plant(lines))
    forced = "portable" if planted != "portable" else sets[0]
    choice = _choices_in_subprocess({"HASHKERN_CPU_CALIBRATION": str(cache), "HASHKERN_CPU_KERNELS": forced}, [32])
    assert choice == {32: [forced, "0", "forced", ""]}


def _sliced_sets():
    """The sets that take a bit-sliced search: each is its "-rows" twin plus the search of its name."""
    names = kernel_sets()
    return [name for name in names if f"{name}-rows" in names]


def test_avx512_sets_are_offered_where_the_cpu_has_them():
    # CPUs with AVX-512 F, BW, VL and VPOPCNTDQ get the per-row VPOPCNTDQ kernels with and without
    # the bit-sliced search on 512-row planes, and calibration times that search.
    flags = torch.ops.hashkern._cpu_identity().split(" flags ")[1].split(",")
    if not {"avx512f", "avx512bw", "avx512vl", "avx512vpopcntdq"} <= set(flags):
        pytest.skip("no AVX-512 VPOPCNTDQ on this CPU")
    assert {"avx512", "avx512-rows"} <= set(kernel_sets()) and "avx512" in _sliced_sets()
    assert _ext.cpu_kernel_choice(1024)["sliced"] in ("avx512", "avx2", "sse4", None)


def test_128_bit_sets_are_offered_where_the_cpu_has_them():
    # x86-64 CPUs with SSE4.1 and POPCNT (every one this project's machines run) get the 128-bit
    # per-row kernels and the bit-sliced search on 128-row planes, and calibration times them.
    flags = torch.ops.hashkern._cpu_identity().split(" flags ")[1].split(",")
    if not {"sse4.1", "popcnt"} <= set(flags):
        pytest.skip("no SSE4.1 and POPCNT on this CPU")
    assert {"sse4", "sse4-rows"} <= set(kernel_sets())
    assert _ext.cpu_kernel_choice(1024)["sliced"] in ("avx512", "avx2", "sse4", None)


def test_cpu_kernel_choice_reports_the_kernels_in_use(kernels):
    choice = _ext.cpu_kernel_choice(1024)
    assert set(choice) == {"kernels", "sliced", "sliced_min_queries", "source", "cpu"}
    if kernels == "auto":
        assert choice["source"] in ("measured", "cache") and choice["kernels"] in kernel_sets()
        assert choice["sliced"] in (*_sliced_sets(), None) and (choice["sliced"] is None) == (
            choice["sliced_min_queries"] == 0)
    else:
        sliced = kernels if kernels in _sliced_sets() else None
        assert choice == dict(choice, kernels=kernels, source="forced", sliced=sliced,
                              sliced_min_queries=8 if sliced else 0)
    assert choice["cpu"] == torch.ops.hashkern._cpu_identity() and " family " in choice["cpu"]
    with pytest.raises(ValueError, match="nbits must be >= 1"):
        _ext.cpu_kernel_choice(0)
