"""Launchers of the Triton SoftSort: each row takes the grouped or the chunked form.

Same contract as ``torch_impl.softsort_scan_torch_fwd`` / ``_bwd``. As the C++ backend does, a row whose sorted
values take ``g <= n / 2`` distinct values (Hamming similarities: ``g <= K + 1``) runs the grouped
kernels (``triton_grouped_kernels.py``) when its group table fits (``g <= GROUPS_MAX``), every other
row the chunked ones (``triton_chunked_kernels.py``). ``FORMS`` forces one form on every row (tests,
benchmarks); ``"walk"`` runs the earlier position walk (``triton_launch.py``). Choosing needs the
largest group count on the host: one synchronisation per call.

Memory beyond the outputs: the rows' group counts ``[b]``, the per-feature-block partials
``[nb, b, n]`` when ``d`` spans several feature blocks (none when it fits one), and the chunked
form's checkpoints and the grouped form's ``[G, d]`` tables (the gather's forward: 1 per row, the
backward: 3), launched in slices of rows that keep them under ``SCRATCH_BYTES``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from hashkern.ops._device_guard import on_device_of
from hashkern.ops.softsort._common import refuse_shared_atomics_if_deterministic
from hashkern.ops.softsort.triton_chunked_kernels import (
    SCALAR_CHECKPOINTS,
    VECTOR_CHECKPOINTS,
    _softsort_chunked_bwd_kernel,
    _softsort_chunked_fwd_kernel,
)
from hashkern.ops.softsort.triton_grouped_kernels import (
    SCALAR_TABLES,
    _softsort_grouped_bwd_kernel,
    _softsort_grouped_fwd_kernel,
)

FORMS = ("auto", "grouped", "chunked", "walk")
policy = "auto"    # one of FORMS; set through ``use_forms``
GROUPS_MAX = 128   # the widest group table of the grouped form: codes of up to 127 bits
SCRATCH_BYTES = 16 << 20  # the chunked form's checkpoints of one launch


def use_forms(form: str) -> str:
    """Run every row through ``form`` (one of ``FORMS``); returns the previous policy."""
    global policy
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    before, policy = policy, form
    return before


@dataclass(frozen=True)
class FormConfig:
    block_n: int    # grouped: positions per block
    chunk: int      # chunked: positions per chunk (>= 16: a tl.dot operand)
    features: int   # BD: features per program
    num_warps: int
    block_g: int = 32  # grouped: rows of the [G, G] Laplace tables formed at a time (>= 16: a tl.dot operand)
    num_stages: int = 1  # no software pipelining: its prefetched loads live in registers

    def blocks_d(self, d: int) -> int:
        return triton.cdiv(d, self.features)

    def group_rows(self, width: int) -> int:
        """RB: row blocks of the ``[width, width]`` tables."""
        return min(self.block_g, width)


def form_config(n: int, d: int, device: torch.device, dtype: torch.dtype = torch.float32) -> FormConfig:
    """Tiles for ``n`` positions and ``d`` features of ``dtype``. The interpreter (CPU tensors) pays per program
    and per operation, not per element: wide features and large blocks there."""
    if device.type == "cpu":
        return FormConfig(block_n=128, chunk=64, features=max(16, min(triton.next_power_of_2(d), 128)), num_warps=4)
    # 32 positions per block / chunk and 64 features (fp64, two registers an element: 16 and 32), 16 rows per block
    # of the [G, G] tables and no pipelining keep every kernel free of register spills on sm_90 (ptxas -v through
    # tools/aot_specs.py, Triton 3.8 and 3.6.0; benchmarks/notes/softsort.md). Narrower feature tiles for small d
    # spilled more (other layouts), so d < 64 is padded.
    wide = dtype != torch.float64
    return FormConfig(block_n=32 if wide else 16, chunk=32 if wide else 16, features=64 if wide else 32, num_warps=8,
                      block_g=16)


def split_rows(q: torch.Tensor, n: int, form: str | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(grouped rows, chunked rows, G)`` for sorted rows ``q [b, n]``: int64 row lists and the
    group-table width (a power of two >= 16) that the grouped rows need."""
    form = policy if form is None else form
    counts = (q[:, 1:] != q[:, :-1]).sum(1) + 1
    if form == "grouped":
        take = torch.ones_like(counts, dtype=torch.bool)
    elif form == "chunked":
        take = torch.zeros_like(counts, dtype=torch.bool)
    else:
        take = (2 * counts <= n) & (counts <= GROUPS_MAX)
    grouped = take.nonzero().flatten()
    chunked = (~take).nonzero().flatten()
    width = int(counts[grouped].max()) if grouped.numel() else 1
    return grouped, chunked, max(16, triton.next_power_of_2(width))


