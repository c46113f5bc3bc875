"""maxsim / maxsim_paired against a float64 transcription of ColBERT's score, on every backend:
padded, masked and packed documents, ties, D not a multiple of 16, Lq = 1, one document."""
import pytest
import torch

from hashkern.ops.maxsim import maxsim, maxsim_paired, maxsim_reference
from hashkern.ops.patchsim import patch_similarity
from tests.conftest import poison

BACKENDS = ["cpu", "torch", "triton"]
# (nq, Lq, nd, Ld, D): odd sizes, Lq = 1, one document, D = 33 and 7 (not multiples of 16), more than
# one 2 x 12 register tile and one 32-row query panel
SHAPES = [(3, 5, 4, 7, 33), (1, 1, 1, 1, 1), (2, 1, 3, 13, 7), (1, 4, 1, 30, 16), (2, 19, 3, 27, 33)]
TOL = {torch.float64: 1e-10, torch.float32: 2e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}


def colbert_score(Q, D_padded, D_mask):
    """ColBERT's scorer (stanford-futuredata/ColBERT, colbert/modeling/colbert.py: colbert_score and
    colbert_score_reduce), float64: Q [1, Lq, dim] against D_padded [B, Ld, dim] with D_mask [B, Ld] -> [B]."""
    scores_padded = D_padded @ Q.to(dtype=D_padded.dtype).permute(0, 2, 1)  # [B, Ld, Lq]
    D_padding = ~D_mask.view(scores_padded.size(0), scores_padded.size(1)).bool()
    scores_padded = scores_padded.clone()
    scores_padded[D_padding] = -9999
    scores = scores_padded.max(1).values  # [B, Lq]
    return scores.sum(-1)


def colbert_all_pairs(q, d, q_mask=None, d_mask=None):
    """[nq, nd] by ColBERT's scorer, one query at a time; padded query tokens dropped (ColBERT's queries
    keep their [MASK] tokens, so it has no query mask)."""
    d_mask = torch.ones(d.shape[:2], dtype=torch.bool) if d_mask is None else d_mask
    rows = []
    for n in range(q.shape[0]):
        Q = q[n:n + 1] if q_mask is None else q[n:n + 1, q_mask[n]]
        rows.append(colbert_score(Q, d, d_mask))
    return torch.stack(rows)


def packed(d, d_mask):
    """Padded [nd, Ld, D] + mask (real tokens first) -> packed tokens [T, D], offsets [nd + 1]."""
    lengths = d_mask.sum(1)
    offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    return d[d_mask], offsets


def prefix_mask(nd, Ld):
    lengths = torch.randint(1, Ld + 1, (nd,))
    return torch.arange(Ld)[None] < lengths[:, None]


def random_mask(rows, length):
    mask = torch.rand(rows, length) > 0.4
    mask[torch.arange(rows), torch.randint(length, (rows,))] = True
    return mask


def _grads(out, inputs, grad):
    return torch.autograd.grad(out, inputs, grad)


def check_against_colbert(q, d, backend, tol, q_mask=None, d_mask=None, packed_docs=False):
    q64 = q.detach().double().requires_grad_()
    d64 = d.detach().double().requires_grad_()
    ref = colbert_all_pairs(q64, d64, q_mask, d_mask)
    grad = torch.randn_like(ref)
    ref_dq, ref_dd = _grads(ref, (q64, d64), grad)
    a = q.detach().clone().requires_grad_()
    if packed_docs:
        tokens, offsets = packed(d.detach(), d_mask)
        t = tokens.clone().requires_grad_()
        out = maxsim(a, t, q_mask, offsets=offsets, backend=backend)
        dq, dt = _grads(out, (a, t), grad.to(out.dtype))
        dd = torch.zeros_like(d)
        dd[d_mask] = dt
    else:
        b = d.detach().clone().requires_grad_()
        out = maxsim(a, b, q_mask, d_mask, backend=backend)
        dq, dd = _grads(out, (a, b), grad.to(out.dtype))
    assert out.shape == ref.shape and out.dtype == (torch.float64 if q.dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)
    torch.testing.assert_close(dq.double(), ref_dq, atol=tol, rtol=tol)
    torch.testing.assert_close(dd.double(), ref_dd, atol=tol, rtol=tol)


