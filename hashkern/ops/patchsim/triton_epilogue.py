"""Triton epilogue of the GEMM-then-reduce forward of patch similarity (the ``"gemm"`` forward, maxmean only).

The similarities of a chunk of rows of ``X1 [R1 = b1 P, D]`` against whole x2 images are computed by the
BLAS (cuBLAS on CUDA, fp32 output for every input dtype); this pass reduces each x2 image's ``Q`` columns
of the chunk to what the fused forward (``triton_kernels.py``) writes for maxmean: per (x2 image m, x1 patch r)
the max and its first argmax (Q at padded x1 patches). One program owns ``BLOCK_M`` rows and one image,
whose ``Q <= BLOCK_Q`` columns it reads at once. softmaxmean keeps the fused forward: its backward recomputes
the similarities with that kernel's tile GEMM, and at tiny temperatures one ulp between the two GEMMs turns a
weight of 1 into 0.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _patch_similarity_epilogue_kernel(
    sim_ptr,               # [rows, images Q] ACC, contiguous: X1[r0:r0 + rows] . X2[m0 Q:(m0 + images) Q]
    mask1_ptr, mask2_ptr,  # [R1], [b2 Q] int8, 1 = real patch (read only with HAS_MASK1 / HAS_MASK2)
    value_ptr,             # [b2, R1] out: max over the image's real patches
    argmax_ptr,            # [b2, R1] int32 out: first argmax j (Q at padded x1 patches)
    r0, rows, m0, images, R1, Q,
    HAS_MASK1: tl.constexpr, HAS_MASK2: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_Q: tl.constexpr,
):
    pid = tl.program_id(0)
    k = pid % images  # the image within the chunk
    local = (pid // images).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = local < rows
    j = tl.arange(0, BLOCK_Q)
    col_ok = j < Q
    m = (m0 + k).to(tl.int64)
    if HAS_MASK2:
        col_ok = col_ok & (tl.load(mask2_ptr + m * Q + j, mask=col_ok, other=0) != 0)
    ok = row_ok[:, None] & col_ok[None, :]
    sim = tl.load(sim_ptr + local[:, None] * (tl.cast(images, tl.int64) * Q) + (k * Q + j)[None, :], mask=ok,
                  other=float("-inf")).to(ACC)
    rows_global = r0 + local
    out = m * R1 + rows_global
    best = tl.max(sim, axis=1)
    first = tl.min(tl.where(ok & (sim == best[:, None]), j[None, :], Q), axis=1)
    if HAS_MASK1:
        first = tl.where(tl.load(mask1_ptr + rows_global, mask=row_ok, other=0) != 0, first, Q)
    tl.store(value_ptr + out, best, mask=row_ok)
    tl.store(argmax_ptr + out, first.to(tl.int32), mask=row_ok)
