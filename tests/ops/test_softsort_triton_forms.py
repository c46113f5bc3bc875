"""The grouped and chunked Triton SoftSort (``triton_forms``) against the float64 definition.

Each form is forced on every row, under the interpreter on CPU tensors: forward, ds, dz1 (dv) and
dz2; Hamming-tied rows of K = 8 / 16 / 64-bit codes, rows with few levels (ties that straddle chunk
and block edges) and random rows; n = 1 .. 300; tau = 1e-3 .. 10. Small tiles (16 positions per
block and chunk) put several blocks, chunks and feature blocks into small problems, so the carries
between them are exercised; grids stay small because the interpreter pays ~1 ms per program.
"""
import pytest
import torch
from test_softsort import _cosine_case, _gather_case, _hamming_similarities, _ties

from hashkern.ops.softsort import triton_forms

FORMS = ["grouped", "chunked"]


@pytest.fixture(params=FORMS)
def form(request):
    before = triton_forms.use_forms(request.param)
    yield request.param
    triton_forms.use_forms(before)


@pytest.fixture
def small_tiles(monkeypatch):
    """16 positions per block / chunk, 16 features per program, 16 rows per block of the group tables."""
    monkeypatch.setattr(triton_forms, "form_config", lambda n, d, device, dtype=None: triton_forms.FormConfig(
        block_n=16, chunk=16, features=16, num_warps=4, block_g=16))


def _randn(*shape):
    return torch.randn(*shape, dtype=torch.float64)


@pytest.mark.parametrize("bits, tau", [(8, 1e-3), (16, 0.1), (64, 10.0), (64, 1e-3)])
def test_gather_on_hamming_rows(form, small_tiles, bits, tau):
    """Three anchors' rows (three programs per feature block), shared and per-row values."""
    s = _hamming_similarities(40, bits, "cpu")[:3]
    _gather_case(s, _randn(40, 20), tau, torch.float64, "triton")
    _gather_case(s, _randn(3, 40, 20), tau, torch.float64, "triton")


def test_cosine_on_hamming_rows(form, small_tiles):
    """The cosine's own paths (dz2, coefficients formed in the kernel), two feature blocks."""
    n = 24
    _cosine_case(_hamming_similarities(n, 16, "cpu"), _randn(n, 20), _randn(n, 20), 0.01, torch.float64, "triton")


@pytest.mark.parametrize("n", [1, 2, 3, 17])
def test_cosine_on_random_rows(form, small_tiles, n):
    _cosine_case(_randn(n, n), _randn(n, 5), _randn(n, 5), 0.3, torch.float64, "triton")


@pytest.mark.parametrize("tau", [1e-3, 10.0])
def test_gather_with_ties_across_chunks(form, small_tiles, tau):
    """Few levels: tie groups longer than a chunk, starting and ending inside chunks; per-row and
    shared values, ascending order."""
    s = _ties((3, 70), "cpu", levels=3)
    _gather_case(s, _randn(3, 70, 18), tau, torch.float64, "triton")
    _gather_case(s, _randn(70, 18), tau, torch.float64, "triton", descending=False)


@pytest.mark.parametrize("similarities", ["hamming", "random"])
def test_gather_n_300(form, similarities):
    """n = 300 at the launcher's own tiles (several chunks of 64, blocks of 128)."""
    n = 300
    s = _hamming_similarities(n, 16, "cpu")[:2] if similarities == "hamming" else _randn(2, n)
    _gather_case(s, _randn(n, 6), 0.01, torch.float64, "triton")


def test_float32_matches_float64_definition(form):
    n = 32
    _cosine_case(_hamming_similarities(n, 64, "cpu"), _randn(n, 24), _randn(n, 24), 0.005, torch.float32, "triton")


