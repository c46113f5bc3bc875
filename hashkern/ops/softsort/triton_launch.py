"""Launchers of the Triton SoftSort scans (kernels in ``triton_kernels.py``; cost model in
``benchmarks/notes/softsort.md``).

Same contract as ``torch_impl.softsort_scan_torch_fwd`` / ``_bwd``. Rows are launched in slices whose
checkpoints and scratch stay under ``SCRATCH_BYTES``; within a slice one flat grid axis covers
(row block, feature block).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton

from hashkern.ops._device_guard import on_device_of
from hashkern.ops.softsort._common import cosine_grad_coefficients, refuse_shared_atomics_if_deterministic
from hashkern.ops.softsort.triton_kernels import _softsort_scan_bwd_kernel, _softsort_scan_fwd_kernel

SCRATCH_BYTES = 256 << 20  # checkpoints + scratch + partials of one launch


@dataclass(frozen=True)
class ScanConfig:
    rows: int      # BA: rows (anchors) per program
    features: int  # BD: features per program
    chunk: int     # positions between checkpoints
    num_warps: int  # forward

    def num_warps_bwd(self, cosine: bool, dtype: torch.dtype) -> int:
        """The backward keeps ~3x the forward's live tiles; 8 warps (fewer registers per thread) keep
        the cosine and fp64 variants spill-free on sm_90, 4 the fp32 gather (ptxas -v, tools/aot_specs.py)."""
        return 8 if cosine or dtype == torch.float64 else 4

    def blocks_d(self, d: int) -> int:
        return triton.cdiv(d, self.features)


def scan_config(n: int, d: int, device: torch.device) -> ScanConfig:
    """Tiles for ``n`` positions and ``d`` features. ``chunk ~ sqrt(2 n)`` balances the
    ``n / chunk`` checkpoints against the ``chunk`` rows of scratch. The interpreter (CPU tensors)
    gets wide tiles: it pays per program, not per element."""
    chunk = min(max(16, triton.next_power_of_2(math.isqrt(2 * n))), 128)
    if device.type == "cpu":
        return ScanConfig(rows=64, features=min(triton.next_power_of_2(d), 128), chunk=chunk, num_warps=4)
    return ScanConfig(rows=16, features=max(16, min(triton.next_power_of_2(d), 32)), chunk=chunk, num_warps=4)


def _row_slices(b: int, n: int, d: int, cfg: ScanConfig, elem: int):
    nchunks = triton.cdiv(n, cfg.chunk)
    per_row = elem * (2 * nchunks * d + cfg.chunk * d + cfg.blocks_d(d) * (2 * nchunks + cfg.chunk + 2 * n))
    step = max(cfg.rows, (SCRATCH_BYTES // per_row) // cfg.rows * cfg.rows)
    for r0 in range(0, b, step):
        yield r0, min(b, r0 + step)


def _scratch(rows: int, n: int, d: int, cfg: ScanConfig, like: torch.Tensor):
    nchunks, nb = triton.cdiv(n, cfg.chunk), cfg.blocks_d(d)
    new = like.new_empty
    return dict(ck=(new(rows, nchunks, d), new(nb, rows, nchunks)),
                loc=(new(rows, cfg.chunk, d), new(nb, rows, cfg.chunk)),
                nchunks=nchunks, nb=nb)


def softsort_scan_fwd(q, idx, v, tau, u=None, eps=1e-8):
    b, n = q.shape
    d = v.shape[-1]
    cfg = scan_config(n, d, q.device)
    shared, cosine = v.shape[0] == 1, u is not None
    out = q.new_empty((b, n) if cosine else (b, n, d))
    norms = q.new_empty(b, n) if cosine else None
    with on_device_of(q):
        for r0, r1 in _row_slices(b, n, d, cfg, q.element_size()):
            rows = r1 - r0
            sc = _scratch(rows, n, d, cfg, q)
            pee = q.new_empty(sc["nb"], rows, n) if cosine else q
            peu = q.new_empty(sc["nb"], rows, n) if cosine else q
            grid = (triton.cdiv(rows, cfg.rows) * sc["nb"],)
            _softsort_scan_fwd_kernel[grid](
                q[r0:r1], idx[r0:r1], v if shared else v[r0:r1], u[r0:r1] if cosine else q,
                q if cosine else out[r0:r1], pee, peu, *sc["ck"], *sc["loc"],
                rows, n, d, cfg.chunk, sc["nchunks"], tau,
                SHARED_V=shared, COSINE=cosine, BA=cfg.rows, BD=cfg.features, num_warps=cfg.num_warps)
            if cosine:
                norms[r0:r1] = pee.sum(0).clamp_min_(0).sqrt_()
                out[r0:r1] = peu.sum(0) / norms[r0:r1].clamp_min(eps)
    return out, norms


def softsort_scan_bwd(q, idx, v, tau, u, eps, grad, c=None, norms=None):
    b, n = q.shape
    d = v.shape[-1]
    cfg = scan_config(n, d, q.device)
    shared, cosine = v.shape[0] == 1, u is not None
    refuse_shared_atomics_if_deterministic(shared, q)
    if cosine:
        alpha, beta, delta, du_coef = cosine_grad_coefficients(grad, c, norms, eps)
    else:  # delta = dE.E needs all features of E: rebuilt by the forward kernel
        alpha = beta = du_coef = q
        delta = (grad * softsort_scan_fwd(q, idx, v, tau)[0]).sum(-1)
    ds = torch.empty_like(q)
    dv = torch.zeros_like(v)
    du = q.new_empty(b, d) if cosine else None
    with on_device_of(q):
        for r0, r1 in _row_slices(b, n, d, cfg, q.element_size()):
            rows = r1 - r0
            sc = _scratch(rows, n, d, cfg, q)
            left = (q.new_empty(rows, sc["nchunks"], d), q.new_empty(sc["nb"], rows, sc["nchunks"]))
            dsp = q.new_empty(sc["nb"], rows, n)
            grid = (triton.cdiv(rows, cfg.rows) * sc["nb"],)
            sl = slice(r0, r1)
            _softsort_scan_bwd_kernel[grid](
                q[sl], idx[sl], v if shared else v[sl], u[sl] if cosine else q,
                q if cosine else grad[sl], *(x[sl] if cosine else q for x in (alpha, beta, du_coef)), delta[sl],
                dsp, dv if shared else dv[sl], du[sl] if cosine else q, *sc["ck"], *left, *sc["loc"],
                rows, n, d, cfg.chunk, sc["nchunks"], tau,
                SHARED_V=shared, COSINE=cosine, BA=cfg.rows, BD=cfg.features,
                num_warps=cfg.num_warps_bwd(cosine, q.dtype))
            ds[sl].scatter_(1, idx[sl], (dsp.sum(0).double() / tau).to(q.dtype))
    return ds, dv, du
