"""WCHLoss / BitBalanceLoss against a direct PyTorch transcription of the WCH formulas."""
import math

import pytest
import torch

from hashkern.losses.wch import BitBalanceLoss, WCHLoss, bit_balance_loss, wch_loss, wch_weights
from hashkern.ops.mutual_attention import mutual_attention
from hashkern.ops.patchsim import patch_similarity


def _official_weights_loops(s, weight_temperature, weight_norm="column"):
    """The official WCH weights, written out: P = softmax over m of s[n, m] / T_w (row n), then
    W[n, m] = P[n, m] / P[m, m] (the official broadcasting divides column m by the diagonal);
    the row option divides by P[n, n] instead. Plain Python floats, float64."""
    b = s.shape[0]
    P = []
    for n in range(b):
        e = [math.exp(float(s[n, m]) / weight_temperature) for m in range(b)]
        P.append([v / sum(e) for v in e])
    if weight_norm == "column":
        return [[P[n][m] / P[m][m] for m in range(b)] for n in range(b)]
    return [[P[n][m] / P[n][n] for m in range(b)] for n in range(b)]


def _wch_loops(h1, h2, s, temperature, weight_temperature, weight_norm="column"):
    """L = -1/b sum_n sum_m W[n, m] log softmax_m(h1 h2ᵀ / K / T)[n, m]."""
    b, bits = h1.shape
    W = _official_weights_loops(s, weight_temperature, weight_norm)
    total = 0.0
    for n in range(b):
        logits = [float(h1[n] @ h2[m]) / bits / temperature for m in range(b)]
        log_norm = math.log(sum(math.exp(v) for v in logits))
        for m in range(b):
            total -= W[n][m] * (logits[m] - log_norm)
    return total / b


def _wch_torch(h1, h2, s, temperature, weight_temperature, weight_norm="column"):
    """The same formula with torch ops (autograd gives the reference gradients; W is not detached)."""
    P = torch.softmax(s / weight_temperature, dim=1)
    weights = P / (P.diagonal()[None, :] if weight_norm == "column" else P.diagonal()[:, None])
    logits = h1 @ h2.t() / h1.shape[1] / temperature
    return -(weights * torch.log_softmax(logits, dim=1)).sum(1).mean()


@pytest.mark.parametrize("weight_norm", ["column", "row"])
@pytest.mark.parametrize("b,bits", [(5, 16), (1, 1), (7, 33)])
@pytest.mark.parametrize("temperature,weight_temperature", [(0.3, 0.2), (1.0, 0.05)])
def test_wch_matches_formula(device, b, bits, temperature, weight_temperature, weight_norm):
    h1 = torch.randn(b, bits, dtype=torch.float64, device=device).sign()
    h2 = torch.randn(b, bits, dtype=torch.float64, device=device).tanh()
    s = torch.rand(b, b, dtype=torch.float64, device=device) * 2 - 1
    loss = WCHLoss(temperature, weight_temperature, weight_norm=weight_norm)(h1, h2, s)
    assert loss.dim() == 0
    want = _wch_loops(h1.cpu(), h2.cpu(), s.cpu(), temperature, weight_temperature, weight_norm)
    torch.testing.assert_close(loss.item(), want, atol=1e-10, rtol=1e-10)
    # gradients into the codes and into the similarities (the official weights are not detached)
    args = [t.clone().requires_grad_() for t in (h1, h2, s)]
    refs = [t.clone().requires_grad_() for t in (h1, h2, s)]
    got = torch.autograd.grad(wch_loss(*args, temperature, weight_temperature, weight_norm=weight_norm), args)
    want = torch.autograd.grad(_wch_torch(*refs, temperature, weight_temperature, weight_norm), refs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-12, rtol=1e-10)


def test_default_is_the_official_configuration():
    loss = WCHLoss()
    assert (loss.temperature, loss.weight_temperature, loss.weight_norm) == (0.3, 0.2, "column")
    assert not loss.detach_weights and not loss.clamp_weights


def test_detach_weights_stops_gradient_into_s():
    h1, h2 = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    s = torch.rand(4, 4, dtype=torch.float64, requires_grad=True)
    WCHLoss(detach_weights=True)(h1.requires_grad_(), h2, s).backward()
    assert s.grad is None and h1.grad is not None
    WCHLoss()(h1, h2, s).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_weights_column_and_row():
    s = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.6, 0.3], [0.4, 0.0, 0.8]], dtype=torch.float64)
    for norm in ("column", "row"):
        want = torch.tensor(_official_weights_loops(s, 0.2, norm), dtype=torch.float64)
        torch.testing.assert_close(wch_weights(s, 0.2, weight_norm=norm), want, atol=1e-14, rtol=1e-12)
    # The row form is exp((s[n, m] - s[n, n]) / T_w); the column form is not (unless rows share a normaliser).
    torch.testing.assert_close(wch_weights(s, 0.2, weight_norm="row"), torch.exp((s - s.diagonal()[:, None]) / 0.2))
    assert torch.equal(wch_weights(s, 0.2).diagonal(), torch.ones(3, dtype=torch.float64))


