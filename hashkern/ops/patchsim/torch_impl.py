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

from hashkern.ops.patchsim._common import (
    CHUNK_ELEMENTS,
    acc_dtype,
    argmax_csr_torch,
    empty_stats,
    image_chunks,
    inverse_temperature,
    mean_over_patches,
    row_coefficients,
    softmax_backward,
)


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
