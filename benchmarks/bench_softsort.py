"""sorted_cosine and soft_sort_gather forward+backward: hashkern's scans vs SoftSort's definition.

Baselines, in the same run: the definition in plain PyTorch (eager and torch.compile; it holds
``[n, n, n]`` tensors, so only where they fit), and the definition evaluated in chunks of
anchors with activation checkpointing (memory-bounded, O(n^3 d) time: what SoftSort libraries,
and hashkern before the scans, do). Run: ``python -m benchmarks.bench_softsort [--quick]
[--device cpu|cuda|all]``; writes benchmarks/results/soft_sort_<device>.md.
"""
from __future__ import annotations

import contextlib

import torch
from torch.utils.checkpoint import checkpoint

from benchmarks._runner import format_bytes, format_ms, measure, report_target, run_tables
from hashkern.ops.softsort import soft_sort_gather, sorted_cosine
from hashkern.ops.softsort.reference import cosine_rows, soft_sort_gather_reference, sorted_cosine_reference

TAU = 0.005  # the setting: 64-bit similarities move in steps of 1/64
BITS = 64
GATHER_ROWS = 128  # anchors of the soft_sort_gather rows (E is [rows, n, d])
CHUNK_ANCHORS = 16  # anchors per chunk of the chunked definition
TOL = {torch.float32: 2e-3, torch.bfloat16: 5e-2}
# (what, n, target ms, device type): the goals, reported beside the measured value
TARGETS = [("sorted_cosine fwd+bwd, d = 128, fp32", 8192, 15_000.0, "cpu"),
           ("sorted_cosine fwd+bwd, d = 128, fp32", 1024, 1.0, "cuda"),
           ("sorted_cosine fwd+bwd, d = 128, fp32", 8192, 10.0, "cuda")]


def sizes(device: torch.device, quick: bool):
    """(n, d, dtype) rows of sorted_cosine."""
    if quick:
        return [(64, 32, torch.float32)]
    if device.type == "cuda":
        return [(n, 128, dtype) for dtype in (torch.float32, torch.bfloat16) for n in (1024, 2048, 4096, 8192)]
    return [(256, 128, torch.float32), (1024, 128, torch.float32), (8192, 128, torch.float32)]


def _dense_fits(n: int, rows: int, device: torch.device) -> bool:
    """The definition keeps ~4 [rows, n, n] fp32 tensors alive in the backward."""
    if device.type != "cuda":
        return n <= 256
    return 4 * 4 * rows * n * n < 0.5 * torch.cuda.get_device_properties(device).total_memory


def _chunked_fits(n: int, device: torch.device) -> bool:
    return n <= (1024 if device.type == "cpu" else 8192)


def cosine_definition_in_chunks(s, z1, z2):
    """SoftSort's definition, CHUNK_ANCHORS anchors at a time, each chunk recomputed in the backward."""
    def rows(s_rows, z1, z2_rows):
        return cosine_rows(soft_sort_gather_reference(s_rows, z1, TAU), z2_rows)
    return torch.cat([checkpoint(rows, s[r:r + CHUNK_ANCHORS], z1, z2[r:r + CHUNK_ANCHORS], use_reentrant=False)
                      for r in range(0, s.shape[0], CHUNK_ANCHORS)])


@contextlib.contextmanager
def cpu_grouping(use: str):
    """The C++ kernel's choice between the grouped kernel and the position scans, for a variant's calls."""
    before = torch.ops.hashkern._softsort_groups("")
    torch.ops.hashkern._softsort_groups(use)
    try:
        yield
    finally:
        torch.ops.hashkern._softsort_groups(before)


def _time_variants(variants, inputs, grad, device, check_tol, slow_n):
    """[(name, ms, peak bytes | why not)] for fn(*inputs) forward+backward, each checked against the
    first; a variant (name, fn, scope) runs inside the context manager scope."""
    results, expected = [], None
    for i, (name, fn, *scope) in enumerate(variants):
        if isinstance(fn, str):  # why this variant is not run at this size
            results.append((name, None, f"skipped: {fn}"))
            continue
        try:
            with scope[0] if scope else contextlib.nullcontext():
                with torch.no_grad():
                    out = fn(*inputs).float()
                if expected is None:
                    expected = out
                elif not torch.allclose(out, expected, atol=check_tol, rtol=0):
                    raise AssertionError("disagrees with the first variant by "
                                         f"{(out - expected).abs().max().item():.2e}")
                step = lambda: torch.autograd.grad(fn(*inputs), inputs, grad)  # noqa: E731
                runs = (3 if i == len(variants) - 1 else 1) if slow_n else 5  # baselines there take ~40 s a call
                ms, peak = measure(step, device, min_runs=runs, budget_s=0.0 if slow_n else 2.0)
            results.append((name, ms, peak))
        except (RuntimeError, AssertionError) as error:  # OOM of a baseline is a result, not a crash
            results.append((name, None, f"failed: {type(error).__name__}"))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return results


