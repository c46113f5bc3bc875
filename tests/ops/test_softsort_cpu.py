"""The C++ SoftSort kernels: the grouped kernel (rows with few distinct values, e.g. Hamming
similarities) and the position scans, each forced on every row, against the float64 definition."""
import pytest
import torch
from test_softsort import _cosine_case, _gather_case, _hamming_similarities

from hashkern.ops import softsort as ss


def _policy(use=""):
    return torch.ops.hashkern._softsort_groups(use)


@pytest.fixture(params=[(use, isa) for use in ("always", "never") for isa in ("portable", "best")],
                ids=lambda p: "-".join(p))
def groups(request):
    """Every row through the grouped kernel, then through the position scans; each compiled
    portable and for the best instruction set this CPU has."""
    use, isa = request.param
    before = _policy(), torch.ops.hashkern._cpu_kernels("")[0]
    _policy(use)
    torch.ops.hashkern._cpu_kernels(isa)
    yield use
    _policy(before[0])
    torch.ops.hashkern._cpu_kernels(before[1])


@pytest.mark.parametrize("bits", [8, 16, 64])
@pytest.mark.parametrize("tau", [1e-3, 0.1, 10.0])
def test_hamming_ties_match_the_definition(groups, bits, tau):
    n = 70
    s = _hamming_similarities(n, bits, "cpu")
    _cosine_case(s, torch.randn(n, 9, dtype=torch.float64), torch.randn(n, 9, dtype=torch.float64), tau,
                 torch.float64, "cpu")
    _gather_case(s[:4], torch.randn(n, 5, dtype=torch.float64), tau, torch.float64, "cpu", descending=False)
    _gather_case(s[:3], torch.randn(3, n, 6, dtype=torch.float64), tau, torch.float64, "cpu")


@pytest.mark.parametrize("n", [1, 2, 3, 17, 129])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_distinct_values_match_the_definition(groups, n, dtype):
    """No ties: in the grouped kernel every group is one position."""
    _cosine_case(torch.randn(n, n, dtype=torch.float64), torch.randn(n, 7, dtype=torch.float64),
                 torch.randn(n, 7, dtype=torch.float64), 0.2, dtype, "cpu")
    _gather_case(torch.randn(3, n, dtype=torch.float64), torch.randn(n, 4, dtype=torch.float64), 0.2, dtype, "cpu")


def test_zero_vectors_and_the_eps_clamp(groups):
    n = 40
    s = _hamming_similarities(n, 8, "cpu")
    z1 = torch.randn(n, 5, dtype=torch.float64)
    z1[::3] = 0.0  # groups whose gathered E can be (near) zero: the eps branch of the cosine
    _cosine_case(s, z1 * 1e-3, torch.randn(n, 5, dtype=torch.float64), 0.05, torch.float64, "cpu", eps=1e-3)


def test_gradcheck(groups):
    s = torch.randn(7, 7, dtype=torch.float64, requires_grad=True)
    z1, z2 = (torch.randn(7, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(lambda s, z1, z2: ss.sorted_cosine(s, z1, z2, 0.3, backend="cpu"), (s, z1, z2))
    v = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, v: ss.soft_sort_gather(s, v, 0.3, backend="cpu"), (s, v))


def test_benchmark_shape_fp32_matches_fp64(groups):
    """64-bit Hamming similarities at tau = 0.005 as in the benchmark, n = 1024: fp32 within 1e-4 of fp64."""
    n, d = 1024, 16
    s, z1, z2 = _hamming_similarities(n, 64, "cpu"), torch.randn(n, d), torch.randn(n, d)
    inputs64 = [t.double().requires_grad_() for t in (s, z1, z2)]
    inputs32 = [t.float().requires_grad_() for t in (s, z1, z2)]
    c64, c32 = (ss.sorted_cosine(*x, 0.005, backend="cpu") for x in (inputs64, inputs32))
    dc = torch.randn(n, n, dtype=torch.float64)
    g64 = torch.autograd.grad(c64, inputs64, dc)
    g32 = torch.autograd.grad(c32, inputs32, dc.float())
    assert (c32.double() - c64).abs().max().item() < 1e-4
    for a, b in zip(g32, g64):
        assert ((a.double() - b).abs().max() / b.abs().max()).item() < 1e-4


def test_auto_groups_rows_with_few_distinct_values():
    """auto gives, bit for bit, the grouped kernel's result on Hamming similarities (g <= n / 2) and
    the position scans' result on distinct values; the two kernels round differently."""
    n, before = 256, _policy()
    z1, z2 = torch.randn(n, 16), torch.randn(n, 16)
    try:
        for s, expected in ((_hamming_similarities(n, 16, "cpu").float(), "always"), (torch.rand(n, n), "never")):
            results = {}
            for use in ("always", "never", "auto"):
                _policy(use)
                results[use] = ss.sorted_cosine(s, z1, z2, 0.01, backend="cpu")
            assert not torch.equal(results["always"], results["never"])
            assert torch.equal(results["auto"], results[expected])
    finally:
        _policy(before)


def test_policy_names_are_checked():
    with pytest.raises(ValueError, match="use must be 'auto', 'always' or 'never'"):
        _policy("sometimes")
    assert _policy() == "auto"


def _radix_sort(s):
    q, idx = torch.empty_like(s), torch.empty(s.shape, dtype=torch.int64)
    torch.ops.hashkern.sort_rows_descending(s, q, idx)
    return q, idx


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_radix_sort_equals_torch_stable_sort(dtype):
    """The scans' row sort: NaN first, -0.0 tied with 0.0, subnormals, infinities, ties by index."""
    inf, nan, tiny = float("inf"), float("nan"), torch.finfo(dtype).tiny / 4
    specials = torch.tensor([0.0, -0.0, nan, 1.0, inf, -inf, -0.0, nan, 0.0, 2.0, -1.0, tiny, -tiny, 1.0], dtype=dtype)
    cases = [torch.randn(7, 300, dtype=dtype), _hamming_similarities(300, 16, "cpu").to(dtype),
             specials[torch.randint(0, len(specials), (20, 64))], torch.randn(3, 1, dtype=dtype),
             torch.randint(-3, 4, (2, 5000)).to(dtype) * 1e30, torch.empty(0, 5, dtype=dtype)]
    for s in cases:
        q, idx = _radix_sort(s)
        q_ref, idx_ref = torch.sort(s, dim=-1, descending=True, stable=True)
        assert torch.equal(idx, idx_ref)
        assert torch.equal(q.isnan(), q_ref.isnan()) and torch.equal(q.nan_to_num(), q_ref.nan_to_num())


def test_radix_sort_checks_its_arguments():
    s = torch.rand(3, 4)
    with pytest.raises(TypeError, match="s must be float32 or float64"):
        _radix_sort(s.half())
    with pytest.raises(ValueError, match=r"s must be a contiguous \[b, n\] matrix"):
        torch.ops.hashkern.sort_rows_descending(s.t(), torch.empty(4, 3), torch.empty(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="q must be contiguous, shaped like s"):
        torch.ops.hashkern.sort_rows_descending(s, torch.empty(3, 5), torch.empty(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="idx must be contiguous int64"):
        torch.ops.hashkern.sort_rows_descending(s, torch.empty(3, 4), torch.empty(3, 4, dtype=torch.int32))


def test_opcheck_of_the_radix_sort():
    s = torch.randn(4, 9, dtype=torch.float64)
    torch.library.opcheck(torch.ops.hashkern.sort_rows_descending.default,
                          (s, torch.empty_like(s), torch.empty(4, 9, dtype=torch.int64)))