def test_rows_choose_their_form_as_the_cpu_kernel_does():
    """auto: rows with g <= n / 2 distinct values (and g <= GROUPS_MAX) grouped, the others chunked;
    a batch that mixes them matches the definition."""
    n = 24
    s = _randn(n, n)
    s[::2] = _hamming_similarities(n, 8, "cpu")[::2]  # even rows: at most 9 values
    s[1] = torch.arange(n, dtype=torch.float64) % 12  # exactly n / 2 values: grouped
    q = torch.sort(s, dim=1, descending=True).values
    grouped, chunked, width = triton_forms.split_rows(q, n, "auto")
    assert set(grouped.tolist()) == {1, *range(0, n, 2)}
    assert set(chunked.tolist()) == set(range(3, n, 2))
    assert width == 16
    _cosine_case(s, _randn(n, 9), _randn(n, 9), 0.05, torch.float64, "triton")
    many = torch.arange(200, dtype=torch.float64).repeat_interleave(2).flip(0)[None]  # 200 values in 400 positions
    assert triton_forms.split_rows(many, 400, "auto")[0].numel() == 0  # g <= n / 2, but too wide a table


def test_forced_grouped_form_takes_rows_of_distinct_values(small_tiles):
    """'grouped' on rows without ties: one group per position, the table as wide as n."""
    before = triton_forms.use_forms("grouped")
    try:
        s = _randn(3, 50)
        assert triton_forms.split_rows(torch.sort(s, 1, True).values, 50)[2] == 64
        _gather_case(s, _randn(50, 4), 0.2, torch.float64, "triton")
    finally:
        triton_forms.use_forms(before)


def test_position_walk_stays_available():
    """'walk': the earlier Triton kernel (the benchmarks' comparison), on Hamming and random rows."""
    before = triton_forms.use_forms("walk")
    try:
        _cosine_case(_hamming_similarities(20, 8, "cpu"), _randn(20, 5), _randn(20, 5), 0.05, torch.float64, "triton")
        _gather_case(_randn(2, 30), _randn(30, 4), 0.3, torch.float64, "triton")
    finally:
        triton_forms.use_forms(before)


def test_use_forms_rejects_unknown_forms():
    with pytest.raises(ValueError, match="form must be one of"):
        triton_forms.use_forms("dense")


class _NoKernel:
    """A kernel whose launches do nothing: the launchers' allocations without the kernels' time."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def _peak_bytes(fn) -> int:
    """Peak of the CPU allocations ``fn`` makes, replayed from the profiler's allocation events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    now = peak = 0
    for _, nbytes in events:
        now += nbytes
        peak = max(peak, now)
    return peak


@pytest.mark.parametrize("similarities", ["random", "hamming"])
def test_memory_at_n_1024_d_128_with_the_cuda_tiles(monkeypatch, similarities):
    """test_memory_on_gpu's problem (sorted_cosine forward + backward, n = 1024, d = 128, fp32) with the
    CUDA launch configuration, its allocations replayed on the CPU: at most 0.1 GiB beyond the inputs
    (random rows run the chunked form, Hamming rows the grouped one)."""
    from hashkern.ops import softsort as ss

    cuda_config = triton_forms.form_config
    monkeypatch.setattr(triton_forms, "form_config",
                        lambda n, d, device, dtype: cuda_config(n, d, torch.device("cuda"), dtype))
    for name in ("_softsort_grouped_fwd_kernel", "_softsort_grouped_bwd_kernel", "_softsort_chunked_fwd_kernel",
                 "_softsort_chunked_bwd_kernel"):
        monkeypatch.setattr(triton_forms, name, _NoKernel())
    n, d = 1024, 128
    s = torch.rand(n, n) if similarities == "random" else _hamming_similarities(n, 64, "cpu").float()
    s.requires_grad_()
    z1, z2 = torch.randn(n, d, requires_grad=True), torch.randn(n, d, requires_grad=True)
    peak = _peak_bytes(lambda: ss.sorted_cosine(s, z1, z2, 0.005, backend="triton").sum().backward())
    assert 4 * n * n < peak <= 0.1 * 2**30, f"peak {peak / 2**20:.1f} MiB"
