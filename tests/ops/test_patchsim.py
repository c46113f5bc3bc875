"""patch_similarity against the float64 oracle: both backends, both reductions, masks, ties, odd shapes."""
import pytest
import torch

from hashkern.ops.patchsim import patch_similarity, patch_similarity_reference, torch_impl
from tests.conftest import poison

BACKENDS = ["torch", "triton"]
REDUCES = ["maxmean", "softmaxmean"]
# (b1, b2, P, Q, D): odd sizes, size-1 everywhere, P = 7, D = 33, more than one 16-wide tile
SHAPES = [(3, 2, 7, 5, 33), (1, 1, 1, 1, 1), (2, 3, 1, 7, 16), (1, 2, 7, 1, 33), (2, 1, 19, 21, 7)]
TOL = {torch.float64: 1e-10, torch.float32: 2e-3, torch.bfloat16: 3e-2, torch.float16: 1e-2}


@pytest.fixture
def poison_allocations(monkeypatch):
    """Every buffer allocated with torch.empty / empty_like during the call starts as NaN / -1."""
    empty, empty_like = torch.empty, torch.empty_like
    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poison(empty_like(*a, **k)))


def _masks(b1, b2, P, Q, device):
    mask1 = torch.rand(b1, P, device=device) > 0.4
    mask2 = torch.rand(b2, Q, device=device) > 0.4
    mask1[torch.arange(b1), torch.randint(P, (b1,))] = True  # at least one real patch per image
    mask2[torch.arange(b2), torch.randint(Q, (b2,))] = True
    return mask1, mask2


