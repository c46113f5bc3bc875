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