def test_clamped_weights_never_exceed_the_positive():
    s = torch.tensor([[0.5, 0.9], [0.2, 0.6]], dtype=torch.float64)  # s[0, 1] > s[0, 0]
    torch.testing.assert_close(wch_weights(s, 0.2, weight_norm="row")[0, 1].item(), math.exp(0.4 / 0.2))
    expect = torch.tensor([[1.0, 1.0], [math.exp(-0.4 / 0.2), 1.0]], dtype=torch.float64)
    torch.testing.assert_close(wch_weights(s, 0.2, clamp=True, weight_norm="row"), expect)
    h1, h2 = torch.randn(2, 8, dtype=torch.float64).sign(), torch.randn(2, 8, dtype=torch.float64).sign()
    want = -(expect * torch.log_softmax(h1 @ h2.T / (8 * 0.3), dim=1)).sum(1).mean()
    torch.testing.assert_close(WCHLoss(clamp_weights=True, weight_norm="row")(h1, h2, s), want)
    column = torch.tensor(_official_weights_loops(s, 0.2), dtype=torch.float64)
    torch.testing.assert_close(wch_weights(s, 0.2, clamp=True), column.clamp(max=1))
    with pytest.raises(TypeError, match="clamp_weights must be a bool"):
        WCHLoss(clamp_weights=1)


@pytest.mark.parametrize("b,bits", [(6, 16), (1, 1), (3, 7)])
def test_bit_balance_matches_formula(device, b, bits):
    h = torch.randn(b, bits, dtype=torch.float64, device=device, requires_grad=True)
    v = h.detach().cpu()
    expect = sum((sum(float(v[n, k]) for n in range(b)) / b) ** 2 for k in range(bits)) / bits
    expect -= sum(float(v[n, k]) ** 2 for n in range(b) for k in range(bits)) / (b * bits)
    loss = BitBalanceLoss()(h)
    torch.testing.assert_close(loss.item(), expect, atol=1e-12, rtol=1e-10)
    (grad,) = torch.autograd.grad(loss, h)
    # d/dh[n,k] = 2 mean_k / (b K) - 2 h[n,k] / (b K)
    torch.testing.assert_close(grad, 2 * (h.mean(0, keepdim=True) - h).detach() / (b * bits))


def test_gradcheck():
    h1 = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    h2 = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    s = torch.rand(4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: wch_loss(a, b, c), (h1, h2, s))
    assert torch.autograd.gradcheck(bit_balance_loss, (h1,))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_wch_pipeline_end_to_end(backend):
    """Mutual attention -> patch similarity -> WCHLoss + BitBalanceLoss, backward into the tokens."""
    x1 = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    a1, a2 = mutual_attention(x1, x2)
    s = patch_similarity(a1, a2, backend=backend)
    h1 = torch.tanh(x1.mean(1) @ torch.randn(16, 8, dtype=torch.float64))
    h2 = torch.tanh(x2.mean(1) @ torch.randn(16, 8, dtype=torch.float64))
    loss = WCHLoss()(h1, h2, s) + BitBalanceLoss()(h1)
    loss.backward()
    assert torch.isfinite(x1.grad).all() and x1.grad.abs().sum() > 0 and torch.isfinite(x2.grad).all()


def test_low_precision_inputs_compute_in_float32():
    h = torch.randn(4, 8).sign().bfloat16()
    s = torch.rand(4, 4)
    loss = wch_loss(h, h, s)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, _wch_torch(h.float(), h.float(), s, 0.3, 0.2))
    assert bit_balance_loss(h).dtype == torch.float32


@pytest.mark.parametrize("weight_norm", ["column", "row"])
@pytest.mark.parametrize("weight_temperature", [1e-5, 1e-30, 1e-300])
def test_tiny_weight_temperature_is_finite_and_correct(weight_norm, weight_temperature):
    """The weights are formed from differences of s before the division by T_w: no s / T_w overflow."""
    torch.manual_seed(0)
    s = torch.rand(5, 5) * 0.5
    s.fill_diagonal_(0.9)  # positives most similar: finite weights however small T_w
    h1, h2 = torch.randn(5, 8).sign().half(), torch.randn(5, 8).sign().half()
    s_req = s.clone().requires_grad_()
    loss = wch_loss(h1, h2, s_req, weight_temperature=weight_temperature, weight_norm=weight_norm)
    (grad,) = torch.autograd.grad(loss, s_req)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    # float64 reference: W -> one-hot on the diagonal (column/row) as T_w -> 0
    d = s.double() - s.double().diagonal()[:, None]
    want_w = torch.exp(d / weight_temperature) if weight_norm == "row" else torch.eye(5, dtype=torch.float64)
    want = -(want_w * torch.log_softmax(h1.double() @ h2.double().T / (8 * 0.3), 1)).sum(1).mean()
    torch.testing.assert_close(loss.double(), want, rtol=1e-6, atol=1e-6)


