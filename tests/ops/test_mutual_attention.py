"""mutual_attention (SDPA) against the explicit-softmax float64 transcription of WCH."""
import pytest
import torch

from hashkern.ops.mutual_attention import mutual_attention, mutual_attention_reference


def _loops(x1, x2, temperature):
    """x1'[n, j] = sum_i softmax_i(cos(x2[n, j], x1[n, i]) / T) x1[n, i], written per query."""
    cos = torch.nn.functional.cosine_similarity
    out1 = torch.stack([torch.stack([torch.softmax(cos(x2[n, j][None], x1[n], dim=1) / temperature, 0) @ x1[n]
                                     for j in range(x2.shape[1])]) for n in range(x1.shape[0])])
    out2 = torch.stack([torch.stack([torch.softmax(cos(x1[n, i][None], x2[n], dim=1) / temperature, 0) @ x2[n]
                                     for i in range(x1.shape[1])]) for n in range(x1.shape[0])])
    return out1, out2


def test_reference_matches_definition():
    x1, x2 = torch.randn(2, 4, 5, dtype=torch.float64), torch.randn(2, 3, 5, dtype=torch.float64)
    for got, expect in zip(mutual_attention_reference(x1, x2, 0.7), _loops(x1, x2, 0.7)):
        torch.testing.assert_close(got, expect)


@pytest.mark.parametrize("shape", [(3, 7, 7, 33), (1, 1, 1, 1), (2, 5, 3, 16)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("temperature", [1.0, 0.25])
def test_matches_reference(device, shape, temperature):
    b, P, Q, D = shape
    x1 = torch.randn(b, P, D, dtype=torch.float64, device=device, requires_grad=True)
    x2 = torch.randn(b, Q, D, dtype=torch.float64, device=device, requires_grad=True)
    got = mutual_attention(x1, x2, temperature)
    ref = mutual_attention_reference(x1, x2, temperature)
    assert got[0].shape == (b, Q, D) and got[1].shape == (b, P, D)
    grads = [torch.randn_like(r) for r in ref]
    g_got = torch.autograd.grad(got, (x1, x2), grads)
    g_ref = torch.autograd.grad(ref, (x1, x2), grads)
    for a, r in zip((*got, *g_got), (*ref, *g_ref)):
        torch.testing.assert_close(a, r, atol=1e-10, rtol=1e-10)


def test_gradcheck():
    x1 = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: mutual_attention(a, b, 0.5), (x1, x2))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-3), (torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_cuda_low_precision(dtype, tol):
    x1 = torch.randn(4, 196, 64, device="cuda")
    x2 = torch.randn(4, 196, 64, device="cuda")
    got = mutual_attention(x1.to(dtype), x2.to(dtype))
    ref = mutual_attention_reference(x1.double(), x2.double())
    for a, r in zip(got, ref):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double(), r, atol=tol, rtol=tol)


@pytest.mark.parametrize("scale,dtype", [(1e20, torch.float32), (3e37, torch.float32), (1e-40, torch.float32),
                                         (1e150, torch.float64)])
def test_huge_and_subnormal_tokens_match_float64(scale, dtype):
    """Regression: F.normalize's sum of squares overflowed (1e20 -> cosines of 0) or underflowed (1e-40)."""
    x1, x2 = torch.randn(2, 4, 6, dtype=torch.float64), torch.randn(2, 3, 6, dtype=torch.float64)
    x1, x2 = (x1 * scale).to(dtype), (x2 * scale).to(dtype)
    # The outputs are linear in the tokens and the cosines do not depend on their scale.
    for got, ref in zip(mutual_attention(x1, x2), _loops(x1.double() / scale, x2.double() / scale, 1.0)):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double() / scale, ref, atol=1e-4 if scale < 1 else 1e-5, rtol=0)


@pytest.mark.parametrize("temperature", [1e-300, 1e-30, 1e-5])
def test_tiny_temperatures_match_float64(temperature):
    """Regression: 1/T overflowed float32 (NaN) or magnified its rounding; small T computes in float64."""
    x1, x2 = torch.randn(2, 4, 6), torch.randn(2, 3, 6)
    for got, ref in zip(mutual_attention(x1, x2, temperature), _loops(x1.double(), x2.double(), temperature)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), ref, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="temperature must be >="):
        mutual_attention(x1, x2, 1e-320)  # 1/T is not a finite float64


def test_bad_input():
    x1, x2 = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    with pytest.raises(ValueError, match="same batch size b and feature size D"):
        mutual_attention(x1, torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="same batch size b and feature size D"):
        mutual_attention(x1, torch.randn(3, 4, 6))
    for bad in (0.0, -2.0):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            mutual_attention(x1, x2, bad)
    with pytest.raises(TypeError, match="same dtype"):
        mutual_attention(x1, x2.double())
    with pytest.raises(ValueError, match="x2 must be 3-D"):
        mutual_attention(x1, x2[0])
    with pytest.raises(TypeError, match="x1 must be a torch.Tensor"):
        mutual_attention(x1.tolist(), x2)
    with pytest.raises(ValueError, match="non-empty"):
        mutual_attention(torch.randn(2, 0, 6), x2)


def test_compiles_without_graph_break():
    x1 = torch.randn(2, 5, 8, requires_grad=True)
    x2 = torch.randn(2, 5, 8, requires_grad=True)
    compiled = torch.compile(mutual_attention, fullgraph=True, backend="aot_eager")
    got = compiled(x1, x2, 0.5)
    for a, r in zip(got, mutual_attention_reference(x1, x2, 0.5)):
        torch.testing.assert_close(a, r)
