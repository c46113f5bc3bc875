"""patch_similarity forward+backward vs the naive [b, b, P, P] PyTorch version (eager and torch.compile).

Run: ``python -m benchmarks.bench_patchsim [--quick] [--device cpu|cuda|all]``.
Writes benchmarks/results/patch_similarity_<device>.md.
"""
from __future__ import annotations

import torch

from benchmarks._runner import format_bytes, format_ms, measure, report_target, run_tables
from hashkern.ops.patchsim import patch_similarity, patch_similarity_reference

# per-dtype tolerance of hashkern's s against the naive s (fp32 runs on tf32 tensor cores on CUDA)
TOL = {torch.float32: 5e-3, torch.bfloat16: 5e-2}
NAIVE_MAX_PAIRS = 64 * 64 * 49 * 49  # the naive version's [b, b, P, P] above this is not run in gpu-check mode
# (b, P, D): the goals for maxmean fwd+bwd in bf16, and the cost model's predictions
# (benchmarks/notes/patchsim.md) for the fused forward and the GEMM + epilogue forward, in ms on an H100
GOALS = {(256, 196, 768): 12.0, (512, 49, 512): 4.0}
PREDICTED_MS = {(256, 196, 768): {"fused": "20-24", "gemm": "13-17"},
                (512, 49, 512): {"fused": "7-8", "gemm": "5-7"}}


def sizes(device: torch.device, mode: str):
    """(b, P, D, dtype) rows: the issue's sizes, and the demo's own (hashkern/training/demo.py: a small ViT on
    28 x 28
    images, patch 7 -> P = 16, D = 64, batch 64 on the CPU; patch 4 -> P = 49, D = 192, batch 128 on a GPU).
    The naive version is O(b² P² D) in time and b² P² in memory, so the CPU rows stop at b = 128."""
    if mode in ("quick", "tiny"):
        return [(4, 49, 64, torch.float32)]
    if mode == "gpu-check":  # the goal sizes, and one small size where the naive version still runs
        return [(64, 49, 512, torch.bfloat16), (512, 49, 512, torch.bfloat16), (256, 196, 768, torch.bfloat16)]
    if device.type == "cuda":
        return [(b, P, D, dtype) for P, D in ((49, 512), (196, 768)) for dtype in (torch.float32, torch.bfloat16)
                for b in (32, 64, 128, 256, 512)] + [(128, 49, 192, torch.float32), (128, 49, 192, torch.bfloat16)]
    return [(64, 16, 64, torch.float32), (128, 49, 192, torch.float32)] + \
        [(b, 49, 512, torch.float32) for b in (64, 128)]


def forward_backward(fn, x1, x2, grad):
    """One training step of the op: s = fn(x1, x2), then both input gradients."""
    s = fn(x1, x2)
    return torch.autograd.grad(s, (x1, x2), grad)


def hashkern_variant(backend: str, forward: str | None = None):
    """patch_similarity on ``backend``; ``forward`` names the Triton forward (triton_launch.FORWARD_VARIANTS)."""
    def fn(a, c):
        if forward is None:
            return patch_similarity(a, c, backend=backend)
        from hashkern.ops.patchsim import triton_launch
        before, triton_launch.FORWARD_VARIANT = triton_launch.FORWARD_VARIANT, forward
        try:
            return patch_similarity(a, c, backend=backend)
        finally:
            triton_launch.FORWARD_VARIANT = before
    return fn


def _variants(device, mode, b, P):
    naive_fits = mode != "gpu-check" or b * b * P * P <= NAIVE_MAX_PAIRS
    compiled_naive = None
    if mode != "gpu-check":
        torch._dynamo.reset()  # a fresh compile per size: past dynamo's recompile limit it would silently run eager
        compiled_naive = torch.compile(patch_similarity_reference)
    variants = [("naive eager", lambda a, c: patch_similarity_reference(a, c).float())] if naive_fits else []
    if compiled_naive is not None:
        variants.append(("naive torch.compile", lambda a, c: compiled_naive(a, c).float()))
    variants.append(("hashkern (torch)", hashkern_variant("torch")))
    if device.type == "cuda":
        variants += [("hashkern (triton, fused forward)", hashkern_variant("triton", "fused")),
                     ("hashkern (triton, gemm + epilogue forward)", hashkern_variant("triton", "gemm"))]
    return variants


