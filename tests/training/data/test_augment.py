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


def test_shift_hue_matches_colorsys():
    import colorsys

    from hashkern.training.data.augment import shift_hue

    x = torch.rand(3, 3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[0, :, 0, 0] = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)  # gray: no hue
    turn = torch.tensor([0.0, 0.1, -0.25], dtype=torch.float64)
    got = shift_hue(x, turn)
    for i in range(3):
        for r in range(4):
            for c in range(5):
                h, s, v = colorsys.rgb_to_hsv(*x[i, :, r, c].tolist())
                want = colorsys.hsv_to_rgb((h + float(turn[i])) % 1.0, s, v)
                assert torch.allclose(got[i, :, r, c], torch.tensor(want, dtype=torch.float64), atol=1e-9)


def test_cibhash_pipeline_is_seeded_and_leaves_the_default_draws_alone():
    from hashkern.training.data.augment import AUGMENTATIONS

    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    default, _ = make_transforms("cifar10", 32, 3)
    named, _ = make_transforms("cifar10", 32, 3, augment="hashkern")
    cib, _ = make_transforms("cifar10", 32, 3, augment="cibhash")
    assert AUGMENTATIONS["hashkern"] == {} and default.hue == 0
    assert (default.jitter_order, default.crop_sampling) == ("fixed", "clamp")
    for a, b in zip(default(images, torch.Generator().manual_seed(4)), named(images, torch.Generator().manual_seed(4))):
        assert torch.equal(a, b)
    v1 = cib(images, torch.Generator().manual_seed(4))
    v2 = cib(images, torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(v1, v2))
    assert not torch.equal(v1[0], default(images, torch.Generator().manual_seed(4))[0])
    with pytest.raises(ValueError, match="augment must be one of"):
        make_transforms("cifar10", 32, 3, augment="simclr")


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_cibhash_pipeline_is_the_official_train_transform():
    """Every parameter of zexuanqiu/CIBHash utils/data.py's train_transforms (and utils/gaussian_blur.py)."""
    aug, norm = make_transforms("cifar10", 224, 3, augment="cibhash")
    assert aug.size == 224                                                   # RandomResizedCrop(size=224, ...
    assert aug.crop_scale == (0.5, 1.0) and aug.crop_sampling == "retry"     # ... scale=(0.5, 1.0))
    assert aug.flip is True                                                  # RandomHorizontalFlip() (p = 0.5)
    assert (aug.jitter, aug.hue) == (0.4, 0.1)                               # ColorJitter(0.4, 0.4, 0.4, 0.1) ...
    assert aug.jitter_order == "random"                                      # ... in a random order per image
    assert aug.jitter_p == 0.7                                               # RandomApply([color_jitter], p=0.7)
    assert aug.gray_p == 0.2                                                 # RandomGrayscale(p=0.2)
    assert (aug.blur_kernel, aug.blur_p) == (3, 0.5)                         # GaussianBlur(3): σ in 0.1..2, p=0.5
    assert (aug.normalize.mean, aug.normalize.std) == IMAGENET               # Normalize(ImageNet mean, std) ...
    assert (norm.mean, norm.std, norm.size) == (*IMAGENET, 224)              # ... and Resize((224, 224)) to encode
    for dataset in ("fashion-mnist", "imagelist"):  # one normalisation whatever the data
        assert make_transforms(dataset, 224, 3, augment="cibhash")[1].mean == IMAGENET[0]
    assert make_transforms("cifar10", 224, 3)[1].mean == (0.4914, 0.4822, 0.4465)  # hashkern's: the dataset's


def test_wch_pipeline_is_the_official_train_transform():
    """Every parameter of RosieYuu/WCH utils/tools.py's train_transform (flip last there: it commutes)."""
    aug, norm = make_transforms("cifar10", 224, 3, augment="wch")
    assert aug.size == 224                                                   # RandomResizedCrop(224, ...
    assert aug.crop_scale == (0.2, 1.0) and aug.crop_sampling == "retry"     # ... scale=(0.2, 1.))
    assert (aug.jitter, aug.hue, aug.jitter_order) == (0.4, 0.1, "random")   # ColorJitter(0.4, 0.4, 0.4, 0.1)
    assert aug.jitter_p == 0.8 and aug.gray_p == 0.2                         # p=0.8; RandomGrayscale(p=0.2)
    assert aug.blur_p == 0.5 and aug.blur_kernel is None                     # GaussianBlur([.1, 2.]), p=0.5
    assert aug.flip is True                                                  # RandomHorizontalFlip()
    assert (aug.normalize.mean, aug.normalize.std) == IMAGENET == (norm.mean, norm.std)


