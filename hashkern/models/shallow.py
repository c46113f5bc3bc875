"""Shallow baselines on raw features: LSH (random hyperplanes) and ITQ (Gong & Lazebnik, CVPR 2011)."""
from __future__ import annotations

import torch

from hashkern._validation import check_int, check_tensor


def as_features(x: torch.Tensor) -> torch.Tensor:
    """images [n, C, H, W] (uint8 or float) or features [n, d], real and finite -> float64 [n, d]."""
    check_tensor("x", x, ndim=(2, 4))
    if x.is_complex():  # .double() would drop the imaginary part
        raise TypeError(f"x must be real features or images, got {str(x.dtype).replace('torch.', '')}")
    if x.numel() == 0:
        raise ValueError(f"x must hold at least one sample with at least one feature, got shape {tuple(x.shape)}")
    x = x.reshape(x.shape[0], -1).double()
    if not torch.isfinite(x).all():  # a NaN mean or projection would make every code -1
        raise ValueError("x must be finite (it holds NaN or inf)")
    return x


class _SignProjection:
    """Codes are ``sign((x - mean) @ projection)``; ``fit`` sets ``mean`` [d] and ``projection`` [d, K]."""

    mean = projection = None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """-> [n, K] float32 in {-1, +1}."""
        if self.projection is None:
            raise RuntimeError("call fit() before encode()")
        x = as_features(x)
        if x.shape[1] != self.projection.shape[0]:
            raise ValueError(f"x has {x.shape[1]} features, fit() saw {self.projection.shape[0]}")
        return torch.where((x - self.mean) @ self.projection >= 0, 1.0, -1.0).float()


class LSH(_SignProjection):
    """Sign of random Gaussian projections of mean-centred features: ``LSH(nbits, seed).fit(X).encode(X)``."""

    def __init__(self, nbits: int, seed: int = 0):
        self.nbits, self.seed = check_int("nbits", nbits, low=1), check_int("seed", seed)
        self.planes = None

    def fit(self, x: torch.Tensor) -> "LSH":
        """x: [n, d] features or [n, C, H, W] images (flattened)."""
        x = as_features(x)
        gen = torch.Generator().manual_seed(self.seed)
        self.mean = x.mean(0)
        self.planes = self.projection = torch.randn(x.shape[1], self.nbits, generator=gen, dtype=torch.float64)
        return self


class ITQ(_SignProjection):
    """PCA to K dimensions, then the rotation R minimising ||sign(VR) - VR||² (``iterations`` rounds)."""

    def __init__(self, nbits: int, iterations: int = 50, seed: int = 0):
        self.nbits = check_int("nbits", nbits, low=1)
        self.iterations = check_int("iterations", iterations, low=0)
        self.seed = check_int("seed", seed)
        self.pca = self.rotation = None

    def fit(self, x: torch.Tensor) -> "ITQ":
        x = as_features(x)
        if self.nbits > min(x.shape):
            raise ValueError(f"ITQ needs nbits <= min(n, d) = {min(x.shape)}, got {self.nbits}")
        # Features divided by their largest magnitude first: the signs do not depend on the scale,
        # and the mean and xcᵀ xc would overflow at 1e160 and underflow at 1e-300 otherwise.
        scale = x.abs().max().clamp(min=torch.finfo(torch.float64).tiny)
        unit_mean = (x / scale).mean(0)
        self.mean = unit_mean * scale
        xc = x / scale - unit_mean
        # Top-K principal directions from the covariance [d, d] (cheap for d in the thousands).
        evals, evecs = torch.linalg.eigh(xc.t() @ xc)
        self.pca = evecs[:, torch.argsort(evals, descending=True)[:self.nbits]]
        v = xc @ self.pca
        gen = torch.Generator().manual_seed(self.seed)
        r, _ = torch.linalg.qr(torch.randn(self.nbits, self.nbits, generator=gen, dtype=torch.float64))
        for _ in range(self.iterations):
            b = torch.where(v @ r >= 0, 1.0, -1.0).double()
            u, _, wt = torch.linalg.svd(v.t() @ b)  # R = U Wᵀ maximises tr(Bᵀ V R)
            r = u @ wt
        self.rotation = r
        self.projection = self.pca @ r
        return self