def _check(x1, x2, backend, tol, **kw):
    """Forward and both gradients of patch_similarity vs the float64 reference."""
    a1 = x1.detach().clone().requires_grad_()
    a2 = x2.detach().clone().requires_grad_()
    r1 = x1.detach().double().requires_grad_()
    r2 = x2.detach().double().requires_grad_()
    out = patch_similarity(a1, a2, backend=backend, **kw)
    ref = patch_similarity_reference(r1, r2, **kw)
    assert out.shape == ref.shape
    assert not out.isnan().any()
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)
    grad = torch.randn_like(ref)
    out.backward(grad.to(out.dtype))
    ref.backward(grad)
    torch.testing.assert_close(a1.grad.double(), r1.grad, atol=tol, rtol=tol)
    torch.testing.assert_close(a2.grad.double(), r2.grad, atol=tol, rtol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(device, backend, reduce, shape, poison_allocations):
    b1, b2, P, Q, D = shape
    x1 = torch.randn(b1, P, D, dtype=torch.float64, device=device)
    x2 = torch.randn(b2, Q, D, dtype=torch.float64, device=device)
    _check(x1, x2, backend, TOL[torch.float64], reduce=reduce, temperature=0.3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("normalize", [True, False])
def test_masks(device, backend, reduce, normalize, poison_allocations):
    b1, b2, P, Q, D = 3, 4, 9, 6, 17
    x1 = torch.randn(b1, P, D, dtype=torch.float64, device=device)
    x2 = torch.randn(b2, Q, D, dtype=torch.float64, device=device)
    mask1, mask2 = _masks(b1, b2, P, Q, device)
    _check(x1, x2, backend, TOL[torch.float64], reduce=reduce, mask1=mask1, mask2=mask2,
           normalize=normalize, temperature=0.2)
    # padded tokens are ignored: changing them changes nothing
    s = patch_similarity(x1, x2, reduce=reduce, mask1=mask1, mask2=mask2, normalize=normalize,
                         temperature=0.2, backend=backend)
    x1b, x2b = x1.clone(), x2.clone()
    x1b[~mask1] = 100.0
    x2b[~mask2] = -3.0
    s_b = patch_similarity(x1b, x2b, reduce=reduce, mask1=mask1, mask2=mask2, normalize=normalize,
                           temperature=0.2, backend=backend)
    torch.testing.assert_close(s_b, s, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_opposite_patches_at_low_temperature_stay_finite(device, backend):
    # Every similarity is -1, so the smooth max is -1/T = -100: padded or masked columns, which
    # score 0, must stay out of the exp (exp(100) overflows float32; the interpreter warns).
    x1 = torch.randn(1, 1, 8, device=device).expand(2, 3, 8).contiguous()
    mask2 = torch.tensor([[False, True, True], [True, True, True]], device=device)
    for dtype, tol in ((torch.float32, TOL[torch.float32]), (torch.float64, TOL[torch.float64])):
        _check(x1.to(dtype), -x1.to(dtype), backend, tol, reduce="softmaxmean", temperature=0.01, mask2=mask2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("normalize", [True, False])
def test_exact_ties_send_gradient_to_first_patch(device, backend, normalize):
    b1, b2, P, Q, D = 2, 3, 5, 70, 8
    # small integers: every dot product is exact, so duplicated patches tie exactly
    x1 = torch.randint(-2, 3, (b1, P, D), device=device).double()
    x2 = torch.randint(-2, 3, (b2, Q, D), device=device).double()
    later = [4, 40, 66, 69]      # copies in the first 64-wide tile and in the next one
    x2[:, later] = x2[:, 1:2]    # duplicated patch of x2 (tie in the max)
    x1[:, 2] = x2[0, 1]          # a patch of x1 that equals the tied patch of image 0
    x1[:, 0] = x1[:, 3]          # duplicated patch of x1
    x1[x1.abs().sum(-1) == 0] = 1.0  # no all-zero token (its cosine is undefined)
    x2[x2.abs().sum(-1) == 0] = 1.0
    _check(x1, x2, backend, TOL[torch.float64], reduce="maxmean", normalize=normalize)
    x2g = x2.clone().requires_grad_()
    patch_similarity(x1, x2g, normalize=normalize, backend=backend).sum().backward()
    assert (x2g.grad[:, later] == 0).all(), "the later copies of a tied patch must get no gradient"
    if normalize:  # x1[:, 2] has cosine 1 with x2[0, 1] only, so the first copy takes its gradient
        assert (x2g.grad[0, 1] != 0).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_patches_share_one_max(device, backend, monkeypatch):
    """A hub patch that is the max of every x1 patch: one long gradient segment, which the Triton path
    splits into pieces of SPLIT rows (here 4: 57 rows -> 15 pieces, summed by other programs)."""
    if backend == "triton":
        from hashkern.ops.patchsim import triton_launch
        monkeypatch.setattr(triton_launch, "SPLIT", 4)
    b1, b2, P, Q, D = 3, 2, 19, 6, 10
    x1 = torch.rand(b1, P, D, dtype=torch.float64, device=device) + 0.1
    x2 = torch.randn(b2, Q, D, dtype=torch.float64, device=device)
    x2[:, 3] = 5.0
    mask1, _ = _masks(b1, b2, P, Q, device)
    _check(x1, x2, backend, TOL[torch.float64], normalize=False, mask1=mask1)
    _check(x1, x2, backend, TOL[torch.float64], normalize=False)  # every row of every image picks the hub


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,big", [(torch.float32, 1e20), (torch.float64, 1e200), (torch.float16, 6e4)])
def test_huge_finite_inputs_give_cosines(backend, dtype, big):
    """The norm of x ~ 1e20 overflows float32 (~1.8e19): rows are scaled by their max |entry| first."""
    x = torch.full((2, 3, 64), big, dtype=dtype)
    x[1, :, ::2] = -big
    xg = x.clone().requires_grad_()
    s = patch_similarity(xg, x, backend=backend)
    torch.testing.assert_close(s.double(), torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64),
                               atol=1e-3, rtol=0)
    s.sum().backward()
    assert torch.isfinite(xg.grad).all()
    # cosines are scale-invariant: at 1e200 (squares overflow float64) they equal those of the unscaled tokens
    y1, y2 = torch.randn(2, 5, 16, dtype=torch.float64), torch.randn(3, 4, 16, dtype=torch.float64)
    a1, a2 = (y1 * 1e200).requires_grad_(), (y2 * 1e200).requires_grad_()
    r1, r2 = y1.clone().requires_grad_(), y2.clone().requires_grad_()
    s, ref = patch_similarity(a1, a2, backend=backend), patch_similarity_reference(r1, r2)
    torch.testing.assert_close(s, ref, atol=1e-12, rtol=1e-12)
    s.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(a1.grad * 1e200, r1.grad, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(a2.grad * 1e200, r2.grad, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [1e-300, 1e-40, 1e-12])
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_softmaxmean_at_tiny_temperatures(backend, temperature):
    """Below the smallest normal float32 1 / T is inf; the smooth max must stay the max (no NaN), and equal
    the float64 definition, ties between patches shared equally."""
    x1 = torch.randn(2, 5, 8, dtype=torch.float64)
    x2 = torch.randn(3, 6, 8, dtype=torch.float64)
    mask2 = torch.ones(3, 6, dtype=torch.bool)
    mask2[0, 0] = False
    _check(x1, x2, backend, TOL[torch.float64], reduce="softmaxmean", temperature=temperature, mask2=mask2)
    _check(x1.float(), x2.float(), backend, TOL[torch.float32], reduce="softmaxmean", temperature=temperature)
    # exact ties (small integers, raw dot products: every sum is exact in any order) share the weight equally.
    # Integer similarities differ by >= 1, so at T = 1e-3 float64 weights are already exactly 0, 1/2 or 1: the
    # limit, without the reference's own autograd overflow at tinier T.
    k1, k2 = torch.randint(-2, 3, (2, 5, 8)).double(), torch.randint(-2, 3, (3, 6, 8)).double()
    k2[:, 4] = k2[:, 1]
    k1[:, 0] = k2[0, 1]
    a1, a2 = k1.clone().requires_grad_(), k2.clone().requires_grad_()
    r1, r2 = k1.clone().requires_grad_(), k2.clone().requires_grad_()
    out = patch_similarity(a1, a2, reduce="softmaxmean", temperature=temperature, normalize=False, backend=backend)
    ref = patch_similarity_reference(r1, r2, reduce="softmaxmean", temperature=1e-3, normalize=False)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    for got, expect in zip(torch.autograd.grad(out.sum(), (a1, a2)), torch.autograd.grad(ref.sum(), (r1, r2))):
        torch.testing.assert_close(got, expect, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [1e46, 1e300])
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_softmaxmean_at_huge_temperatures(backend, temperature):
    """Above ~1.4e45 the float32 1 / T rounds to 0 and -inf * 0 was NaN (masked patches, and the Triton kernel's
    out-of-image columns): the smooth max must be the mean over the real patches, as in float64."""
    x1, x2 = torch.randn(2, 5, 8), torch.randn(3, 6, 8)
    mask1, mask2 = _masks(2, 3, 5, 6, "cpu")
    _check(x1, x2, backend, TOL[torch.float32], reduce="softmaxmean", temperature=temperature, mask1=mask1,
           mask2=mask2)
    _check(x1, x2, backend, TOL[torch.float32], reduce="softmaxmean", temperature=temperature)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduce", REDUCES)
def test_bitwise_deterministic(device, backend, reduce):
    """The same inputs give bitwise-identical results and gradients (fixed-order sums, no atomics)."""
    x1 = torch.randn(4, 9, 24, device=device)
    x2 = torch.randn(5, 7, 24, device=device)
    x2[:, 2] = x2[:, 5]  # ties and a shared max: long gradient segments
    runs = []
    torch.use_deterministic_algorithms(True)  # nothing on the path is refused by PyTorch's deterministic mode
    try:
        for _ in range(2):
            a, b = x1.clone().requires_grad_(), x2.clone().requires_grad_()
            s = patch_similarity(a, b, reduce=reduce, temperature=0.05, backend=backend)
            s.backward(torch.linspace(-1, 1, s.numel(), device=device).view_as(s))
            runs.append((s, a.grad, b.grad))
    finally:
        torch.use_deterministic_algorithms(False)
    for first, second in zip(*runs):
        assert torch.equal(first, second)


def test_reference_matches_loops():
    """The oracle itself, against the definition written as loops."""
    x1, x2 = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(3, 5, 3, dtype=torch.float64)
    mask1 = torch.tensor([[True, False, True, True], [False, False, True, False]])
    mask2 = torch.tensor([[True] * 5, [False, True, False, True, False], [False] * 4 + [True]])
    cos = torch.nn.functional.cosine_similarity
    expect = torch.empty(2, 3, dtype=torch.float64)
    for n in range(2):
        for m in range(3):
            best = [max(cos(x1[n, i], x2[m, j], dim=0) for j in range(5) if mask2[m, j])
                    for i in range(4) if mask1[n, i]]
            expect[n, m] = sum(best) / len(best)
    got = patch_similarity_reference(x1, x2, mask1=mask1, mask2=mask2)
    torch.testing.assert_close(got, expect)
    tau = 0.05
    x = torch.randn(1, 1, 3, dtype=torch.float64)
    y = torch.randn(1, 4, 3, dtype=torch.float64)
    c = cos(x[0, 0][None], y[0], dim=1)
    smooth = (torch.softmax(c / tau, 0) * c).sum()
    torch.testing.assert_close(patch_similarity_reference(x, y, reduce="softmaxmean", temperature=tau)[0, 0], smooth)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduce", REDUCES)
def test_gradcheck(backend, reduce):
    x1 = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    mask1 = torch.tensor([[True, False, True], [True, True, True]])
    mask2 = torch.tensor([[True, True, False, True], [False, True, True, True]])
    fn = lambda a, b: patch_similarity(a, b, reduce=reduce, mask1=mask1, mask2=mask2,  # noqa: E731
                                       temperature=0.5, backend=backend)
    # fast mode (directional derivatives) for the interpreter: each forward costs ~0.1 s there
    assert torch.autograd.gradcheck(fn, (x1, x2), eps=1e-6, atol=1e-6, fast_mode=backend == "triton")


@pytest.mark.parametrize("reduce", REDUCES)
def test_chunked_path_with_many_chunks(monkeypatch, reduce):
    """Chunk tiles over both image axes, with a ragged last chunk, give the same result."""
    monkeypatch.setattr(torch_impl, "CHUNK_ELEMENTS", 2 * 5 * 4)  # two pairs of [5, 4] per chunk
    x1 = torch.randn(5, 5, 6, dtype=torch.float64)
    x2 = torch.randn(3, 4, 6, dtype=torch.float64)
    mask1, mask2 = _masks(5, 3, 5, 4, "cpu")
    _check(x1, x2, "torch", TOL[torch.float64], reduce=reduce, mask1=mask1, mask2=mask2, temperature=0.4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_saved_statistics_are_exact(backend):
    """The argmax saved for backward equals the reference argmax (first index on ties)."""
    from hashkern.ops.patchsim.autograd import _impl
    u1 = torch.nn.functional.normalize(torch.randn(3, 7, 9, dtype=torch.float64), dim=-1)
    u2 = torch.nn.functional.normalize(torch.randn(2, 6, 9, dtype=torch.float64), dim=-1)
    u2[:, 5] = u2[:, 2]
    inv = torch.full((3,), 1 / 7, dtype=torch.float64)
    _, idx, _ = _impl(backend)[0](u1, u2, None, None, inv, "maxmean", 1.0)
    expect = torch.einsum("npd,mqd->mnpq", u1, u2).argmax(-1).reshape(2, 3 * 7)  # saved image-major: [b2, b1 P]
    assert idx.dtype == torch.int32
    assert torch.equal(idx.long(), expect)
    mask1 = torch.rand(3, 7) > 0.5
    _, idx, _ = _impl(backend)[0](u1, u2, mask1, None, inv, "maxmean", 1.0)
    assert torch.equal(idx.long(), expect.masked_fill(~mask1.reshape(1, -1), 6))  # padded patches carry j = Q


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiles_without_graph_break(backend):
    x1 = torch.randn(2, 3, 8, requires_grad=True)
    x2 = torch.randn(3, 4, 8, requires_grad=True)
    fn = lambda a, b: patch_similarity(a, b, backend=backend).square().sum()  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    out = compiled(x1, x2)
    out.backward()
    ref1, ref2 = x1.detach().clone().requires_grad_(), x2.detach().clone().requires_grad_()
    fn(ref1, ref2).backward()
    torch.testing.assert_close(out, fn(x1, x2))
    torch.testing.assert_close(x1.grad, ref1.grad)
    torch.testing.assert_close(x2.grad, ref2.grad)


def _rel_err(got, ref):
    return ((got.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def _low_precision_case(device, dtype, backend, reduce, masked, tol):
    """Half / tf32 inputs vs float64. For maxmean a rounding error may pick another patch among
    near-ties, so the reference is evaluated at the patches the kernel picked, after checking
    that each of them is a true max up to ``tol``."""
    from hashkern.ops.patchsim import _unit_rows
    from hashkern.ops.patchsim.autograd import _impl
    b1, b2, P, Q, D, temperature = 5, 6, 49, 70, 96, 0.5
    x1 = torch.randn(b1, P, D, device=device).to(dtype).requires_grad_()
    x2 = torch.randn(b2, Q, D, device=device).to(dtype).requires_grad_()
    mask1, mask2 = _masks(b1, b2, P, Q, device) if masked else (None, None)
    s = patch_similarity(x1, x2, reduce=reduce, mask1=mask1, mask2=mask2, temperature=temperature, backend=backend)
    assert s.dtype == torch.float32
    grad = torch.randn_like(s)
    d1, d2 = torch.autograd.grad(s, (x1, x2), grad)
    assert d1.dtype == dtype and d2.dtype == dtype
    r1, r2 = x1.detach().double().requires_grad_(), x2.detach().double().requires_grad_()
    if reduce == "maxmean":
        u1, u2 = _unit_rows(x1.detach()), _unit_rows(x2.detach())  # the op's own normalisation and rounding
        count = torch.full((b1,), P, device=device) if mask1 is None else mask1.sum(1)
        _, idx, _ = _impl(backend)[0](u1, u2, mask1, mask2, 1.0 / count.float(), "maxmean", temperature)
        idx = idx.view(b2, b1, P).permute(1, 0, 2).long().clamp_max(Q - 1)  # [b1, b2, P]
        sim = torch.einsum("npd,mqd->nmpq", *(torch.nn.functional.normalize(r, dim=-1) for r in (r1, r2)))
        if mask2 is not None:
            sim = sim.masked_fill(~mask2[None, :, None, :], float("-inf"))
        keep = torch.ones(b1, 1, P, dtype=torch.bool, device=device) if mask1 is None else mask1[:, None, :]
        chosen = sim.gather(-1, idx[..., None]).squeeze(-1).masked_fill(~keep, 0.0)  # padded i: no patch
        assert (sim.max(-1).values - chosen).masked_fill(~keep, 0.0).max() <= tol, "the kernel's max is not a max"
        ref = chosen.sum(-1) / keep.sum(-1)
    else:
        ref = patch_similarity_reference(r1, r2, reduce=reduce, mask1=mask1, mask2=mask2, temperature=temperature)
    assert _rel_err(s, ref) <= tol
    e1, e2 = torch.autograd.grad(ref, (r1, r2), grad.double())
    assert _rel_err(d1, e1) <= tol
    assert _rel_err(d2, e2) <= tol


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduce", REDUCES)
def test_float32_on_cpu(backend, reduce):
    """float32 on CPU at the size of the CUDA cases below (and the check they rely on)."""
    _low_precision_case("cpu", torch.float32, backend, reduce, True, 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 1e-2)])
def test_half_precision_on_cpu(backend, dtype, tol):
    """Half inputs on CPU (the Triton kernels under the interpreter), fp32 accumulation, vs float64."""
    _low_precision_case("cpu", dtype, backend, "maxmean", True, tol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 5e-3), (torch.bfloat16, 3e-2), (torch.float16, 1e-2)])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("masked", [False, True])
def test_cuda_low_precision(dtype, tol, backend, reduce, masked):
    """CUDA paths in tf32 / bf16 / fp16 (fp32 accumulation) at a size spanning several 64-wide tiles."""
    _low_precision_case("cuda", dtype, backend, reduce, masked, tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input(backend):
    x1, x2 = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match="same feature size D"):
        patch_similarity(x1, torch.randn(2, 5, 6), backend=backend)
    mask1 = torch.ones(2, 3, dtype=torch.bool)
    mask1[1] = False
    with pytest.raises(ValueError, match=r"mask1 has rows with no real patch .* images \[1\]"):
        patch_similarity(x1, x2, mask1=mask1, backend=backend)
    with pytest.raises(ValueError, match="mask2 has rows with no real patch"):
        patch_similarity(x1, x2, mask2=torch.zeros(2, 5, dtype=torch.bool), backend=backend)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            patch_similarity(x1, x2, reduce="softmaxmean", temperature=bad, backend=backend)
    with pytest.raises(ValueError, match="mask1 must have shape"):
        patch_similarity(x1, x2, mask1=torch.ones(2, 4, dtype=torch.bool), backend=backend)
    with pytest.raises(TypeError, match="mask2 must have dtype bool"):
        patch_similarity(x1, x2, mask2=torch.ones(2, 5), backend=backend)
    with pytest.raises(ValueError, match="reduce must be one of"):
        patch_similarity(x1, x2, reduce="mean", backend=backend)
    with pytest.raises(ValueError, match="x1 must be 3-D"):
        patch_similarity(x1[0], x2, backend=backend)
    with pytest.raises(TypeError, match="x2 must have dtype"):
        patch_similarity(x1, x2.int(), backend=backend)
    with pytest.raises(TypeError, match="same dtype"):
        patch_similarity(x1, x2.double(), backend=backend)
    with pytest.raises(ValueError, match="x2 patches Q must be >= 1"):
        patch_similarity(x1, torch.randn(2, 0, 4), backend=backend)
    with pytest.raises(TypeError, match="normalize must be a bool"):
        patch_similarity(x1, x2, normalize=1, backend=backend)


def test_bad_backend():
    x1, x2 = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match="backend must be one of"):
        patch_similarity(x1, x2, backend="fast")
    with pytest.raises(ValueError, match="not implemented for patch_similarity"):
        patch_similarity(x1, x2, backend="cpu")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduce", REDUCES)
def test_torch_library_ops_pass_opcheck(backend, reduce):
    """Schema, fake (meta) kernels and dispatch of hashkern::patch_similarity_fwd/_bwd agree with the real ones."""
    u1 = torch.nn.functional.normalize(torch.randn(3, 5, 8), dim=-1)
    u2 = torch.nn.functional.normalize(torch.randn(2, 6, 8), dim=-1)
    mask1, mask2 = _masks(3, 2, 5, 6, "cpu")
    inv = 1.0 / mask1.sum(1).float()
    fwd_args = (u1, u2, mask1, mask2, inv, reduce, 0.5, backend)
    torch.library.opcheck(torch.ops.hashkern.patch_similarity_fwd, fwd_args,
                          test_utils=("test_schema", "test_faketensor"))
    s, aux_a, aux_b = torch.ops.hashkern.patch_similarity_fwd(*fwd_args)
    bwd_args = (torch.randn_like(s), u1, u2, mask1, mask2, inv, aux_a, aux_b, reduce, 0.5, backend)
    torch.library.opcheck(torch.ops.hashkern.patch_similarity_bwd, bwd_args,
                          test_utils=("test_schema", "test_faketensor"))
