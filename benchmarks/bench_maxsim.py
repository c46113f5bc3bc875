"""MaxSim (ColBERT late interaction): hashkern.maxsim against maxsim-cpu (CPU) and einsum + amax.

Run: ``python -m benchmarks.bench_maxsim [--quick] [--device cpu|cuda|all]``.
Writes benchmarks/results/maxsim_<device>.md. Rows (Lq = 32 query tokens, D = 128, fp32, L2-normalised tokens):

* inference, nq = 1 (maxsim-cpu's README shapes): 1000 docs x 512 tokens, 10,000 docs x 128;
* inference, nq = 16: 1000 docs x 256 (maxsim-cpu scores one query per call: 16 calls);
* inference, variable lengths 50-800 (uniform), 1000 docs: packed tokens + offsets against
  ``maxsim_scores_variable``;
* training, forward + backward of a contrastive step with in-batch negatives: b = 32 and 64 queries,
  2b documents of 180 tokens, all-pairs scores [b, 2b] -> cross-entropy; against einsum + amax autograd
  (PyLate's ``colbert_scores`` formula), with the peak extra memory of one step.

On the CPU, variants of a row are timed interleaved (A, B, C, A, B, C, ...) so that load from other
processes hits them alike; the table reports the median per variant and the load average before and
after. On CUDA the same rows compare the Triton backend with einsum + amax, eager and ``torch.compile``
(training rows; ``triton.testing.do_bench`` medians).
"""
from __future__ import annotations

import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks import _runner
from benchmarks._runner import _cpu_peak_bytes, format_bytes, format_ms, measure, run_tables
from hashkern.ops.maxsim import maxsim

try:
    from importlib.metadata import version as _version

    import maxsim_cpu
    MAXSIM_CPU = f"maxsim-cpu {_version('maxsim-cpu')}"
except ImportError:  # pip install maxsim-cpu (Linux x86-64 with AVX2, or Apple silicon)
    maxsim_cpu, MAXSIM_CPU = None, "maxsim-cpu not installed (its rows are skipped)"

D, LQ = 128, 32
_load = {}


def einsum_scores(q, d, d_mask=None):
    """PyLate's colbert_scores: einsum("ash,bth->abst"), padded tokens at -inf... here 0-padding masked by
    d_mask, max over document tokens, sum over query tokens."""
    sim = torch.einsum("ash,bth->abst", q, d)
    if d_mask is not None:
        sim = sim.masked_fill(~d_mask[None, :, None, :], float("-inf"))
    return sim.amax(dim=3).sum(dim=2)


def interleaved(fns: dict, rounds: int, budget_s: float) -> dict:
    """Median ms of each callable, called in turn round after round (one warm-up round first)."""
    if _runner._tiny:
        rounds, budget_s = 1, 0.0
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    deadline = time.perf_counter() + budget_s
    for r in range(rounds * 20):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
        if r + 1 >= rounds and time.perf_counter() > deadline:
            break
    return {name: statistics.median(t) for name, t in times.items()}


def unit(*shape, device="cpu"):
    return F.normalize(torch.randn(*shape, device=device), dim=-1)


def timed(fns: dict, device: torch.device, quick: bool, budget_s: float) -> dict:
    """Median ms per variant: interleaved rounds on the CPU, do_bench on CUDA."""
    if device.type == "cpu":
        return interleaved(fns, 3 if quick else 7, 0.5 if quick else budget_s)
    return {name: measure(fn, device, memory=False)[0] for name, fn in fns.items()}


def hashkern_name(device: torch.device, what: str = "") -> str:
    return f"hashkern.maxsim ({'cpu' if device.type == 'cpu' else 'triton'}{what})"


def inference_rows(device: torch.device, quick: bool):
    rows = []
    shapes = [(1, 20, 64), (2, 30, 32)] if quick else [(1, 1000, 512), (1, 10_000, 128), (16, 1000, 256)]
    for nq, nd, Ld in shapes:
        q, d = unit(nq, LQ, D, device=device), unit(nd, Ld, D, device=device)
        fns = {hashkern_name(device): lambda: maxsim(q, d), "einsum + amax (torch)": lambda: einsum_scores(q, d)}
        if maxsim_cpu is not None and device.type == "cpu":
            q_np, d_np = q.numpy(), d.numpy()
            fns["maxsim-cpu maxsim_scores"] = lambda: [maxsim_cpu.maxsim_scores(q_np[n], d_np) for n in range(nq)]
        check(fns, q, d)
        times = timed(fns, device, quick, 20)
        rows += table_rows(f"inference nq = {nq}, {nd} docs x {Ld}", times, baseline(device))
    nd, low, high = (30, 5, 40) if quick else (1000, 50, 800)
    lengths = torch.randint(low, high + 1, (nd,), device=device)
    offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    q, tokens = unit(1, LQ, D, device=device), unit(int(offsets[-1]), D, device=device)
    padded = torch.zeros(nd, high, D, device=device)
    mask = torch.arange(high, device=device)[None] < lengths[:, None]
    padded[mask] = tokens
    fns = {hashkern_name(device, ", packed + offsets"): lambda: maxsim(q, tokens, offsets=offsets),
           "einsum + amax (torch, padded to the longest)": lambda: einsum_scores(q, padded, mask)}
    if maxsim_cpu is not None and device.type == "cpu":
        docs_np = [tokens[offsets[j]:offsets[j + 1]].numpy() for j in range(nd)]
        fns["maxsim-cpu maxsim_scores_variable"] = lambda: maxsim_cpu.maxsim_scores_variable(q[0].numpy(), docs_np)
    check(fns, q, padded, mask)
    times = timed(fns, device, quick, 20)
    rows += table_rows(f"inference nq = 1, {nd} docs x {low}-{high} (variable)", times,
                       baseline(device, "maxsim-cpu maxsim_scores_variable"))
    return rows


