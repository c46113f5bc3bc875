"""Patch similarity as one GEMM with a segmented max, in PyTorch (the ``torch`` backend, the CPU default).

The patches of all images are rows of two matrices, ``X1 = u1.view(b1 P, D)`` and ``X2 = u2.view(b2 Q, D)``.
``X1 X2ᵀ`` is computed in column chunks of whole x2 images (``CHUNK_ELEMENTS`` entries at most, so peak
memory stays bounded) and each chunk is reduced at once over each image's Q columns:

* ``maxmean``: max and first argmax per (x1 patch, x2 image);
* ``softmaxmean``: per (x1 patch, x2 image) the row max ``mx``, ``log sum_j exp((sim_j - mx) / T)``
  and the smooth max ``f`` — shifting by the max before dividing by ``T`` keeps tiny temperatures
  finite (``T`` is raised to the smallest normal number of the compute dtype, where ``1/T`` is finite,
  and lowered to its inverse, where ``1/T`` is not 0).

Saved statistics are image-major, ``[b2, b1 P]`` (one contiguous row per x2 image). The backward of
``maxmean`` is two sparse sums written as ``embedding_bag`` (BLAS-free, deterministic, O(b1 P b2 D)):
dx1 gathers the argmax rows of X2, dx2 gathers rows of X1 through the argmax sorted by column (a CSR
inverse). ``softmaxmean``'s backward forms the dense weight ``dS = c p (1 + (sim - f) / T)`` one chunk
at a time (a GEMM recomputes sim once) and applies it with two more GEMMs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_ELEMENTS = 1 << 24  # similarities per chunk: 64 MiB in float32 (large GEMMs: the BLAS packs operands per call)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


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


def _sim_chunk(X1, X2, r0, r1, m0, m1, Q, mask2) -> torch.Tensor:
    """[r1 - r0, m1 - m0, Q] similarities, masked x2 patches at -inf."""
    sim = (X1[r0:r1] @ X2[m0 * Q:m1 * Q].t()).view(r1 - r0, m1 - m0, Q)
    if mask2 is not None:
        sim.masked_fill_(~mask2[None, m0:m1], float("-inf"))
    return sim


def patch_similarity_torch_fwd(u1, u2, mask1, mask2, inv_count, reduce: str, temperature: float):
    """u1 [b1, P, D], u2 [b2, Q, D] -> s [b1, b2] (float32; float64 for float64), aux_a, aux_b (``empty_stats``).

    The maxmean argmax is Q at padded patches of x1 (they give no gradient)."""
    (b1, P, D), (b2, Q, _) = u1.shape, u2.shape
    acc = acc_dtype(u1.dtype)
    X1, X2 = u1.reshape(b1 * P, D).to(acc), u2.reshape(b2 * Q, D).to(acc)
    aux_a, aux_b = empty_stats(reduce, b2, b1 * P, acc, u1.device)
    per_patch = torch.empty(b2, b1 * P, dtype=acc, device=u1.device) if reduce == "maxmean" else aux_b
    inv_t = inverse_temperature(temperature, acc)
    for r0, r1, m0, m1 in image_chunks(b1, P, b2, Q, CHUNK_ELEMENTS):
        sim = _sim_chunk(X1, X2, r0, r1, m0, m1, Q, mask2)
        if reduce == "maxmean":
            best, j = sim.max(dim=-1)  # first index on ties
            per_patch[m0:m1, r0:r1] = best.t()
            aux_a[m0:m1, r0:r1] = j.t().to(torch.int32)
            continue
        mx = sim.amax(dim=-1)  # finite: every x2 image has a real patch
        d = sim.sub_(mx[..., None])  # <= 0, -inf at masked patches
        p = torch.exp(d * inv_t)
        total = p.sum(-1)
        smooth = mx + (p * d.clamp_(min=torch.finfo(acc).min)).sum(-1) / total  # 0 * finite at masked
        aux_a[0, m0:m1, r0:r1] = mx.t()
        aux_a[1, m0:m1, r0:r1] = total.log().t()
        aux_b[m0:m1, r0:r1] = smooth.t()
    if reduce == "maxmean" and mask1 is not None:
        aux_a.masked_fill_(~mask1.reshape(1, -1), Q)
    return mean_over_patches(per_patch, inv_count, mask1, b1, P), aux_a, aux_b


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


def patch_similarity_torch_bwd(grad_s, u1, u2, mask1, mask2, inv_count, aux_a, aux_b, reduce: str,
                               temperature: float):
    """grad_s [b1, b2] -> du1 [b1, P, D], du2 [b2, Q, D] (dtypes of u1, u2)."""
    (b1, P, D), (b2, Q, _) = u1.shape, u2.shape
    acc = acc_dtype(u1.dtype)
    X1, X2 = u1.reshape(b1 * P, D).to(acc), u2.reshape(b2 * Q, D).to(acc)
    c = row_coefficients(grad_s, inv_count, mask1, P, acc)  # [b2, b1 P]
    if reduce == "maxmean":
        R1 = b1 * P
        cols = aux_a.long().clamp_max(Q - 1) + torch.arange(b2, device=u1.device)[:, None] * Q  # [b2, R1]
        du1 = F.embedding_bag(cols.t(), X2, per_sample_weights=c.t(), mode="sum")
        order, offsets = argmax_csr_torch(aux_a, Q)
        bags = F.embedding_bag(order % R1, X1, offsets[:-1], per_sample_weights=c.reshape(-1)[order], mode="sum")
        du2 = bags.view(b2, Q + 1, D)[:, :Q].contiguous()
        return du1.view(b1, P, D).to(u1.dtype), du2.view(b2, Q, D).to(u2.dtype)
    du1, du2 = softmax_backward(X1, X2, b1, P, b2, Q,
                                lambda r0, r1, m0, m1: softmax_weights_torch(X1, X2, c, aux_a, aux_b, mask2, r0, r1,
                                                                             m0, m1, Q, temperature))
    return du1.view(b1, P, D).to(u1.dtype), du2.view(b2, Q, D).to(u2.dtype)


def softmax_weights_torch(X1, X2, c, stats, smooth, mask2, r0, r1, m0, m1, Q, temperature) -> torch.Tensor:
    """dS [r1 - r0, (m1 - m0) Q] = c p (1 + (sim - f) / T) with p = exp((sim - mx) / T - logsum); 0 at masked."""
    inv_t = inverse_temperature(temperature, X1.dtype)
    sim = _sim_chunk(X1, X2, r0, r1, m0, m1, Q, mask2)
    mx, log_total = stats[0, m0:m1, r0:r1].t()[..., None], stats[1, m0:m1, r0:r1].t()[..., None]
    d = sim.sub_(mx).clamp_(max=0.0)  # a recomputed sim an ulp above the forward's max must not give p > 1
    p = torch.exp(d * inv_t - log_total)
    f = smooth[m0:m1, r0:r1].t()[..., None] - mx
    w = torch.where(p > 0, p * (1 + (d - f) * inv_t), 0.0) * c[m0:m1, r0:r1].t()[..., None]
    return w.view(r1 - r0, -1)


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
