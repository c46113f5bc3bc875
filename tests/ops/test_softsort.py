"""soft_sort / soft_sort_gather / sorted_cosine against the float64 reference (both backends)."""
import pytest
import torch

from conftest import poison
from hashkern.ops import softsort as ss
from hashkern.ops.softsort import chunked, functions
from hashkern.ops.softsort.reference import (
    soft_sort_gather_reference,
    soft_sort_reference,
    sorted_cosine_reference,
)

BACKENDS = ["torch", "triton"]
ODD_N = [1, 2, 3, 17, 129]
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float16: 1e-2}


def _close(actual, expected, dtype, name):
    """Max error relative to the reference's scale (gradients grow like 1/tau)."""
    actual, expected = actual.double(), expected.double()
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    scale = max(expected.abs().max().item(), 1.0)
    err = (actual - expected).abs().max().item() if actual.numel() else 0.0
    assert err <= TOL[dtype] * scale, f"{name}: max error {err:.3g} > {TOL[dtype]:.1g} * {scale:.3g}"


def _ties(shape, device, levels=4):
    """Integer Hamming-like similarities with few distinct values: heavy ties."""
    return torch.randint(0, levels + 1, shape, device=device).double() / levels


@pytest.fixture
def poison_empty(monkeypatch):
    """Every torch.empty during the call is NaN/-1, so a kernel that leaves part unwritten fails."""
    real = torch.empty

    def empty(*args, **kwargs):
        return poison(real(*args, **kwargs))
    monkeypatch.setattr(torch, "empty", empty)


def _gather_case(s64, v64, tau, dtype, backend, descending=True):
    s = s64.to(dtype).requires_grad_()
    v = v64.to(dtype).requires_grad_()
    e = ss.soft_sort_gather(s, v, tau, descending=descending, backend=backend)
    assert e.shape == (s.shape[0], s.shape[1], v.shape[-1]) and e.dtype == dtype
    g = torch.randn(e.shape, dtype=torch.float64, device=s.device)
    ds, dv = torch.autograd.grad(e, (s, v), g.to(dtype))
    sr = s.detach().double().requires_grad_()
    vr = v.detach().double().requires_grad_()
    er = soft_sort_gather_reference(sr, vr, tau, descending)
    dsr, dvr = torch.autograd.grad(er, (sr, vr), g)
    _close(e, er, dtype, "E")
    _close(ds, dsr, dtype, "ds")
    _close(dv, dvr, dtype, "dv")


def _cosine_case(s64, z1_64, z2_64, tau, dtype, backend, descending=True):
    s = s64.to(dtype).requires_grad_()
    z1 = z1_64.to(dtype).requires_grad_()
    z2 = z2_64.to(dtype).requires_grad_()
    c = ss.sorted_cosine(s, z1, z2, tau, descending=descending, backend=backend)
    assert c.shape == s.shape
    g = torch.randn(c.shape, dtype=torch.float64, device=s.device)
    grads = torch.autograd.grad(c, (s, z1, z2), g.to(c.dtype))
    ref_in = [t.detach().double().requires_grad_() for t in (s, z1, z2)]
    cr = sorted_cosine_reference(*ref_in, tau, descending)
    ref_grads = torch.autograd.grad(cr, ref_in, g)
    _close(c, cr, dtype, "c")
    for name, a, r in zip(("ds", "dz1", "dz2"), grads, ref_grads):
        _close(a, r, dtype, name)


# ----------------------------------------------------------------------------- soft_sort