@pytest.fixture
def poison_allocations(monkeypatch):
    """Every buffer allocated with torch.empty / empty_like during the call starts as NaN / -1."""
    empty, empty_like = torch.empty, torch.empty_like
    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poison(empty_like(*a, **k)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_padded_matches_colbert(backend, shape, poison_allocations):
    nq, Lq, nd, Ld, D = shape
    q, d = torch.randn(nq, Lq, D, dtype=torch.float64), torch.randn(nd, Ld, D, dtype=torch.float64)
    check_against_colbert(q, d, backend, TOL[torch.float64])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_masked_matches_colbert(backend, shape, poison_allocations):
    nq, Lq, nd, Ld, D = shape
    q, d = torch.randn(nq, Lq, D, dtype=torch.float64), torch.randn(nd, Ld, D, dtype=torch.float64)
    check_against_colbert(q, d, backend, TOL[torch.float64], q_mask=random_mask(nq, Lq), d_mask=random_mask(nd, Ld))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_packed_matches_colbert(backend, shape, poison_allocations):
    nq, Lq, nd, Ld, D = shape
    q, d = torch.randn(nq, Lq, D, dtype=torch.float64), torch.randn(nd, Ld, D, dtype=torch.float64)
    check_against_colbert(q, d, backend, TOL[torch.float64], q_mask=random_mask(nq, Lq),
                          d_mask=prefix_mask(nd, Ld), packed_docs=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_send_the_gradient_to_the_first_token(backend):
    q = torch.randn(2, 3, 20, dtype=torch.float64)
    d = torch.randn(3, 16, 20, dtype=torch.float64)
    d[:, 9] = d[:, 2]  # exact ties inside one register tile
    d[:, 15] = d[:, 2]  # and across tiles (past the 12-token tile)
    d[1, 5:] = d[1, 4]  # a run of equal tokens
    check_against_colbert(q, d, backend, TOL[torch.float64])
    mask = torch.ones(3, 16, dtype=torch.bool)
    mask[:, 2] = False  # the first of the tied tokens is padding: the gradient goes to the next one
    check_against_colbert(q, d, backend, TOL[torch.float64], d_mask=mask)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("packed_docs", [False, True])
def test_paired_matches_reference(backend, reduce, packed_docs, poison_allocations):
    nq, c, Lq, Ld, D = 3, 2, 5, 14, 33
    q = torch.randn(nq, Lq, D, dtype=torch.float64, requires_grad=True)
    d = torch.randn(nq, c, Ld, D, dtype=torch.float64)
    q_mask, d_mask = random_mask(nq, Lq), prefix_mask(nq * c, Ld).view(nq, c, Ld)
    # oracle: each query against its own candidates with the all-pairs ColBERT scorer
    ref = torch.stack([colbert_all_pairs(q[n:n + 1], d[n], q_mask[n:n + 1], d_mask[n])[0] for n in range(nq)])
    if reduce == "mean":
        ref = ref / q_mask.sum(1, keepdim=True)
    grad = torch.randn_like(ref)
    ref_dq = _grads(ref, (q,), grad)[0]
    if packed_docs:
        tokens, offsets = packed(d.reshape(nq * c, Ld, D), d_mask.reshape(nq * c, Ld))
        out = maxsim_paired(q, tokens, q_mask, offsets=offsets, reduce=reduce, backend=backend)
    else:
        out = maxsim_paired(q, d, q_mask, d_mask, reduce=reduce, backend=backend)
    torch.testing.assert_close(out, ref.detach(), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(_grads(out, (q,), grad)[0], ref_dq, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("packed_docs", [False, True])
def test_gradcheck(backend, packed_docs):
    q = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    if packed_docs:
        d = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
        offsets = torch.tensor([0, 4, 5, 9])
        fn = lambda a, b: maxsim(a, b, offsets=offsets, backend=backend)  # noqa: E731
    else:
        d = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
        mask = torch.tensor([[True, True, False, True], [True] * 4, [False, True, False, False]])
        fn = lambda a, b: maxsim(a, b, d_mask=mask, reduce="mean", normalize=True, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, d), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_accumulates_in_float32(backend, dtype):
    """Half inputs: the products of the rounded values, summed in fp32 (the scores of the float64 oracle on
    the rounded values, up to fp32 rounding)."""
    q = torch.randn(3, 6, 40).to(dtype)
    d = torch.randn(4, 21, 40).to(dtype)
    out = maxsim(q, d, backend=backend)
    assert out.dtype == torch.float32
    ref = maxsim_reference(q.double(), d.double())
    torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=1e-5)
    a, b = q.clone().requires_grad_(), d.clone().requires_grad_()
    da, db = torch.autograd.grad(maxsim(a, b, backend=backend).sum(), (a, b))
    assert da.dtype == dtype and db.dtype == dtype
    r1, r2 = q.double().requires_grad_(), d.double().requires_grad_()
    ra, rb = torch.autograd.grad(maxsim_reference(r1, r2).sum(), (r1, r2))
    torch.testing.assert_close(da.double(), ra, atol=TOL[dtype], rtol=TOL[dtype])
    torch.testing.assert_close(db.double(), rb, atol=TOL[dtype], rtol=TOL[dtype])


def test_every_cpu_instruction_set_gives_identical_results():
    """portable, AVX2 and AVX-512 kernels (those this CPU has): bitwise-equal scores and gradients."""
    available = torch.ops.hashkern._cpu_kernels("")[1:]
    q = torch.randn(3, 37, 45)
    d = torch.randn(70, 45)
    offsets = torch.tensor([0, 1, 14, 40, 41, 70])
    results = {}
    try:
        for isa in available:
            torch.ops.hashkern._cpu_kernels(isa)
            a, b = q.clone().requires_grad_(), d.clone().requires_grad_()
            out = maxsim(a, b, offsets=offsets, backend="cpu")
            results[torch.ops.hashkern._maxsim_isa()] = (out, *torch.autograd.grad(out.square().sum(), (a, b)))
    finally:
        torch.ops.hashkern._cpu_kernels("auto")
    # each Hamming set selects the MaxSim kernels of its vector width: "avx2-rows" and "avx512-rows" (without the
    # bit-sliced search) run the AVX2 and AVX-512 ones, the 128-bit sets the portable ones
    same = {"avx2-rows": "avx2", "avx512-rows": "avx512", "sse4": "portable", "sse4-rows": "portable"}
    assert sorted(results) == sorted({same.get(isa, isa) for isa in available})
    first = next(iter(results.values()))
    for name, got in results.items():
        for x, y in zip(got, first):
            assert torch.equal(x, y), name


@pytest.mark.parametrize("backend", BACKENDS)
def test_inference_without_argmax_gives_the_same_scores(backend):
    q, d = torch.randn(2, 8, 24), torch.randn(5, 30, 24)
    with torch.no_grad():
        plain = maxsim(q, d, backend=backend)
    a = q.clone().requires_grad_()
    assert torch.equal(maxsim(a, d, backend=backend).detach(), plain)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("masked", [False, True])
def test_mean_normalized_is_patch_similarity(backend, masked):
    x1, x2 = torch.randn(3, 7, 20, dtype=torch.float64), torch.randn(4, 9, 20, dtype=torch.float64)
    m1, m2 = (random_mask(3, 7), random_mask(4, 9)) if masked else (None, None)
    ps_backend = "torch" if backend == "cpu" else backend
    expect = patch_similarity(x1, x2, mask1=m1, mask2=m2, backend=ps_backend)
    got = maxsim(x1, x2, m1, m2, reduce="mean", normalize=True, backend=backend)
    torch.testing.assert_close(got, expect, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiles_without_graph_break(backend):
    q = torch.randn(2, 3, 8, requires_grad=True)
    d = torch.randn(7, 8, requires_grad=True)
    c = torch.randn(2, 3, 4, 8, requires_grad=True)
    offsets = torch.tensor([0, 2, 7])

    def fn(a, b, e):
        packed_all_pairs = maxsim(a, b, offsets=offsets, backend=backend)
        return packed_all_pairs.square().sum() + maxsim_paired(a, e, reduce="mean", normalize=True,
                                                               backend=backend).sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    out = compiled(q, d, c)
    out.backward()
    refs = [x.detach().clone().requires_grad_() for x in (q, d, c)]
    fn(*refs).backward()
    torch.testing.assert_close(out, fn(q, d, c))
    for x, r in zip((q, d, c), refs):
        torch.testing.assert_close(x.grad, r.grad)


def test_patch_similarity_auto_runs_maxsims_kernel(monkeypatch):
    """patch_similarity(reduce="maxmean", backend="auto") is maxsim(reduce="mean", normalize=True): on the CPU
    it runs MaxSim's C++ kernel, forward and backward, with the torch backend's results."""
    from hashkern.ops.maxsim import cpu_launch
    calls = []
    for name in ("maxsim_cpu_fwd", "maxsim_cpu_bwd"):
        real = getattr(cpu_launch, name)
        monkeypatch.setattr(cpu_launch, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    x1 = torch.randn(3, 7, 20, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(4, 9, 20, dtype=torch.float64, requires_grad=True)
    m1, m2 = random_mask(3, 7), random_mask(4, 9)
    got = patch_similarity(x1, x2, mask1=m1, mask2=m2)
    grads = torch.autograd.grad(got.square().sum(), (x1, x2))
    assert calls == ["maxsim_cpu_fwd", "maxsim_cpu_bwd"]
    expect = patch_similarity(x1, x2, mask1=m1, mask2=m2, backend="torch")
    torch.testing.assert_close(got, expect, atol=1e-12, rtol=1e-12)
    for g, e in zip(grads, torch.autograd.grad(expect.square().sum(), (x1, x2))):
        torch.testing.assert_close(g, e, atol=1e-12, rtol=1e-12)
