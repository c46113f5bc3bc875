"""Batched two-view augmentations: shapes, determinism per generator, invariants, bad input, CPU == GPU."""
import pytest
import torch

from hashkern.training.data import Normalize, TwoViewAugment, make_transforms


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("b,c,h,size", [(1, 1, 28, 28), (5, 3, 32, 24), (3, 1, 17, 9)])
def test_shapes_and_determinism(b, c, h, size):
    aug = TwoViewAugment(size, (0.5,) * c, (0.25,) * c)
    images = torch.randint(0, 256, (b, c, h, h), dtype=torch.uint8)
    v1, v2 = aug(images, _gen(3))
    assert v1.shape == v2.shape == (b, c, size, size) and v1.dtype == torch.float32
    assert torch.isfinite(v1).all() and torch.isfinite(v2).all()
    w1, w2 = aug(images, _gen(3))
    assert torch.equal(v1, w1) and torch.equal(v2, w2)  # a step's views depend on its generator only
    x1, _ = aug(images, _gen(4))
    assert not torch.equal(v1, x1)
    assert not torch.equal(v1, v2)
    # uint8 and the same images as floats in [0, 1] give the same views
    f1, _ = aug(images.float() / 255, _gen(3))
    torch.testing.assert_close(f1, v1)


def test_constant_image_stays_constant_without_colour_ops():
    # Crop, flip and blur preserve a constant image; only the normalisation changes its value.
    aug = TwoViewAugment(16, (0.2, 0.3, 0.4), (0.5, 0.5, 0.25), jitter_p=0.0, gray_p=0.0, blur_p=1.0)
    values = torch.tensor([10, 128, 250], dtype=torch.uint8)
    images = values.view(1, 3, 1, 1).expand(4, 3, 20, 20).contiguous()
    v1, v2 = aug(images, _gen(0))
    expect = ((values.double() / 255 - torch.tensor([0.2, 0.3, 0.4], dtype=torch.float64))
              / torch.tensor([0.5, 0.5, 0.25], dtype=torch.float64)).view(1, 3, 1, 1)
    torch.testing.assert_close(v1.double(), expect.expand_as(v1), atol=1e-5, rtol=0)
    torch.testing.assert_close(v2.double(), expect.expand_as(v2), atol=1e-5, rtol=0)


def test_grayscale_always_gives_equal_channels():
    aug = TwoViewAugment(8, (0.0,) * 3, (1.0,) * 3, gray_p=1.0, blur_p=0.0)
    v1, _ = aug(torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8), _gen(1))
    torch.testing.assert_close(v1[:, 0], v1[:, 1])
    torch.testing.assert_close(v1[:, 1], v1[:, 2])


def test_normalize_matches_float64_formula():
    norm = Normalize(7, (0.3,), (0.2,))
    images = torch.randint(0, 256, (2, 1, 7, 7), dtype=torch.uint8)
    torch.testing.assert_close(norm(images).double(), (images.double() / 255 - 0.3) / 0.2, atol=1e-5, rtol=0)
    assert norm(torch.rand(2, 1, 14, 14)).shape == (2, 1, 7, 7)


def test_make_transforms_channels():
    aug, norm = make_transforms("fashion-mnist", 28, 1)
    assert aug.normalize.mean == (0.2860,)
    aug, norm = make_transforms("fashion-mnist", 224, 3)  # grayscale stats broadcast to RGB
    assert norm.mean == (0.2860,) * 3
    _, norm = make_transforms("cifar10", 32, 3)
    assert len(norm.mean) == 3


def test_bad_input():
    with pytest.raises(ValueError, match="crop_scale"):
        TwoViewAugment(8, (0.5,), (0.5,), crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="size must be >= 1"):
        TwoViewAugment(0, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="images must be 4-D"):
        TwoViewAugment(8, (0.5,), (0.5,))(torch.zeros(3, 8, 8))
    with pytest.raises(TypeError, match="images must be a torch.Tensor"):
        TwoViewAugment(8, (0.5,), (0.5,))([1, 2])


@pytest.mark.gpu
def test_cuda_matches_cpu():
    aug = TwoViewAugment(24, (0.5,) * 3, (0.25,) * 3)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    c1, c2 = aug(images, _gen(9))
    g1, g2 = aug(images.cuda(), _gen(9))
    torch.testing.assert_close(g1.cpu(), c1, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(g2.cpu(), c2, atol=1e-4, rtol=1e-4)