@pytest.mark.parametrize("descending", [True, False])
def test_soft_sort_is_softmax_of_distances_to_sorted_values(descending):
    s = torch.randn(3, 7, dtype=torch.float64)
    p = ss.soft_sort(s, 0.5, descending=descending)
    q = torch.sort(s, -1, descending=descending).values
    for b in range(3):
        for k in range(7):
            w = torch.exp(-(q[b, k] - s[b]).abs() / 0.5)
            torch.testing.assert_close(p[b, k], w / w.sum())
    # tiny tau: the hard permutation (no ties here)
    p_hard = ss.soft_sort(s, 1e-4, descending=descending)
    perm = torch.sort(s, -1, descending=descending).indices
    torch.testing.assert_close(p_hard.argmax(-1), perm)
    assert ss.soft_sort(s[0], 0.5).shape == (7, 7)


def test_soft_sort_hard_is_a_permutation_with_soft_gradient():
    s = _ties((4, 9), "cpu").requires_grad_()
    p = ss.soft_sort(s, 0.3, hard=True)
    assert torch.equal(p.sum(-1), torch.ones(4, 9, dtype=torch.float64))
    assert torch.equal(p.sum(-2), torch.ones(4, 9, dtype=torch.float64))  # even with ties
    g = torch.randn_like(p)
    (gh,) = torch.autograd.grad(p, s, g)
    (gs,) = torch.autograd.grad(soft_sort_reference(s, 0.3), s, g)
    torch.testing.assert_close(gh, gs)


