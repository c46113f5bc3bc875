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


class TwoViewAugment:
    """``aug(images, generator) -> (view1, view2)``, each [b, C, size, size] float, normalised.

    Per sample: random resized crop (``crop_scale`` of the area, aspect 3/4..4/3), horizontal
    flip (p=0.5), colour jitter (brightness, contrast, saturation ±``jitter``, p=0.8), grayscale
    (p=0.2, RGB only), Gaussian blur (σ in 0.1..2, p=``blur_p``). Hue jitter is not applied.
    """

    def __init__(self, size: int, mean, std, crop_scale=(0.5, 1.0), jitter: float = 0.4,
                 jitter_p: float = 0.8, gray_p: float = 0.2, blur_p: float = 0.5, flip: bool = True):
        check_int("size", size, low=1)
        if not (0 < crop_scale[0] <= crop_scale[1] <= 1):
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        self.size, self.crop_scale, self.jitter = size, tuple(crop_scale), float(jitter)
        self.jitter_p, self.gray_p, self.blur_p, self.flip = jitter_p, gray_p, blur_p, flip
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

    def _crop_flip(self, x, b, dev, gen):
        # An affine grid per sample: (w, h) are the crop's sides as fractions of the image.
        area = _uniform(gen, b, *self.crop_scale, "cpu")
        log_r = _uniform(gen, b, math.log(3 / 4), math.log(4 / 3), "cpu")
        ratio = torch.exp(log_r)
        w = torch.sqrt(area * ratio).clamp(max=1.0)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
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
        bright = _uniform(gen, b, 1 - j, 1 + j, dev).view(-1, 1, 1, 1)
        contrast = _uniform(gen, b, 1 - j, 1 + j, dev).view(-1, 1, 1, 1)
        sat = _uniform(gen, b, 1 - j, 1 + j, dev).view(-1, 1, 1, 1)
        y = (x * bright).clamp(0, 1)
        mean = _gray(y).mean(dim=(2, 3), keepdim=True)
        y = ((y - mean) * contrast + mean).clamp(0, 1)
        if y.shape[1] == 3:
            g = _gray(y)
            y = ((y - g) * sat + g).clamp(0, 1)
        return torch.where(on, y, x)

    def _blur(self, x, b, dev, gen):
        on = (_uniform(gen, b, 0, 1, dev) < self.blur_p).view(-1, 1, 1, 1)
        sigma = _uniform(gen, b, 0.1, 2.0, dev)
        k = max(3, int(0.1 * self.size) | 1)
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
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def make_transforms(dataset: str, size: int, channels: int, crop_scale: tuple | None = None):
    """(TwoViewAugment for training, Normalize for encoding) for a dataset and backbone input size.

    ``crop_scale``: the random crops' share of the image (default (0.5, 1) below 64 pixels, else (0.3, 1))."""
    mean, std = STATS.get(dataset, STATS["imagenet"])
    if len(mean) != channels:  # e.g. grayscale images into an RGB backbone: broadcast the first channel
        mean, std = (mean[0],) * channels, (std[0],) * channels
    if crop_scale is None:
        crop_scale = (0.5, 1.0) if size < 64 else (0.3, 1.0)
    return TwoViewAugment(size, mean, std, crop_scale=crop_scale), Normalize(size, mean, std)
