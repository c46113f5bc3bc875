"""patch_similarity forward+backward vs the naive [b, b, P, P] PyTorch version (eager and torch.compile).

Run: ``python -m benchmarks.bench_patchsim [--quick] [--device cpu|cuda|all]``.
Writes benchmarks/results/patch_similarity_<device>.md.
"""
from __future__ import annotations

import torch

from benchmarks._runner import format_bytes, format_ms, measure, run_tables
from hashkern.ops.patchsim import patch_similarity, patch_similarity_reference

# per-dtype tolerance of hashkern's s against the naive s (fp32 runs on tf32 tensor cores on CUDA)
TOL = {torch.float32: 5e-3, torch.bfloat16: 5e-2}


def sizes(device: torch.device, quick: bool):
    """(b, P, D, dtype) rows: the issue's sizes, and the demo's own (hashkern/training/demo.py: a small ViT on 28 x 28
    images, patch 7 -> P = 16, D = 64, batch 64 on the CPU; patch 4 -> P = 49, D = 192, batch 128 on a GPU).
    The naive version is O(b² P² D) in time and b² P² in memory, so the CPU rows stop at b = 128."""
    if quick:
        return [(4, 49, 64, torch.float32)]
    if device.type == "cuda":
        return [(b, P, D, dtype) for P, D in ((49, 512), (196, 768)) for dtype in (torch.float32, torch.bfloat16)
                for b in (32, 64, 128, 256, 512)] + [(128, 49, 192, torch.float32), (128, 49, 192, torch.bfloat16)]
    return [(64, 16, 64, torch.float32), (128, 49, 192, torch.float32)] + \
        [(b, 49, 512, torch.float32) for b in (64, 128)]


def forward_backward(fn, x1, x2, grad):
    """One training step of the op: s = fn(x1, x2), then both input gradients."""
    s = fn(x1, x2)
    return torch.autograd.grad(s, (x1, x2), grad)


def run(device: torch.device, quick: bool):
    rows = []
    backends = ["torch", "triton"] if device.type == "cuda" else ["torch"]
    for b, P, D, dtype in sizes(device, quick):
        # a fresh compile per size: past dynamo's recompile limit it would silently run eager
        torch._dynamo.reset()
        compiled_naive = torch.compile(patch_similarity_reference)
        x1 = torch.randn(b, P, D, device=device, dtype=dtype, requires_grad=True)
        x2 = torch.randn(b, P, D, device=device, dtype=dtype, requires_grad=True)
        grad = torch.randn(b, b, device=device, dtype=torch.float32)
        dtype_name = str(dtype).replace("torch.", "")
        variants = [
            ("naive eager", lambda a, c: patch_similarity_reference(a, c).float()),
            ("naive torch.compile", lambda a, c: compiled_naive(a, c).float()),
        ] + [(f"hashkern ({name})", lambda a, c, name=name: patch_similarity(a, c, backend=name)) for name in backends]
        grads_bytes = x1.nbytes + x2.nbytes
        checked = None
        baseline_ms = None
        for name, fn in variants:
            try:
                if checked is None or name.startswith("hashkern"):
                    with torch.no_grad():
                        s = fn(x1, x2)
                    if checked is None:
                        checked = s
                    elif not torch.allclose(s, checked, atol=TOL[dtype], rtol=0):
                        raise AssertionError(f"hashkern disagrees with the naive version by "
                                             f"{(s - checked).abs().max().item():.2e}")
                ms, peak = measure(lambda: forward_backward(fn, x1, x2, grad), device)
            except (RuntimeError, AssertionError) as error:  # OOM of the naive version is a result, not a crash
                rows.append([b, P, D, dtype_name, name, f"failed: {type(error).__name__}", "—", "—", "—"])
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            baseline_ms = ms if name == "naive eager" else baseline_ms
            speedup = "—" if baseline_ms is None else f"{baseline_ms / ms:.1f}×"  # naive eager failed (e.g. OOM)
            rows.append([b, P, D, dtype_name, name, format_ms(ms), speedup, format_bytes(peak),
                         format_bytes(max(peak - grads_bytes, 0))])
    return rows


def main(argv=None):
    header = ["b", "P", "D", "dtype", "method", "median ms (fwd+bwd)", "speed-up vs naive eager", "peak extra memory",
              "beyond input grads"]
    notes = ("Op: s[n, m] = mean_i max_j cos(x1[n, i], x2[m, j]) over all b × b image pairs (reduce='maxmean'), "
             "then the gradients of both inputs. Peak extra memory includes the two input gradients; the last "
             "column leaves them out (the issue's budget: <= 0.5 GiB at b = 256, P = 196, D = 768). "
             "Every result is checked against the first method that ran (the naive version) before timing; "
             "a failed row (e.g. out of memory) is reported, not hidden.")
    return run_tables([("patch_similarity", run, header, notes)], __doc__, argv)


if __name__ == "__main__":
    main()
