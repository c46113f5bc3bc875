"""sorted_cosine and soft_sort_gather forward+backward vs the naive SoftSort (eager and torch.compile).

Run: ``python -m benchmarks.bench_softsort [--quick] [--device cpu|cuda|all]``.
Writes benchmarks/results/soft_sort_<device>.md.
"""
from __future__ import annotations

import torch

from benchmarks._runner import format_bytes, format_ms, measure, run_tables
from hashkern.ops.softsort import soft_sort_gather, sorted_cosine
from hashkern.ops.softsort.reference import soft_sort_gather_reference, sorted_cosine_reference

TAU = 0.1
GATHER_ROWS = 128  # anchors of the soft_sort_gather rows (E is [rows, n, d])
TOL = {torch.float32: 2e-3, torch.bfloat16: 5e-2}  # fp32 may run on tf32 tensor cores on CUDA


def sizes(device: torch.device, quick: bool):
    """(n, d, dtype) rows; the CPU rows stay small (the naive version is O(n^3) in time and memory)."""
    if quick:
        return [(64, 32, torch.float32)]
    if device.type == "cuda":
        return [(n, d, dtype) for dtype in (torch.float32, torch.bfloat16) for d in (64, 128, 256)
                for n in (256, 512, 1024, 2048, 4096, 8192)]
    return [(n, 64, torch.float32) for n in (64, 128, 256)]


def _naive_fits(n: int, d: int, device: torch.device) -> bool:
    """The naive version keeps ~4 [n, n, n] fp32 tensors alive in the backward."""
    if device.type != "cuda":
        return n <= 256
    return 4 * 4 * n ** 3 < 0.8 * torch.cuda.get_device_properties(device).total_memory


def _time_variants(variants, inputs, grad, device, check_tol):
    """[(name, ms, peak bytes | error text)] for fn(*inputs) forward+backward, each checked first."""
    results, expected = [], None
    for name, fn in variants:
        if fn is None:
            results.append((name, None, "skipped: the [n, n, n] tensors do not fit"))
            continue
        try:
            with torch.no_grad():
                out = fn(*inputs).float()
            if expected is None:
                expected = out
            elif not torch.allclose(out, expected, atol=check_tol, rtol=0):
                raise AssertionError(f"disagrees with the naive version by {(out - expected).abs().max().item():.2e}")
            step = lambda: torch.autograd.grad(fn(*inputs), inputs, grad)  # noqa: E731
            ms, peak = measure(step, device)
            results.append((name, ms, peak))
        except (RuntimeError, AssertionError) as error:  # OOM of the naive version is a result, not a crash
            results.append((name, None, f"failed: {type(error).__name__}"))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return results


def _rows(op, n, d, dtype, results):
    """Table rows; the speed-up is against naive eager (the first row) when it ran."""
    rows, baseline = [], None
    dtype_name = str(dtype).replace("torch.", "")
    for i, (name, ms, peak) in enumerate(results):
        if ms is None:
            rows.append([op, n, d, dtype_name, name, peak, "—", "—"])
            continue
        baseline = ms if i == 0 else baseline
        speedup = "—" if baseline is None else f"{baseline / ms:.2f}×"
        rows.append([op, n, d, dtype_name, name, format_ms(ms), speedup, format_bytes(peak)])
    return rows


def run(device: torch.device, quick: bool):
    rows = []
    backend = "triton" if device.type == "cuda" else "torch"
    naive_cos = lambda s, z1, z2: sorted_cosine_reference(s, z1, z2, TAU)  # noqa: E731
    naive_gather = lambda s, v: soft_sort_gather_reference(s, v, TAU)  # noqa: E731
    compiled_cos, compiled_gather = torch.compile(naive_cos), torch.compile(naive_gather)
    for n, d, dtype in sizes(device, quick):
        fits = _naive_fits(n, d, device)
        codes = torch.randint(0, 2, (2, n, 64), device=device).float() * 2 - 1
        s = ((codes[0] @ codes[1].T + 64) / 128).requires_grad_()  # 64-bit Hamming similarities: ties
        z1 = torch.randn(n, d, device=device, dtype=dtype, requires_grad=True)
        z2 = torch.randn(n, d, device=device, dtype=dtype, requires_grad=True)
        results = _time_variants([
            ("naive eager", naive_cos if fits else None),
            ("naive torch.compile", compiled_cos if fits else None),
            (f"hashkern ({backend})", lambda s, z1, z2: sorted_cosine(s, z1, z2, TAU, backend=backend)),
        ], (s, z1, z2), torch.randn(n, n, device=device), device, TOL[dtype])
        rows += _rows("sorted_cosine", n, d, dtype, results)

        b = min(GATHER_ROWS, n)
        sg = s[:b].detach().requires_grad_()
        grad = torch.randn(b, n, d, device=device, dtype=dtype)
        fits = fits and (device.type != "cuda" or 4 * 4 * b * n * n < 0.8 * torch.cuda.get_device_properties(device).total_memory)
        results = _time_variants([
            ("naive eager", naive_gather if fits else None),
            ("naive torch.compile", compiled_gather if fits else None),
            (f"hashkern ({backend})", lambda s, v: soft_sort_gather(s, v, TAU, backend=backend)),
        ], (sg, z1), grad, device, TOL[dtype])
        rows += _rows(f"soft_sort_gather (b={b})", n, d, dtype, results)
        # the yardstick of the issue: one [b*n, n] x [n, d] matmul, forward only (skipped past 8 GiB)
        label = f"one [{b}·{n}, {n}] × [{n}, {d}] matmul"
        if b * n * n * z1.element_size() > 8 << 30:
            rows.append([f"soft_sort_gather (b={b})", n, d, str(dtype).replace("torch.", ""), label,
                         "skipped: the [b·n, n] operand alone exceeds 8 GiB", "—", "—"])
            continue
        a = torch.randn(b * n, n, device=device, dtype=dtype)
        matmul_ms, _ = measure(lambda: a @ z1.detach(), device, memory=False)
        rows.append([f"soft_sort_gather (b={b})", n, d, str(dtype).replace("torch.", ""), label,
                     format_ms(matmul_ms), "—", "—"])
        del a
    return rows


def main(argv=None):
    header = ["op", "n", "d", "dtype", "method", "median ms (fwd+bwd)", "speed-up vs naive eager",
              "peak extra memory"]
    notes = (f"sorted_cosine: c[i, k] = cos((SoftSort(s_i) z1)[k], z2[i]) for all n anchors (tau = {TAU}), then "
             "the gradients of s, z1 and z2. soft_sort_gather: E = SoftSort(s) z1 for b anchors, then the "
             "gradients of s and z1. s holds 64-bit Hamming similarities (heavy ties). Every hashkern result "
             "is checked against the naive one before timing (where the naive one fits); a failed row is "
             "reported, not hidden. Peak extra memory includes the input gradients.")
    return run_tables([("soft_sort", run, header, notes)], __doc__, argv)


if __name__ == "__main__":
    main()
