"""Two-view augmentations as in CIBHash / NSH / WCH, batched on the images' device (GPU when there is one).

Every sample draws its own parameters from an explicit ``torch.Generator`` (on CPU), so a
training step's views depend only on the step's seed: that is what makes ``--resume`` exact.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hashkern._validation import check_int, check_tensor


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [b, C, H, W] in 0..255 -> float32 in [0, 1]; float input is returned as float32."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def _uniform(gen, n, low, high, device):
    return (torch.rand(n, generator=gen) * (high - low) + low).to(device)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """[b, C, H, W] -> luminance [b, 1, H, W] (ITU-R 601 weights for RGB)."""
    if x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """RGB [b, 3, H, W] in [0, 1] with each image's hue turned by ``shift`` [b] (in turns, e.g. ±0.1)."""
    r, g, b = x.unbind(1)
    value, _ = x.max(1)
    delta = value - x.min(1).values
    sat = torch.where(value > 0, delta / value.clamp_min(1e-12), torch.zeros_like(value))
    d = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (value - r) / d, (value - g) / d, (value - b) / d
    hue = torch.where(value == r, bc - gc, torch.where(value == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(delta > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    hue = (hue + shift.view(-1, 1, 1)) % 1.0
    sector = torch.floor(hue * 6.0)
    frac = hue * 6.0 - sector
    p, q, t = value * (1 - sat), value * (1 - sat * frac), value * (1 - sat * (1 - frac))
    # (r, g, b) per hue sector 0..5, as colorsys.hsv_to_rgb
    table = torch.stack([torch.stack(c, 1) for c in ((value, t, p), (q, value, p), (p, value, t), (p, q, value),
                                                       (t, p, value), (value, p, q))], 1)  # [b, 6, 3, H, W]
    index = (sector.long() % 6).unsqueeze(1).unsqueeze(1).expand(-1, 1, 3, -1, -1)
    return table.gather(1, index).squeeze(1)


class Normalize:
    """Resize to ``size``² and standardise with per-channel ``mean`` / ``std``."""

    def __init__(self, size: int, mean, std):
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float(images)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std


# Colour-jitter operations by the index torchvision's ColorJitter gives them (its ``fn_idx``).
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
JITTER_ORDERS = ("fixed", "random")
CROP_SAMPLINGS = ("clamp", "retry")
CROP_TRIES = 10  # torchvision's RandomResizedCrop: attempts before it falls back to the whole image


def _adjust(x: torch.Tensor, op: int, factor: torch.Tensor) -> torch.Tensor:
    """One colour adjustment of [b, C, H, W] in [0, 1] with a factor per image ([b]), as torchvision's
    ``adjust_brightness | adjust_contrast | adjust_saturation | adjust_hue`` (gray: ITU-R 601, as PIL's "L").
    Saturation and hue leave a 1-channel image alone."""
    f = factor.view(-1, 1, 1, 1)
    if op == BRIGHTNESS:
        return (x * f).clamp(0, 1)
    if op == CONTRAST:
        mean = _gray(x).mean(dim=(2, 3), keepdim=True)
        return ((x - mean) * f + mean).clamp(0, 1)
    if x.shape[1] != 3:
        return x
    if op == SATURATION:
        g = _gray(x)
        return ((x - g) * f + g).clamp(0, 1)
    return shift_hue(x, factor).clamp(0, 1)


def color_jitter(x: torch.Tensor, factors: dict, order: torch.Tensor | None = None) -> torch.Tensor:
    """Colour jitter of [b, C, H, W] in [0, 1]: ``factors`` maps :data:`BRIGHTNESS` ... :data:`HUE` to a
    factor per image ([b]; hue: a turn in ±0.5); an operation missing from ``factors`` is skipped.

    ``order`` None applies them as numbered; ``order`` [b, len(factors)], a permutation of ``factors``' keys
    per image (as torchvision's ``ColorJitter`` draws ``torch.randperm(4)``), applies image i's in ``order[i]``."""
    if order is None:
        for op in sorted(factors):
            x = _adjust(x, op, factors[op])
        return x
    y = x
    for position in range(order.shape[1]):
        step = order[:, position].to(x.device)
        for op, factor in factors.items():
            rows = (step == op).nonzero().squeeze(1)
            if rows.numel():
                y = y.index_copy(0, rows, _adjust(y.index_select(0, rows), op, factor.index_select(0, rows)))
    return y


class TwoViewAugment:
    """``aug(images, generator) -> (view1, view2)``, each [b, C, size, size] float, normalised.

    Per sample, in this order:

    - random resized crop: a box of ``crop_scale`` of the image's area and aspect ratio in 3/4..4/3
      (log-uniform), resized to ``size``² (bilinear). ``crop_sampling="clamp"`` clips a box that
      does not fit to the image's sides; ``"retry"`` draws again, up to 10 times, then takes the
      whole image (torchvision's ``RandomResizedCrop``, in fractions of the image, no pixel rounding);
    - horizontal flip (p = 0.5, ``flip``);
    - colour jitter with probability ``jitter_p``: brightness, contrast and saturation factors in
      1 ± ``jitter``, and with ``hue`` > 0 a hue turn in ±``hue`` (RGB only), applied in a fixed
      order (``jitter_order="fixed"``) or in a random order per image (``"random"``, as
      torchvision's ``ColorJitter``);
    - grayscale with probability ``gray_p`` (RGB only; ITU-R 601 luminance in all three channels);
    - Gaussian blur with probability ``blur_p``: σ uniform in 0.1..2, a ``blur_kernel``-wide kernel
      (default about 10 % of ``size``), reflected borders;
    - normalisation: (x - ``mean``) / ``std`` per channel.
    """

    def __init__(self, size: int, mean, std, crop_scale=(0.5, 1.0), jitter: float = 0.4,
                 jitter_p: float = 0.8, gray_p: float = 0.2, blur_p: float = 0.5, flip: bool = True,
                 hue: float = 0.0, blur_kernel: int | None = None, jitter_order: str = "fixed",
                 crop_sampling: str = "clamp"):
        check_int("size", size, low=1)
        if not (0 < crop_scale[0] <= crop_scale[1] <= 1):
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        self.size, self.crop_scale, self.jitter = size, tuple(crop_scale), float(jitter)
        self.jitter_p, self.gray_p, self.blur_p, self.flip = jitter_p, gray_p, blur_p, flip
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.hue = float(hue)
        self.blur_kernel = None if blur_kernel is None else check_int("blur_kernel", blur_kernel, low=1)
        if jitter_order not in JITTER_ORDERS:
            raise ValueError(f"jitter_order must be one of {JITTER_ORDERS}, got {jitter_order!r}")
        if crop_sampling not in CROP_SAMPLINGS:
            raise ValueError(f"crop_sampling must be one of {CROP_SAMPLINGS}, got {crop_sampling!r}")
        self.jitter_order, self.crop_sampling = jitter_order, crop_sampling
        self.normalize = Normalize(size, mean, std)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None):
        check_tensor("images", images, ndim=4)
        return self.view(images, generator), self.view(images, generator)

    def view(self, images: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        x = to_float(images)
        b, dev = x.shape[0], x.device
        x = self._crop_flip(x, b, dev, gen)
        x = self._jitter(x, b, dev, gen)
        if x.shape[1] == 3:
            gray = _uniform(gen, b, 0, 1, dev) < self.gray_p
            x = torch.where(gray.view(-1, 1, 1, 1), _gray(x).expand_as(x), x)
        x = self._blur(x, b, dev, gen)
        return self.normalize(x.clamp_(0, 1))

    def crop_boxes(self, b: int, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The crops' (width, height) [b] each, as fractions of the image's sides (``crop_sampling``)."""
        if self.crop_sampling == "clamp":
            area = _uniform(gen, b, *self.crop_scale, "cpu")
            ratio = torch.exp(_uniform(gen, b, math.log(3 / 4), math.log(4 / 3), "cpu"))
            return torch.sqrt(area * ratio).clamp(max=1.0), torch.sqrt(area / ratio).clamp(max=1.0)
        area = _uniform(gen, b * CROP_TRIES, *self.crop_scale, "cpu").view(b, CROP_TRIES)
        ratio = torch.exp(_uniform(gen, b * CROP_TRIES, math.log(3 / 4), math.log(4 / 3), "cpu")).view(b, CROP_TRIES)
        w, h = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
        fits = (w <= 1) & (h <= 1)
        first = fits.int().argmax(1, keepdim=True)  # the first try that fits
        whole = torch.ones(b)
        return (torch.where(fits.any(1), w.gather(1, first).squeeze(1), whole),
                torch.where(fits.any(1), h.gather(1, first).squeeze(1), whole))

    def _crop_flip(self, x, b, dev, gen):
        # An affine grid per sample: (w, h) are the crop's sides as fractions of the image.
        w, h = self.crop_boxes(b, gen)
        cx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - w)
        cy = (torch.rand(b, generator=gen) * 2 - 1) * (1 - h)
        sign = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if self.flip else torch.ones(b)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = w * sign, cx
        theta[:, 1, 1], theta[:, 1, 2] = h, cy
        grid = F.affine_grid(theta.to(dev), [b, x.shape[1], self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _jitter(self, x, b, dev, gen):
        on = (_uniform(gen, b, 0, 1, dev) < self.jitter_p).view(-1, 1, 1, 1)
        j = self.jitter
        factors = {op: _uniform(gen, b, 1 - j, 1 + j, dev) for op in (BRIGHTNESS, CONTRAST, SATURATION)}
        if self.hue > 0:  # drawn only when asked, so the default pipeline's draws are unchanged
            factors[HUE] = _uniform(gen, b, -self.hue, self.hue, dev)
        order = None
        if self.jitter_order == "random":
            order = torch.argsort(torch.rand(b, len(factors), generator=gen), dim=1)
            order = torch.tensor(sorted(factors))[order]  # [b, n_ops]: a random permutation of the ops per image
        return torch.where(on, color_jitter(x, factors, order), x)

    def _blur(self, x, b, dev, gen):
        on = (_uniform(gen, b, 0, 1, dev) < self.blur_p).view(-1, 1, 1, 1)
        sigma = _uniform(gen, b, 0.1, 2.0, dev)
        k = self.blur_kernel or max(3, int(0.1 * self.size) | 1)
        r = torch.arange(k, device=dev, dtype=x.dtype) - k // 2
        kern = torch.exp(-(r.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
        kern = kern / kern.sum(1, keepdim=True)  # [b, k]
        c = x.shape[1]
        # Separable blur with one kernel per sample: fold the batch into channels, grouped conv.
        weight = kern.repeat_interleave(c, 0)  # [b*c, k]
        y = x.reshape(1, b * c, *x.shape[2:])
        y = F.conv2d(F.pad(y, (k // 2, k // 2, 0, 0), mode="reflect"), weight.view(b * c, 1, 1, k), groups=b * c)
        y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode="reflect"), weight.view(b * c, 1, k, 1), groups=b * c)
        return torch.where(on, y.view_as(x), x)


# Per-dataset normalisation and augmentation defaults (image size is the backbone's input).
STATS = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar10-1": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar10-cibhash": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


# Named two-view pipelines (``--augment``): TwoViewAugment arguments over the defaults; "stats" names the
# normalisation (default: the dataset's), which encoding uses as well.
AUGMENTATIONS = {
    # hashkern's own: jitter p=0.8 without hue in a fixed order, blur kernel ~10 % of the size, crops
    # (0.5|0.3, 1) clipped to the image
    "hashkern": {},
    # CIBHash's official train_transform (zexuanqiu/CIBHash, utils/data.py): RandomResizedCrop(224, scale
    # 0.5..1), RandomHorizontalFlip, RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.7),
    # RandomGrayscale(0.2), GaussianBlur(3) (cv2, σ in 0.1..2, p=0.5), Normalize(ImageNet mean, std)
    "cibhash": {"crop_scale": (0.5, 1.0), "crop_sampling": "retry", "jitter": 0.4, "hue": 0.1, "jitter_p": 0.7,
                "jitter_order": "random", "gray_p": 0.2, "blur_p": 0.5, "blur_kernel": 3, "stats": "imagenet"},
    # WCH's official train_transform (RosieYuu/WCH, utils/tools.py): Resize(224), CenterCrop(224),
    # RandomResizedCrop(224, scale 0.2..1), RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
    # RandomGrayscale(0.2), RandomApply([GaussianBlur (PIL, σ in 0.1..2)], p=0.5), RandomHorizontalFlip,
    # Normalize(ImageNet mean, std); the blur kernel here spans about 10 % of the size (23 taps at 224)
    "wch": {"crop_scale": (0.2, 1.0), "crop_sampling": "retry", "jitter": 0.4, "hue": 0.1, "jitter_p": 0.8,
            "jitter_order": "random", "gray_p": 0.2, "blur_p": 0.5, "stats": "imagenet"},
}


def normalization(dataset: str, channels: int, augment: str = "hashkern") -> tuple[tuple, tuple]:
    """(mean, std) per channel that training with ``augment`` on ``dataset`` uses (and encoding must use)."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {tuple(AUGMENTATIONS)}, got {augment!r}")
    stats = AUGMENTATIONS[augment].get("stats", dataset)
    mean, std = STATS.get(stats, STATS["imagenet"])
    if len(mean) != channels:  # e.g. grayscale images into an RGB backbone: broadcast the first channel
        mean, std = (mean[0],) * channels, (std[0],) * channels
    return mean, std


def make_transforms(dataset: str, size: int, channels: int, crop_scale: tuple | None = None,
                    augment: str = "hashkern"):
    """(TwoViewAugment for training, Normalize for encoding) for a dataset and backbone input size.

    ``crop_scale``: the random crops' share of the image (default: the pipeline's; hashkern's is (0.5, 1)
    below 64 pixels, else (0.3, 1)). ``augment``: a pipeline of :data:`AUGMENTATIONS`."""
    mean, std = normalization(dataset, channels, augment)
    preset = {k: v for k, v in AUGMENTATIONS[augment].items() if k != "stats"}
    crop_scale = crop_scale or preset.pop("crop_scale", None)
    preset.pop("crop_scale", None)
    if crop_scale is None:
        crop_scale = (0.5, 1.0) if size < 64 else (0.3, 1.0)
    return TwoViewAugment(size, mean, std, crop_scale=crop_scale, **preset), Normalize(size, mean, std)