def _chunk_slices(rows: torch.Tensor, n: int, d: int, cfg: FormConfig, elem: int):
    """Slices of the chunked rows whose checkpoints stay under SCRATCH_BYTES, and ``nchunks``."""
    nchunks, nb = triton.cdiv(n, cfg.chunk), cfg.blocks_d(d)
    per_row = elem * nchunks * (VECTOR_CHECKPOINTS * d + SCALAR_CHECKPOINTS * nb)
    step = max(1, SCRATCH_BYTES // per_row)
    return [rows[i:i + step] for i in range(0, rows.numel(), step)], nchunks


def _table_slices(rows: torch.Tensor, width: int, d: int, nb: int, elem: int, tables: int):
    """Slices of the grouped rows whose scratch stays under SCRATCH_BYTES: ``tables`` x [G, d] tables and
    the [nb, SCALAR_TABLES, G] scalar tables per row."""
    step = max(1, SCRATCH_BYTES // ((tables * d + nb * SCALAR_TABLES) * width * elem))
    return [rows[i:i + step] for i in range(0, rows.numel(), step)]


def _group_scratch(slots: int, width: int, d: int, nb: int, tables: int, like: torch.Tensor):
    """The grouped kernels' scratch: ``[tables, slots, G, d]`` (none: ``like`` stands in) and ``[slots, nb,
    SCALAR_TABLES, G]``."""
    return (like.new_empty(tables, slots, width, d) if tables else like,
            like.new_empty(slots, nb, SCALAR_TABLES, width))


def _checkpoints(slots: int, nchunks: int, d: int, nb: int, kinds: tuple[int, int], like: torch.Tensor):
    return like.new_empty(kinds[0], slots, nchunks, d), like.new_empty(kinds[1], nb, slots, nchunks)


def scan_fwd(q, idx, v, tau, u=None, eps=1e-8):
    if policy == "walk":
        from hashkern.ops.softsort import triton_launch
        return triton_launch.softsort_scan_fwd(q, idx, v, tau, u, eps)
    b, n = q.shape
    d = v.shape[-1]
    cfg = form_config(n, d, q.device, q.dtype)
    shared, cosine = v.shape[0] == 1, u is not None
    nb = cfg.blocks_d(d)
    final = cosine and nb == 1
    out = q.new_empty((b, n) if cosine else (b, n, d))
    norms = q.new_empty(b, n) if cosine else None
    if final:
        ee, eu = norms.view(1, b, n), out.view(1, b, n)
    elif cosine:
        ee, eu = q.new_empty(nb, b, n), q.new_empty(nb, b, n)
    else:
        ee = eu = q
    common = dict(SHARED_V=shared, COSINE=cosine, FINAL=final, BD=cfg.features,
                  IEEE=q.dtype == torch.float64, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    tensors = (q, idx, v, u if cosine else q, q if cosine else out, ee, eu)
    grouped, chunked, width = split_rows(q, n)
    with on_device_of(q):
        tables = 0 if cosine else 1  # the gather's E table
        for rows in _table_slices(grouped, width, d, nb, q.element_size(), tables):
            _softsort_grouped_fwd_kernel[(rows.numel() * nb,)](
                rows, *tensors, *_group_scratch(rows.numel(), width, d, nb, tables, q), b, n, d, rows.numel(), tau,
                eps, G=width, RB=cfg.group_rows(width), BN=cfg.block_n, **common)
        slices, nchunks = _chunk_slices(chunked, n, d, cfg, q.element_size())
        for rows in slices:
            ck, cks = _checkpoints(rows.numel(), nchunks, d, nb, (1, 1), q)  # the right carries only
            _softsort_chunked_fwd_kernel[(rows.numel() * nb,)](
                rows, *tensors, ck, cks, b, n, d, rows.numel(), nchunks, tau, eps, C=cfg.chunk, **common)
    if cosine and not final:
        norms = ee.sum(0).clamp_min_(0).sqrt_()
        out = eu.sum(0) / norms.clamp_min(eps)
    return out, norms


def scan_bwd(q, idx, v, tau, u, eps, grad, c=None, norms=None):
    if policy == "walk":
        from hashkern.ops.softsort import triton_launch
        return triton_launch.softsort_scan_bwd(q, idx, v, tau, u, eps, grad, c, norms)
    b, n = q.shape
    d = v.shape[-1]
    cfg = form_config(n, d, q.device, q.dtype)
    shared, cosine = v.shape[0] == 1, u is not None
    refuse_shared_atomics_if_deterministic(shared, q)
    nb = cfg.blocks_d(d)
    delta = q if cosine else (grad * scan_fwd(q, idx, v, tau)[0]).sum(-1)  # dE.E needs every feature of E
    ds = torch.empty_like(q)
    dsp = ds.view(1, b, n) if nb == 1 else q.new_empty(nb, b, n)
    dv = torch.zeros_like(v) if shared else torch.empty_like(v)  # per-row values: every entry written once
    du = q.new_empty(b, d) if cosine else None
    common = dict(SHARED_V=shared, COSINE=cosine, BD=cfg.features, IEEE=q.dtype == torch.float64,
                  num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    tensors = (q, idx, v, u if cosine else q, grad, c if cosine else q, norms if cosine else q, delta, dsp, dv,
               du if cosine else q)
    grouped, chunked, width = split_rows(q, n)
    with on_device_of(q):
        for rows in _table_slices(grouped, width, d, nb, q.element_size(), 3):
            _softsort_grouped_bwd_kernel[(rows.numel() * nb,)](
                rows, *tensors, *_group_scratch(rows.numel(), width, d, nb, 3, q), b, n, d, rows.numel(), tau, eps,
                G=width, RB=cfg.group_rows(width), BN=cfg.block_n, **common)
        slices, nchunks = _chunk_slices(chunked, n, d, cfg, q.element_size())
        for rows in slices:
            ck, cks = _checkpoints(rows.numel(), nchunks, d, nb, (VECTOR_CHECKPOINTS, SCALAR_CHECKPOINTS), q)
            _softsort_chunked_bwd_kernel[(rows.numel() * nb,)](
                rows, *tensors, ck, cks, b, n, d, rows.numel(), nchunks, tau, eps, C=cfg.chunk, **common)
    if nb > 1:
        ds = dsp.sum(0)
    return ds, dv, du