# The gradient into h1 is ~1/T: it needs an h1 dtype that holds it (float32 at 1e-5, float64 at 1e-300).
@pytest.mark.parametrize("temperature,dtype", [(1e-5, torch.float32), (1e-300, torch.float64)])
def test_tiny_code_temperature_is_finite_and_correct(temperature, dtype):
    torch.manual_seed(4)
    h1 = torch.randn(4, 8, dtype=dtype).sign().requires_grad_()
    h2, s = torch.randn(4, 8).sign().half(), torch.rand(4, 4)
    loss = wch_loss(h1, h2, s, temperature=temperature)
    (grad,) = torch.autograd.grad(loss, h1)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    want = _wch_torch(h1.detach().double(), h2.double(), s.double(), temperature, 0.2)
    torch.testing.assert_close(loss.double(), want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype,scale", [(torch.float32, 1e18), (torch.float64, 1e38), (torch.float64, 1e150)])
def test_huge_finite_codes_give_the_float64_loss(dtype, scale):
    """No intermediate overflow: the loss is computed in float64 and only the result is rounded."""
    torch.manual_seed(3)
    h1, h2, s = torch.randn(4, 8, dtype=dtype) * scale, torch.randn(4, 8, dtype=dtype) * scale, torch.rand(4, 4)
    loss = wch_loss(h1, h2, s)
    assert loss.dtype == dtype and torch.isfinite(loss)
    want = _wch_torch(h1.double(), h2.double(), s.double(), 0.3, 0.2)
    torch.testing.assert_close(loss.double(), want, rtol=1e-6, atol=0)
    h64 = h2.double()
    balance = bit_balance_loss(h2)
    assert torch.isfinite(balance)
    torch.testing.assert_close(balance.double(), h64.mean(0).square().mean() - h64.square().mean(), rtol=1e-6, atol=0)


def test_bad_input():
    h, s = torch.randn(4, 8), torch.rand(4, 4)
    with pytest.raises(ValueError, match="h1 and h2 must have the same shape"):
        wch_loss(h, torch.randn(4, 9), s)
    with pytest.raises(ValueError, match=r"s must have shape \[b, b\]"):
        wch_loss(h, h, torch.rand(4, 3))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        wch_loss(h, h, s, temperature=0.0)
    with pytest.raises(ValueError, match="weight_temperature must be a finite number > 0"):
        WCHLoss(weight_temperature=-1.0)
    with pytest.raises(TypeError, match="detach_weights must be a bool"):
        WCHLoss(detach_weights="yes")
    with pytest.raises(ValueError, match="h1 must be 2-D"):
        wch_loss(h[0], h, s)
    with pytest.raises(TypeError, match="s must have dtype"):
        wch_loss(h, h, s.long())
    with pytest.raises(ValueError, match="weight_norm must be one of"):
        WCHLoss(weight_norm="diagonal")
    with pytest.raises(ValueError, match="h must be 2-D"):
        bit_balance_loss(h[0])
    with pytest.raises(ValueError, match="non-empty"):
        bit_balance_loss(torch.randn(0, 8))


def test_wch_weights_validates_its_arguments():
    s = torch.rand(3, 3)
    with pytest.raises(ValueError, match="weight_temperature must be a finite number > 0"):
        wch_weights(s, -0.2)
    with pytest.raises(ValueError, match="weight_temperature must be a finite number > 0"):
        wch_weights(s, 0.0)
    with pytest.raises(ValueError, match="weight_temperature must be >= "):
        wch_weights(s, 1e-320)  # subnormal: 1/T_w is inf
    with pytest.raises(TypeError, match="weight_temperature must be a number"):
        wch_weights(s, "0.2")
    with pytest.raises(TypeError, match="s must have dtype"):
        wch_weights(torch.ones(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="s must be a non-empty square"):
        wch_weights(torch.rand(3, 4))
    with pytest.raises(TypeError, match="clamp must be a bool"):
        wch_weights(s, 0.2, "no")
    with pytest.raises(ValueError, match="weight_norm must be one of"):
        wch_weights(s, weight_norm="rows")