def baseline(device: torch.device, cpu_name: str = "maxsim-cpu maxsim_scores") -> str:
    return cpu_name if device.type == "cpu" and maxsim_cpu is not None else "einsum + amax (torch)"


def check(fns, q, d, d_mask=None):
    """Every variant's scores equal the float64 einsum's (3e-5 relative: fp32 sums of 32 maxima; 3e-3 on
    CUDA, where fp32 products may run on TF32 tensor cores)."""
    expect = einsum_scores(q.double(), d.double(), d_mask)
    tol = 3e-5 if q.device.type == "cpu" else 3e-3
    for name, fn in fns.items():
        got = fn()
        got = torch.stack([torch.as_tensor(g) for g in got]) if isinstance(got, list) else torch.as_tensor(got)
        got = got.reshape(expect.shape).to(expect)
        err = ((got - expect).abs().max() / expect.abs().max()).item()
        if err > tol:
            raise AssertionError(f"{name} differs from the float64 scores by {err:.2e} (relative)")


def training_rows(device: torch.device, quick: bool):
    rows = []
    einsum_name = "einsum + amax autograd fwd+bwd"
    for b in ([4] if quick else [32, 64]):
        Ld = 20 if quick else 180
        q = unit(b, LQ, D, device=device).requires_grad_()
        d = unit(2 * b, Ld, D, device=device).requires_grad_()
        labels = torch.arange(b, device=device) * 2  # query n's positive is document 2n, its hard negative 2n + 1

        def step(score_fn):
            loss = F.cross_entropy(score_fn(q, d), labels)
            return torch.autograd.grad(loss, (q, d))

        fns = {hashkern_name(device) + " fwd+bwd": lambda: step(maxsim), einsum_name: lambda: step(einsum_scores)}
        if device.type == "cuda":
            torch._dynamo.reset()
            compiled = torch.compile(einsum_scores)
            fns["einsum + amax torch.compile fwd+bwd"] = lambda: step(compiled)
        reference = fns[einsum_name]()
        tol = 1e-4 if device.type == "cpu" else 3e-3
        for name, fn in fns.items():
            for got, ref in zip(fn(), reference):
                torch.testing.assert_close(got, ref, atol=tol * ref.abs().max().item(), rtol=tol)
        times = timed(fns, device, quick, 15)
        peaks = {name: (_cpu_peak_bytes(fn) if device.type == "cpu" else measure(fn, device)[1])
                 for name, fn in fns.items()}
        grads = q.nbytes + d.nbytes
        label = f"training b = {b}: {b} x {LQ} queries, {2 * b} docs x {Ld}"
        group = table_rows(label, times, einsum_name)
        for row, name in zip(group, fns):
            rows.append(row + [format_bytes(peaks[name]), format_bytes(max(peaks[name] - grads, 0))])
        ratio = peaks[einsum_name] / max(peaks[hashkern_name(device) + " fwd+bwd"], 1)
        rows[-len(group)][-1] += f" (einsum / hashkern peak: {ratio:.0f}×)"
    return rows


def table_rows(label, times, baseline_name):
    base = times.get(baseline_name)
    return [[label, name, format_ms(ms), "—" if base is None else f"{base / ms:.2f}×"] for name, ms in times.items()]


def cpu_header() -> str:
    info = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_fp16", "amx_tile")
             if f in info.get("flags", "").split()]
    return (f"CPU: {info.get('vendor_id', platform.processor())}, family {info.get('cpu family', '?')}, model "
            f"{info.get('model', '?')} ({info.get('model name', '?')}), vector flags {' '.join(flags) or 'none'}; "
            f"{os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}; hashkern MaxSim kernels "
            f"{torch.ops.hashkern._maxsim_isa()}. {MAXSIM_CPU}, torch {torch.__version__}.")


def run(device: torch.device, mode: str):
    """The rows of one device; ``mode`` (benchmarks._runner): the smoke sizes for quick, tiny and gpu-check
    (15 s on the lent GPU: the Triton compiles alone take most of it), every size for full."""
    quick = mode != "full"
    _load["start"] = os.getloadavg()[0]
    rows = [r + ["—", "—"] for r in inference_rows(device, quick)] + training_rows(device, quick)
    _load["end"] = os.getloadavg()[0]
    return rows


def notes(device: torch.device) -> str:
    if device.type == "cuda":
        return ("Queries of 32 tokens, D = 128, fp32 (TF32 tensor cores where torch's matmuls use them), "
                "L2-normalised tokens. do_bench medians; speed-up against einsum + amax eager; peak memory beyond the "
                "inputs during one training step.")
    return (f"{cpu_header()} Load average (1 min) {_load.get('start', float('nan')):.1f} at the start of the run, "
            f"{_load.get('end', float('nan')):.1f} at its end (the machine is shared: other processes take "
            "cores). Queries of 32 tokens, D = 128, fp32, L2-normalised tokens. Variants of a row run interleaved; "
            "median ms per call; every variant's scores are checked against float64 einsum scores (training: "
            "gradients against einsum's) before timing. Speed-up: the row group's baseline (maxsim-cpu; einsum "
            "for training) divided by the variant's time. Training peak memory: bytes allocated beyond the inputs "
            "during one forward + backward step (the profiler's allocation events), with and without the two "
            "input gradients. CUDA rows, when a GPU is present, go to maxsim_cuda.md.")


def main(argv=None):
    header = ["case", "method", "median ms", "speed-up vs baseline", "peak extra memory", "beyond input grads"]
    return run_tables([("maxsim", run, header, notes)], __doc__, argv)


if __name__ == "__main__":
    main()
