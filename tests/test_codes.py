import pytest
import torch

from hashkern import sign_ste


def test_sign_ste_forward_values(device):
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, 3.0, float("nan")], device=device)
    assert sign_ste(x).tolist() == [-1.0, 1.0, 1.0, 1.0, 1.0, -1.0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_sign_ste_keeps_dtype_and_passes_gradient_straight_through(dtype, device):
    x = torch.randn(4, 16, device=device, dtype=dtype, requires_grad=True)
    y = sign_ste(x)
    assert y.dtype == dtype and set(y.unique().tolist()) <= {-1.0, 1.0}
    weights = torch.randn_like(y)
    (y * weights).sum().backward()
    assert torch.equal(x.grad, weights)


def test_sign_ste_refuses_integer_input():
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        sign_ste(torch.ones(3, dtype=torch.int64))