def test_color_jitter_matches_torchvision_in_every_order():
    import itertools

    import torchvision.transforms.functional as TF

    from hashkern.training.data.augment import BRIGHTNESS, CONTRAST, HUE, SATURATION, color_jitter

    perms = torch.tensor(list(itertools.permutations(range(4))))  # all 24 orders
    x = (torch.rand(1, 3, 6, 7, generator=_gen(2)) * 0.6 + 0.3).expand(24, -1, -1, -1)  # one image, clamps act
    one = {BRIGHTNESS: 1.3, CONTRAST: 0.7, SATURATION: 1.4, HUE: 0.08}
    factors = {op: torch.full((24,), f) for op, f in one.items()}
    adjust = {BRIGHTNESS: TF.adjust_brightness, CONTRAST: TF.adjust_contrast, SATURATION: TF.adjust_saturation,
              HUE: TF.adjust_hue}
    got = color_jitter(x, factors, perms)
    for i, order in enumerate(perms.tolist()):
        want = x[i]
        for op in order:
            want = adjust[op](want, one[op])
        # torchvision weighs gray with 0.2989 (R), PIL's "L" (CIBHash's images) and hashkern with 0.299
        torch.testing.assert_close(got[i], want, atol=2e-3, rtol=0)
    assert (got - got[:1]).abs().amax(dim=(1, 2, 3)).max() > 0.02  # the order matters
    torch.testing.assert_close(color_jitter(x, factors), got[:1].expand(24, -1, -1, -1))  # None: as numbered


def test_random_jitter_order_draws_a_permutation_per_image(monkeypatch):
    from hashkern.training.data import augment

    seen = []
    real = augment.color_jitter
    monkeypatch.setattr(augment, "color_jitter", lambda x, factors, order=None: seen.append(order) or
                        real(x, factors, order))
    images = torch.randint(0, 256, (300, 3, 8, 8), dtype=torch.uint8)
    TwoViewAugment(8, *IMAGENET, hue=0.1, jitter_order="random").view(images, _gen(1))
    order = seen[-1]
    assert order.shape == (300, 4) and torch.equal(order.sort(1).values, torch.arange(4).expand(300, 4))
    assert len({tuple(row) for row in order.tolist()}) == 24  # every order occurs
    TwoViewAugment(8, *IMAGENET, hue=0.1).view(images, _gen(1))
    assert seen[-1] is None  # hashkern's default: brightness, contrast, saturation, hue


def test_retry_crops_keep_the_drawn_area_and_ratio_as_torchvision():
    import math

    from torchvision.transforms import RandomResizedCrop

    n = 4000
    retry = TwoViewAugment(8, (0.5,), (0.5,), crop_scale=(0.5, 1.0), crop_sampling="retry")
    w, h = retry.crop_boxes(n, _gen(3))
    whole = (w == 1) & (h == 1)
    area, ratio = (w * h)[~whole], (w / h)[~whole]
    assert (w <= 1).all() and (h <= 1).all()
    assert (area >= 0.5 - 1e-6).all() and (area <= 1 + 1e-6).all()
    assert (ratio >= 3 / 4 - 1e-6).all() and (ratio <= 4 / 3 + 1e-6).all()
    # torchvision's sampler on a large square image: the same distribution of crop areas (fractions)
    torch.manual_seed(0)
    image = torch.zeros(1, 1000, 1000)
    tv = torch.tensor([math.prod(RandomResizedCrop.get_params(image, [0.5, 1.0], [3 / 4, 4 / 3])[2:]) / 1e6
                       for _ in range(n)])
    quantiles = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    assert (torch.quantile(w * h, quantiles) - torch.quantile(tv, quantiles)).abs().max() < 0.01
    # hashkern's default clips the boxes that do not fit instead: larger crops than torchvision's
    w, h = TwoViewAugment(8, (0.5,), (0.5,), crop_scale=(0.5, 1.0)).crop_boxes(n, _gen(3))
    assert (torch.quantile(w * h, quantiles) - torch.quantile(tv, quantiles)).max() > 0.05


def test_bad_pipeline_options():
    with pytest.raises(ValueError, match="jitter_order must be one of"):
        TwoViewAugment(8, (0.5,), (0.5,), jitter_order="shuffled")
    with pytest.raises(ValueError, match="crop_sampling must be one of"):
        TwoViewAugment(8, (0.5,), (0.5,), crop_sampling="reject")
