"""NT-Xent (CIBHash's contrastive loss) against its float64 loop oracle; gradcheck; bad input."""
import pytest
import torch

from hashkern.losses.ntxent import NTXentLoss, nt_xent, nt_xent_reference


@pytest.mark.parametrize("n,d,tau", [(2, 1, 0.3), (5, 7, 0.5), (9, 16, 2.0)])
def test_matches_reference(device, n, d, tau):
    z1, z2 = torch.randn(n, d, device=device), torch.randn(n, d, device=device)
    out = NTXentLoss(tau)(z1, z2)
    torch.testing.assert_close(out.double().cpu(), nt_xent_reference(z1.cpu(), z2.cpu(), tau), rtol=1e-5, atol=1e-5)
    per_row = nt_xent(z1, z2, tau, reduction="none")
    assert per_row.shape == (2 * n,)
    torch.testing.assert_close(per_row.mean(), out)


def test_codes_perfect_pairs_have_lower_loss():
    codes = torch.where(torch.randn(6, 32) >= 0, 1.0, -1.0)
    assert nt_xent(codes, codes) < nt_xent(codes, codes[torch.randperm(6)])


def test_gradcheck():
    z1 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.4), (z1, z2))
    # ...and the gradient equals the oracle's
    g = torch.autograd.grad(nt_xent(z1, z2, 0.4), (z1, z2))
    r = torch.autograd.grad(nt_xent_reference(z1, z2, 0.4), (z1, z2))
    for a, b in zip(g, r):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("tau", [1e-5, 1e-30, 1e-300])
def test_tiny_temperature_is_finite_and_matches_float64(dtype, tau):
    torch.manual_seed(1)
    z1 = torch.randn(4, 8)
    z2 = z1 + 0.05 * torch.randn(4, 8)  # partners are the nearest: a finite loss even as tau -> 0
    z1, z2 = z1.to(dtype).requires_grad_(), z2.to(dtype).requires_grad_()
    loss = nt_xent(z1, z2, tau)
    grads = torch.autograd.grad(loss, (z1, z2))
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
    want = nt_xent_reference(z1.detach().double(), z2.detach().double(), tau)
    torch.testing.assert_close(loss.double(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scale", [1e20, 1e38])
def test_huge_finite_inputs_give_the_right_cosines(scale):
    torch.manual_seed(2)
    z1, z2 = torch.randn(3, 5), torch.randn(3, 5)
    want = nt_xent_reference(z1.double(), z2.double(), 0.5)
    got = nt_xent(z1 * scale, z2 * scale, 0.5)
    assert torch.isfinite(got)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    # zero rows have cosine 0 with everything (as with F.normalize), not NaN
    z = torch.cat([torch.zeros(3, 5), z2]).double()
    z = z / z.norm(dim=1, keepdim=True).clamp(min=1e-300)
    sim = (z @ z.T / 0.5).fill_diagonal_(float("-inf"))
    want = torch.nn.functional.cross_entropy(sim, torch.tensor([3, 4, 5, 0, 1, 2]))
    torch.testing.assert_close(nt_xent(torch.zeros(3, 5), z2, 0.5).double(), want, rtol=1e-6, atol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="at least 2 pairs"):
        nt_xent(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="z1 and z2 must have the same shape"):
        nt_xent(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        NTXentLoss(0.0)
    with pytest.raises(TypeError, match="z1 must be a floating-point tensor"):
        nt_xent(torch.ones(3, 4, dtype=torch.long), torch.randn(3, 4))
    with pytest.raises(ValueError, match="z2 must be 2-D"):
        nt_xent(torch.randn(3, 4), torch.randn(3, 4, 1))
    with pytest.raises(ValueError, match="reduction must be"):
        NTXentLoss(reduction="sum")
    with pytest.raises(ValueError, match="temperature must be >= "):
        nt_xent(torch.randn(3, 4), torch.randn(3, 4), 1e-320)