# ----------------------------------------------------------------------------- soft_sort_gather

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", ODD_N)
def test_gather_matches_reference(device, backend, n, poison_empty):
    b, d = (2, 5) if n == 129 else (3, 6)
    _gather_case(torch.randn(b, n, dtype=torch.float64, device=device),
                 torch.randn(n, d, dtype=torch.float64, device=device), 0.3, torch.float32, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("descending", [True, False])
def test_gather_per_row_values_and_ties(device, backend, descending, poison_empty):
    s, v = _ties((3, 19), device), torch.randn(3, 19, 20, dtype=torch.float64, device=device)
    _gather_case(s, v, 0.1, torch.float64, backend, descending)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tau", [1e-3, 1e-1, 10.0])
def test_gather_temperatures_with_ties(device, backend, tau):
    _gather_case(_ties((2, 33), device, levels=8), torch.randn(33, 4, dtype=torch.float64, device=device),
                 tau, torch.float64, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(device, backend):
    s = torch.randn(9, 3, dtype=torch.float64, device=device).T  # [3, 9], column-major
    v = torch.randn(5, 9, dtype=torch.float64, device=device).T  # [9, 5]
    assert not s.is_contiguous() and not v.is_contiguous()
    _gather_case(s, v, 0.3, torch.float64, backend)
    z = torch.randn(6, 9, dtype=torch.float64, device=device).T
    _cosine_case(torch.randn(9, 9, dtype=torch.float64, device=device).T, z, z.flip(0), 0.3, torch.float64, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gather_gradcheck(backend):
    s = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    v = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    vb = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    fn = lambda s, v: ss.soft_sort_gather(s, v, 0.7, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (s, v), fast_mode=True)
    assert torch.autograd.gradcheck(fn, (s, vb), fast_mode=True)


def test_torch_path_chunks_rows_and_ranks(monkeypatch):
    """Force tiny score chunks (rank-split rows) and check the result does not change."""
    monkeypatch.setattr(chunked, "CHUNK_ELEMS", 40)
    assert list(chunked._chunks(2, 9, 40)) == [(0, 1, 0, 4), (0, 1, 4, 8), (0, 1, 8, 9),
                                               (1, 2, 0, 4), (1, 2, 4, 8), (1, 2, 8, 9)]
    _gather_case(torch.randn(2, 9, dtype=torch.float64), torch.randn(9, 3, dtype=torch.float64),
                 0.4, torch.float64, "torch")
    _gather_case(torch.randn(2, 9, dtype=torch.float64), torch.randn(2, 9, 3, dtype=torch.float64),
                 0.4, torch.float64, "torch")


# ----------------------------------------------------------------------------- sorted_cosine

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", ODD_N)
def test_sorted_cosine_matches_reference(device, backend, n, poison_empty):
    d = 5 if n == 129 else 7
    _cosine_case(torch.randn(n, n, dtype=torch.float64, device=device),
                 torch.randn(n, d, dtype=torch.float64, device=device),
                 torch.randn(n, d, dtype=torch.float64, device=device), 0.2, torch.float32, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tau", [1e-3, 1e-1, 10.0])
def test_sorted_cosine_ties_and_temperatures(device, backend, tau):
    n, k = 24, 8
    codes = torch.randint(0, 2, (2, n, k), device=device).double() * 2 - 1
    s = (codes[0] @ codes[1].T + k) / (2 * k)  # Hamming similarities: only k+1 distinct values
    _cosine_case(s, torch.randn(n, 6, dtype=torch.float64, device=device),
                 torch.randn(n, 6, dtype=torch.float64, device=device), tau, torch.float64, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sorted_cosine_backward_in_row_chunks(backend, monkeypatch):
    monkeypatch.setattr(functions, "COSINE_CHUNK_ELEMS", {"cpu": 40, "cuda": 40})  # 2 rows per chunk
    monkeypatch.setattr(chunked, "CHUNK_ELEMS", 50)
    _cosine_case(torch.randn(11, 11, dtype=torch.float64), torch.randn(11, 3, dtype=torch.float64),
                 torch.randn(11, 3, dtype=torch.float64), 0.5, torch.float64, backend, descending=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sorted_cosine_gradcheck(backend):
    inputs = [torch.randn(shape, dtype=torch.float64, requires_grad=True) for shape in ((6, 6), (6, 3), (6, 3))]
    fn = lambda s, z1, z2: ss.sorted_cosine(s, z1, z2, 0.5, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_nan_for_tiny_tau_large_magnitudes_and_zero_vectors(device, backend):
    s = (torch.randn(9, 9, device=device) * 1e4).requires_grad_()
    z1 = torch.randn(9, 4, device=device).requires_grad_()
    z2 = torch.randn(9, 4, device=device)
    z2[0] = 0.0  # zero anchor: cosine 0, not NaN
    z2.requires_grad_()
    c = ss.sorted_cosine(s, z1, z2, 1e-3, backend=backend)
    e = ss.soft_sort_gather(s, z1 * 1e3, 1e-3, backend=backend)
    grads = torch.autograd.grad(c.sum() + e.sum(), (s, z1, z2))
    for t in (c, e, *grads):
        assert torch.isfinite(t).all()
    assert (c[0] == 0).all()


def test_torch_compile_has_no_graph_break():
    s, z1, z2 = torch.randn(8, 8), torch.randn(8, 3, requires_grad=True), torch.randn(8, 3)
    fn = torch.compile(lambda s, z1, z2: ss.sorted_cosine(s, z1, z2, 0.5, backend="torch").sum(),
                       fullgraph=True, backend="aot_eager")
    out = fn(s, z1, z2)
    out.backward()
    torch.testing.assert_close(out, sorted_cosine_reference(s, z1, z2, 0.5).sum(), rtol=1e-5, atol=1e-5)
    assert z1.grad is not None and torch.isfinite(z1.grad).all()


# ----------------------------------------------------------------------------- half precision (GPU)

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n", [17, 129, 1000])
def test_half_precision_on_gpu(dtype, n):
    dev = torch.device("cuda")
    _gather_case(_ties((4, n), dev, levels=16), torch.randn(n, 64, dtype=torch.float64, device=dev),
                 0.1, dtype, "triton")
    _cosine_case(_ties((n, n), dev, levels=16), torch.randn(n, 64, dtype=torch.float64, device=dev),
                 torch.randn(n, 64, dtype=torch.float64, device=dev), 0.1, dtype, "triton")


@pytest.mark.gpu
def test_large_n_memory_on_gpu():
    n, d = 4096, 128
    dev = torch.device("cuda")
    s = torch.randn(n, n, device=dev, requires_grad=True)
    z1 = torch.randn(n, d, device=dev, requires_grad=True)
    z2 = torch.randn(n, d, device=dev, requires_grad=True)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    ss.sorted_cosine(s, z1, z2, 0.1, backend="triton").sum().backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    assert extra < 8 * n * n * 4 + (256 << 20), f"peak extra memory {extra / 2**20:.0f} MiB is not O(n^2 + n d)"


# ----------------------------------------------------------------------------- bad input

def test_bad_inputs():
    s, v = torch.randn(3, 4), torch.randn(4, 2)
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        ss.soft_sort_gather(s, v, 0.0)
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        ss.sorted_cosine(torch.randn(4, 4), v, v, -1.0)
    with pytest.raises(ValueError, match="tau"):
        ss.soft_sort(s, float("inf"))
    with pytest.raises(ValueError, match=r"v must have shape \[4, d\] or \[3, 4, d\]"):
        ss.soft_sort_gather(s, torch.randn(5, 2), 1.0)
    with pytest.raises(ValueError, match="s must have at least one column"):
        ss.soft_sort_gather(torch.randn(3, 0), torch.randn(0, 2), 1.0)
    with pytest.raises(ValueError, match="s must have at least one column"):
        ss.sorted_cosine(torch.randn(0, 0), torch.randn(0, 2), torch.randn(0, 2), 1.0)
    with pytest.raises(ValueError, match="s must have at least one column"):
        ss.soft_sort(torch.randn(0), 1.0)
    with pytest.raises(ValueError, match=r"s must be square"):
        ss.sorted_cosine(torch.randn(4, 5), v, v, 1.0)
    with pytest.raises(ValueError, match=r"z2 must have the shape of z1"):
        ss.sorted_cosine(torch.randn(4, 4), v, torch.randn(4, 3), 1.0)
    with pytest.raises(ValueError, match=r"z1 must have shape \[4, d\]"):
        ss.sorted_cosine(torch.randn(4, 4), torch.randn(3, 2), torch.randn(3, 2), 1.0)
    with pytest.raises(TypeError, match="z2 must have the dtype of z1"):
        ss.sorted_cosine(torch.randn(4, 4), v, v.double(), 1.0)
    with pytest.raises(TypeError, match="s must have dtype"):
        ss.soft_sort_gather(torch.ones(3, 4, dtype=torch.int64), v, 1.0)
    with pytest.raises(ValueError, match="s must be 2-D"):
        ss.soft_sort_gather(torch.randn(4), v, 1.0)
    with pytest.raises(TypeError, match="v must be a torch.Tensor"):
        ss.soft_sort_gather(s, [[1.0]], 1.0)
    with pytest.raises(TypeError, match="descending must be a bool"):
        ss.soft_sort_gather(s, v, 1.0, descending=1)
    with pytest.raises(ValueError, match="backend must be one of"):
        ss.soft_sort_gather(s, v, 1.0, backend="gpu")
    with pytest.raises(ValueError, match="not implemented for soft_sort_gather"):
        ss.soft_sort_gather(s, v, 1.0, backend="cuda")


# ----------------------------------------------------------------------------- GPU build (no GPU needed)

def _compile_for_sm90(dtypes: str, dims: str):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import sys, torch; from hashkern.ops.softsort._compile_check import compile_all; "
            f"sys.exit(0 if compile_all(({dtypes}), ({dims})) else 1)")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ok   _soft_sort_gather_bwd_kernel" in result.stdout


def test_kernels_compile_for_hopper():
    """The launch configs CUDA uses compile (PTX + ptxas, sm_90a) and fit in shared memory.

    The full dtype x width matrix: ``python -m hashkern.ops.softsort._compile_check`` (~2 min).
    """
    pytest.importorskip("triton.backends.nvidia")
    _compile_for_sm90("torch.bfloat16, torch.float32", "128,")