def _report(b, P, D, name, ms):
    goal = GOALS.get((b, P, D))
    forward = "fused" if "fused" in name else "gemm" if "gemm" in name else None
    if goal is None or forward is None:
        return
    report_target("bench_patchsim", f"maxmean fwd+bwd bf16, b = {b}, P = {P}, D = {D}, {forward} forward",
                  f"<= {goal:g} ms", f"{format_ms(ms)} ms", ms <= goal,
                  predicted=f"{PREDICTED_MS[b, P, D][forward]} ms")


def gpu_check_rows() -> list[tuple[str, str, str, float]]:
    """(table, size, variant, predicted seconds a call) of the rows ``--gpu-check`` measures on CUDA (the
    cost model's fwd+bwd, benchmarks/notes/patchsim.md; the naive and torch paths ~3x hashkern's)."""
    cuda, rows = torch.device("cuda"), []
    for b, P, D, dtype in sizes(cuda, "gpu-check"):
        hashkern_s = 2 * b * b * P * P * D * 3 / 300e12  # three GEMMs' worth at ~300 TFLOP/s
        rows += [("patch_similarity", f"b = {b}, P = {P}, D = {D}", name, hashkern_s * (1 if "triton" in name else 3))
                 for name, _ in _variants(cuda, "gpu-check", b, P)]
    return rows


def run(device: torch.device, mode: str):
    wrong = []
    for b, P, D, dtype in sizes(device, mode):
        x1 = torch.randn(b, P, D, device=device, dtype=dtype, requires_grad=True)
        x2 = torch.randn(b, P, D, device=device, dtype=dtype, requires_grad=True)
        grad = torch.randn(b, b, device=device, dtype=torch.float32)
        dtype_name = str(dtype).replace("torch.", "")
        grads_bytes = x1.nbytes + x2.nbytes
        checked = None
        baseline_ms = None
        for name, fn in _variants(device, mode, b, P):
            try:
                if checked is None or name.startswith("hashkern"):
                    with torch.no_grad():
                        s = fn(x1, x2)
                    if checked is None:
                        checked = s
                    elif not torch.allclose(s, checked, atol=TOL[dtype], rtol=0):
                        raise AssertionError(f"{name} disagrees with the first method by "
                                             f"{(s - checked).abs().max().item():.2e}")
                ms, peak = measure(lambda: forward_backward(fn, x1, x2, grad), device)
            except (RuntimeError, AssertionError) as error:  # OOM of the naive version is a result, not a crash
                if isinstance(error, AssertionError):
                    wrong.append(f"b = {b}, P = {P}, D = {D}: {error}")
                yield [b, P, D, dtype_name, name, f"failed: {type(error).__name__}", "—", "—", "—"]
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            baseline_ms = ms if name == "naive eager" else baseline_ms
            speedup = "—" if baseline_ms is None else f"{baseline_ms / ms:.1f}×"  # naive eager not run or failed
            _report(b, P, D, name, ms)
            yield [b, P, D, dtype_name, name, format_ms(ms), speedup, format_bytes(peak),
                   format_bytes(max(peak - grads_bytes, 0))]
    if wrong:  # after the table is complete: the run fails, every row is kept
        raise AssertionError("wrong results:\n" + "\n".join(wrong))


def main(argv=None):
    header = ["b", "P", "D", "dtype", "method", "median ms (fwd+bwd)", "speed-up vs naive eager", "peak extra memory",
              "beyond input grads"]
    notes = ("Op: s[n, m] = mean_i max_j cos(x1[n, i], x2[m, j]) over all b × b image pairs (reduce='maxmean'), "
             "then the gradients of both inputs. Peak extra memory includes the two input gradients; the last "
             "column leaves them out (the issue's budget: <= 0.5 GiB at b = 256, P = 196, D = 768). "
             "Every result is checked against the first method that ran before timing; a failed row (e.g. out of "
             "memory) is reported, not hidden. CUDA: the Triton backend with each of its forwards (fused GEMM tiles "
             "reduced in registers; cuBLAS chunks then a Triton epilogue pass), the backward the same; cost model "
             "and predictions in benchmarks/notes/patchsim.md.")
    return run_tables([("patch_similarity", run, header, notes)], __doc__, argv)


if __name__ == "__main__":
    main()
