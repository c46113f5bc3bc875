"""Helpers both patch-similarity backends (``torch_impl.py``, ``triton_launch.py``) use: the accumulation
dtype, the temperature clamp, chunking over whole images, the layout of the saved statistics
(image-major, ``[b2, b1 P]``), the CSR inverse of the argmax and the chunked softmaxmean backward."""
from __future__ import annotations

import torch

from hashkern.ops._numerics import at_least_float32

CHUNK_ELEMENTS = 1 << 24  # similarities per chunk: 64 MiB in float32 (large GEMMs: the BLAS packs operands per call)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype of inputs of ``dtype`` (the library's rule, ``at_least_float32``)."""
    return at_least_float32(dtype)


def inverse_temperature(temperature: float, acc: torch.dtype) -> float:
    """1 / T kept within [tiny, 1 / tiny] (tiny: the smallest normal of acc), so (sim - max) / T never meets
    inf * 0: 1 / T is finite for tiny T, and nonzero in acc for huge T (where 1e300 gave 0 in fp32 and
    -inf * 0 = NaN at masked patches). Exact in effect: for T >= 1 / tiny every weight exp(d / T) is 1."""
    tiny = torch.finfo(acc).tiny
    return max(1.0 / max(temperature, tiny), tiny)


def image_chunks(b1: int, P: int, b2: int, Q: int, limit: int):
    """(r0, r1, m0, m1): rows of whole x1 images by ranges of whole x2 images, rows * columns <= limit
    (or a single pair of images): all rows at once when one x2 image fits, else groups of x1 images."""
    cm = min(b2, limit // (b1 * P * Q))
    cn = b1 if cm >= 1 else max(1, limit // (P * Q))
    cm = max(cm, 1)
    for n0 in range(0, b1, cn):
        for m0 in range(0, b2, cm):
            yield n0 * P, min(n0 + cn, b1) * P, m0, min(m0 + cm, b2)


def row_coefficients(grad_s, inv_count, mask1, P: int, acc: torch.dtype) -> torch.Tensor:
    """grad_s [b1, b2] -> c [b2, b1 P] = grad_s[n, m] / count[n] at real patches of x1, 0 at padded ones."""
    c = (grad_s.to(acc) * inv_count[:, None]).t()[:, :, None].expand(-1, -1, P)  # [b2, b1, P]
    if mask1 is not None:
        c = c * mask1[None]
    return c.reshape(c.shape[0], -1).contiguous()


def mean_over_patches(per_patch, inv_count, mask1, b1: int, P: int) -> torch.Tensor:
    """per_patch [b2, b1 P] -> s [b1, b2] = sum over real patches i of per_patch[m, n P + i] / count[n]."""
    v = per_patch.view(-1, b1, P)
    if mask1 is not None:
        v = torch.where(mask1[None], v, 0.0)
    return (v.sum(-1) * inv_count[None]).t().contiguous()


def empty_stats(reduce: str, b2: int, R1: int, acc: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """aux_a, aux_b of the forward: maxmean int32 argmax [b2, R1] and an empty tensor; softmaxmean
    [2, b2, R1] (row max, log-sum) and the smooth max f [b2, R1]."""
    if reduce == "maxmean":
        return torch.empty(b2, R1, dtype=torch.int32, device=device), torch.empty(0, dtype=acc, device=device)
    return torch.empty(2, b2, R1, dtype=acc, device=device), torch.empty(b2, R1, dtype=acc, device=device)


def argmax_csr_torch(argmax: torch.Tensor, Q: int) -> tuple[torch.Tensor, torch.Tensor]:
    """argmax [b2, R1] (Q at padded rows) -> order [b2 R1] (flat positions m R1 + r, stably sorted by the key
    m (Q + 1) + argmax), offsets [b2 (Q + 1) + 1]: bag m (Q + 1) + j lists the rows whose max in image m is j;
    bag m (Q + 1) + Q holds the padded rows and is dropped by the caller."""
    b2 = argmax.shape[0]
    # int32 keys where they fit: PyTorch's stable sort of int32 is ~3x faster than of int64 on a CPU
    key_dtype = torch.int32 if b2 * (Q + 1) < 2**31 else torch.int64
    keys = (argmax.to(key_dtype) + torch.arange(b2, device=argmax.device, dtype=key_dtype)[:, None] * (Q + 1))
    keys = keys.reshape(-1)
    order = torch.sort(keys, stable=True).indices
    offsets = torch.zeros(b2 * (Q + 1) + 1, dtype=torch.long, device=argmax.device)
    torch.cumsum(torch.bincount(keys, minlength=b2 * (Q + 1)), 0, out=offsets[1:])
    return order, offsets


def softmax_backward(X1, X2, b1, P, b2, Q, weights_fn, limit: int = CHUNK_ELEMENTS):
    """dx1 = dS X2, dx2 = dSᵀ X1 (in the accumulation dtype) with dS [b1 P, b2 Q] formed one chunk at a time by
    ``weights_fn(r0, r1, m0, m1)``, in X1's dtype. Fixed chunk order, so the sums are deterministic."""
    acc = acc_dtype(X1.dtype)
    du1 = torch.zeros(X1.shape, dtype=acc, device=X1.device)
    du2 = torch.zeros(X2.shape, dtype=acc, device=X1.device)
    for r0, r1, m0, m1 in image_chunks(b1, P, b2, Q, limit):
        w = weights_fn(r0, r1, m0, m1)
        du1[r0:r1] += w @ X2[m0 * Q:m1 * Q]
        du2[m0 * Q:m1 * Q] += w.t() @ X1[r0:r1]
    return du1, du2