def _position_scans_variant(device, fn):
    """On the CPU, hashkern with its grouped kernel off: every row runs the position scans, the
    kernel for similarities with many distinct values."""
    return [("hashkern (C++), position scans only", fn, cpu_grouping("never"))] if device.type == "cpu" else []


def _rows(op, n, d, dtype, results):
    """Table rows; the speed-up is hashkern's (last row) over each baseline that ran."""
    ours = results[-1][1]
    rows = []
    for name, ms, peak in results:
        speed = "—" if ms is None or ours is None else f"{ms / ours:.1f}×"
        rows.append([op, n, d, str(dtype).replace("torch.", ""), name,
                     format_ms(ms) if ms is not None else peak, speed, format_bytes(peak) if ms is not None else "—"])
    return rows


def _report(device, n, results):
    for what, target_n, target_ms, kind in TARGETS:
        if kind == device.type and target_n == n and results[-1][1] is not None:
            ms = results[-1][1]
            report_target("bench_softsort", f"{what}, n = {n}", f"<= {format_ms(target_ms)} ms",
                          f"{format_ms(ms)} ms", ms <= target_ms)


def run(device: torch.device, quick: bool):
    rows = []
    ours = "hashkern (triton)" if device.type == "cuda" else "hashkern (C++)"
    backend = "triton" if device.type == "cuda" else "cpu"
    dense = lambda s, z1, z2: sorted_cosine_reference(s, z1, z2, TAU)  # noqa: E731
    compiled = torch.compile(dense)
    for n, d, dtype in sizes(device, quick):
        codes = torch.randint(0, 2, (2, n, BITS), device=device).float() * 2 - 1
        s = ((codes[0] @ codes[1].T + BITS) / (2 * BITS)).requires_grad_()  # Hamming similarities: ties
        z1 = torch.randn(n, d, device=device, dtype=dtype, requires_grad=True)
        z2 = torch.randn(n, d, device=device, dtype=dtype, requires_grad=True)
        fits = _dense_fits(n, n, device)
        too_big = "its [n, n, n] tensors do not fit in memory"
        too_long = "O(n^3 d): ~n^3/1024^3 times the n = 1024 row"
        results = _time_variants([
            ("definition, eager", dense if fits else too_big),
            ("definition, torch.compile", compiled if fits else too_big),
            (f"definition in chunks of {CHUNK_ANCHORS} anchors",
             cosine_definition_in_chunks if _chunked_fits(n, device) else too_long),
            *_position_scans_variant(device, lambda s, z1, z2: sorted_cosine(s, z1, z2, TAU, backend=backend)),
            (ours, lambda s, z1, z2: sorted_cosine(s, z1, z2, TAU, backend=backend)),
        ], (s, z1, z2), torch.randn(n, n, device=device), device, TOL[dtype], slow_n=n >= 1024 and device.type == "cpu")
        rows += _rows("sorted_cosine", n, d, dtype, results)
        _report(device, n, results)
        if n > 1024:
            continue
        b = min(GATHER_ROWS, n)
        sg = s[:b].detach().requires_grad_()
        grad = torch.randn(b, n, d, device=device, dtype=dtype)
        gather = lambda s, v: soft_sort_gather_reference(s, v, TAU)  # noqa: E731
        results = _time_variants([
            ("definition, eager",
             gather if _dense_fits(n, b, device) else "its [b, n, n] tensors do not fit in memory"),
            *_position_scans_variant(device, lambda s, v: soft_sort_gather(s, v, TAU, backend=backend)),
            (ours, lambda s, v: soft_sort_gather(s, v, TAU, backend=backend)),
        ], (sg, z1), grad, device, TOL[dtype], slow_n=False)
        rows += _rows(f"soft_sort_gather (b={b})", n, d, dtype, results)
    return rows


def main(argv=None):
    header = ["op", "n", "d", "dtype", "method", "median ms (fwd+bwd)", "hashkern's speed-up", "peak extra memory"]
    notes = (f"sorted_cosine: c[i, k] = cos((SoftSort(s_i) z1)[k], z2[i]) for all n anchors (tau = {TAU}), then "
             "the gradients of s, z1 and z2. soft_sort_gather: E = SoftSort(s) z1 for b anchors, then the "
             f"gradients of s and z1. s holds {BITS}-bit Hamming similarities (heavy ties). hashkern computes "
             "the same function by Laplace scans, O(n^2 d) per batch instead of O(n^3 d). On the CPU a row "
             f"whose similarities take g <= n / 2 distinct values (here at most {BITS + 1}) runs the grouped "
             "kernel: the scans run over the g tie groups and the n x d work is one pass over z1 forward "
             "and two backward (z1, then z1 and dz1 together); the 'position scans only' row turns it off, "
             "which is what similarities with many distinct values cost. Every result is "
             "checked against the first variant that ran before timing. At n >= 1024 on the CPU, hashkern's "
             "rows are the median of 3 timed calls after a warm-up, the baselines' one call. Peak extra "
             "memory includes the input gradients.")
    return run_tables([("soft_sort", run, header, notes)], __doc__, argv)


if __name__ == "__main__":
    main()
