"""SortedNCE against a float64 transcription of the DESIGN.md formula."""
import pytest
import torch

from hashkern.codes import sign_ste
from hashkern.losses.sorted_nce import SortedNCELoss, code_similarity, sorted_nce_loss
from hashkern.ops.softsort.reference import sorted_cosine_reference


def _reference(b1, b2, z1, z2, m, temp, sort_temp, reduction):
    """Naive: S from codes, P and E materialised, the loss written exactly as in DESIGN.md."""
    bits = b1.shape[1]
    s = (b1 @ b2.T + bits) / (2 * bits)
    c = sorted_cosine_reference(s, z1, z2, sort_temp)
    ex = torch.exp(c / temp)
    negatives = ex[:, m:].sum(1, keepdim=True)
    per_anchor = -torch.log(ex[:, :m] / (ex[:, :m] + negatives)).sum(1) / m
    return {"mean": per_anchor.mean(), "sum": per_anchor.sum(), "none": per_anchor}[reduction]


def _inputs(n, bits, dz, device, dtype=torch.float64):
    pre = torch.randn(n, bits, dtype=dtype, device=device)
    return (torch.tanh(pre).requires_grad_(), torch.tanh(pre + 0.3 * torch.randn_like(pre)).requires_grad_(),
            torch.randn(n, dz, dtype=dtype, device=device, requires_grad=True),
            torch.randn(n, dz, dtype=dtype, device=device, requires_grad=True))


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("n,m", [(2, 1), (17, 3), (33, 32)])
def test_matches_reference_with_gradients(device, backend, reduction, n, m):
    inputs = _inputs(n, 16, 8, device)
    loss_fn = SortedNCELoss(m, temperature=0.3, sort_temperature=0.05, reduction=reduction, backend=backend)
    loss = loss_fn(*inputs)
    ref = _reference(*inputs, m, 0.3, 0.05, reduction)
    assert loss.shape == ref.shape == ((n,) if reduction == "none" else ())
    torch.testing.assert_close(loss, ref, rtol=1e-9, atol=1e-9)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(loss, inputs, g)
    ref_grads = torch.autograd.grad(ref, inputs, g)
    for name, a, r in zip(("b1", "b2", "z1", "z2"), grads, ref_grads):
        torch.testing.assert_close(a, r, rtol=1e-7, atol=1e-9, msg=f"gradient of {name}")


def test_float32_straight_through_codes_get_gradient_through_the_sorter(device):
    n, bits = 24, 8
    h1 = torch.randn(n, bits, device=device, requires_grad=True)
    h2 = torch.randn(n, bits, device=device, requires_grad=True)
    z1, z2 = torch.randn(n, 6, device=device), torch.randn(n, 6, device=device)
    b1, b2 = sign_ste(h1), sign_ste(h2)
    loss = SortedNCELoss(4, sort_temperature=0.05, backend="torch")(b1, b2, z1, z2)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    # only the sorter connects the codes to the loss: a non-zero gradient proves it flows through
    assert h1.grad.abs().sum() > 0 and h2.grad.abs().sum() > 0
    ref = _reference(b1.detach().double(), b2.detach().double(), z1.double(), z2.double(), 4, 0.2, 0.05, "mean")
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-5)


def test_precomputed_similarity_equals_codes_path():
    b1, b2, z1, z2 = _inputs(9, 12, 5, "cpu")
    s = code_similarity(b1, b2)
    by_codes = sorted_nce_loss(b1, b2, z1, z2, num_positives=2, reduction="none", backend="torch")
    by_s = SortedNCELoss(2, sort_temperature=0.32 / 12, reduction="none", backend="torch")(z1=z1, z2=z2, s=s)
    torch.testing.assert_close(by_codes, by_s, rtol=0, atol=0)
    hamming = (b1.sign()[:, None, :] != b2.sign()[None, :, :]).sum(-1)
    torch.testing.assert_close(code_similarity(b1.sign(), b2.sign()), 1 - hamming.double() / 12)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_gradcheck(backend):
    b1, b2, z1, z2 = _inputs(5, 4, 3, "cpu")
    fn = lambda *x: sorted_nce_loss(*x, num_positives=2, sort_temperature=0.5, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (b1, b2, z1, z2), fast_mode=True)


def test_bad_inputs():
    b1, b2, z1, z2 = _inputs(6, 4, 3, "cpu")
    with pytest.raises(ValueError, match="num_positives must be <= 5"):
        sorted_nce_loss(b1, b2, z1, z2, num_positives=6)
    with pytest.raises(ValueError, match="num_positives must be >= 1"):
        SortedNCELoss(0)
    with pytest.raises(TypeError, match="num_positives must be an int"):
        SortedNCELoss(2.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        SortedNCELoss(2, reduction="avg")
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        SortedNCELoss(2, temperature=0.0)
    with pytest.raises(ValueError, match="sort_temperature must be a finite number > 0"):
        sorted_nce_loss(b1, b2, z1, z2, num_positives=2, sort_temperature=-1.0)
    with pytest.raises(ValueError, match="sort_temperature is required with a precomputed s"):
        sorted_nce_loss(z1=z1, z2=z2, s=code_similarity(b1, b2), num_positives=2)
    with pytest.raises(ValueError, match="not both"):
        sorted_nce_loss(b1, b2, z1, z2, s=code_similarity(b1, b2), num_positives=2)
    with pytest.raises(ValueError, match="either the codes b1 and b2 or a precomputed similarity s"):
        sorted_nce_loss(b1, None, z1, z2, num_positives=2)
    with pytest.raises(ValueError, match="z1 and z2"):
        SortedNCELoss(2)(b1, b2, z1)
    with pytest.raises(ValueError, match="b1 has 6 rows but z1 has 5"):
        sorted_nce_loss(b1, b2, z1[:5], z2[:5], num_positives=2)
    with pytest.raises(ValueError, match="b1 and b2 must be"):
        sorted_nce_loss(b1, b2[:, :3], z1, z2, num_positives=2)
    with pytest.raises(ValueError, match=r"s must have shape \[n, n\]"):
        sorted_nce_loss(z1=z1, z2=z2, s=torch.randn(5, 5, dtype=torch.float64), num_positives=2, sort_temperature=0.1)
    with pytest.raises(ValueError, match="at least 2"):
        sorted_nce_loss(b1[:1], b2[:1], z1[:1], z2[:1], num_positives=1)
    with pytest.raises(ValueError, match="z2 must have the shape of z1"):
        sorted_nce_loss(b1, b2, z1, z2[:, :2], num_positives=2)
    for backend in ("bogus", None):  # regression: the module took any backend until its first forward
        with pytest.raises(ValueError, match="backend must be one of"):
            SortedNCELoss(2, backend=backend)


def test_default_sort_temperature_follows_the_code_length():
    """None: 0.32 / K, a third of the 1/K step between K-bit code similarities."""
    b1, b2 = (torch.randint(0, 2, (7, 12)).double() * 2 - 1 for _ in range(2))
    z1, z2 = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    default = SortedNCELoss(3, backend="torch")(b1, b2, z1, z2)
    explicit = SortedNCELoss(3, sort_temperature=0.32 / 12, backend="torch")(b1, b2, z1, z2)
    assert torch.equal(default, explicit)
