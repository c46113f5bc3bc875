"""hamming_distance vs the ±1 matmul that deep-hashing code uses today: ``0.5 * (K - A @ B.T)``.

Run: ``python -m benchmarks.bench_hamming [--quick] [--device cpu|cuda|all]``.
Writes benchmarks/results/hamming_distance_<device>.md.
"""
from __future__ import annotations

import torch

import hashkern
from benchmarks._runner import format_bytes, format_ms, measure, run_tables


def matmul_distance(a_pm1: torch.Tensor, b_pm1: torch.Tensor) -> torch.Tensor:
    """The usual dense formula: ±1 codes [na, K], [nb, K] -> [na, nb] distances as floats."""
    return 0.5 * (a_pm1.shape[1] - a_pm1 @ b_pm1.T)


def random_pm1(n: int, bits: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[n, bits] random ±1 codes (never 0, unlike randn().sign())."""
    return torch.where(torch.rand(n, bits, device=device) < 0.5, 1.0, -1.0).to(dtype)


def sizes(device: torch.device, quick: bool):
    if quick:
        return [(64, 256, 2048)]
    if device.type == "cuda":
        return [(bits, 10_000, 1_000_000) for bits in (64, 256, 1024)]
    return [(bits, 1_000, 100_000) for bits in (16, 32, 64, 128, 256, 1024)]


def run(device: torch.device, quick: bool):
    rows = []
    float_dtype = torch.float16 if device.type == "cuda" else torch.float32
    compiled_matmul = torch.compile(matmul_distance)
    for bits, na, nb in sizes(device, quick):
        a_pm1 = random_pm1(na, bits, device, float_dtype)
        b_pm1 = random_pm1(nb, bits, device, float_dtype)
        a_packed, b_packed = hashkern.pack_bits(a_pm1), hashkern.pack_bits(b_pm1)
        exact = hashkern.hamming_distance(a_packed, b_packed)
        reused = torch.empty_like(exact)  # a caller's buffer: no fresh pages to fault in per call
        # fp16 holds integers up to 2048 exactly, so the baseline is exact at these K.
        if not torch.equal(matmul_distance(a_pm1, b_pm1).to(torch.int32), exact):
            raise AssertionError(f"hamming_distance disagrees with the ±1 matmul at K={bits}")
        variants = [
            (f"±1 matmul, eager ({str(float_dtype).replace('torch.', '')})", lambda: matmul_distance(a_pm1, b_pm1)),
            ("±1 matmul, torch.compile", lambda: compiled_matmul(a_pm1, b_pm1)),
            ("hashkern.hamming_distance (packed)", lambda: hashkern.hamming_distance(a_packed, b_packed)),
            ("hashkern.hamming_distance (packed, out= reused)",
             lambda: hashkern.hamming_distance(a_packed, b_packed, out=reused)),
        ]
        baseline_ms = None
        for name, fn in variants:
            try:
                ms, peak = measure(fn, device)
            except Exception as error:  # a baseline that cannot run here is reported, not hidden
                rows.append([bits, na, nb, name, f"failed: {type(error).__name__}", "—", "—"])
                continue
            baseline_ms = ms if baseline_ms is None else baseline_ms
            rows.append([bits, na, nb, name, format_ms(ms), f"{baseline_ms / ms:.1f}×", format_bytes(peak)])
    return rows


def main(argv=None):
    header = ["bits", "na", "nb", "method", "median ms", "speed-up vs eager matmul", "peak extra memory"]
    notes = ("Output: the full [na, nb] distance matrix (int32 for hashkern, float for the matmul). "
             "Inputs: random ±1 codes; every method's result is checked equal before timing. "
             "A fresh output costs its page faults (the kernel zeroes 4 bytes per pair); with out= reused, "
             "what is left at 16 to 64 bits is mostly writing the 4-byte outputs.")
    return run_tables([("hamming_distance", run, header, notes)], __doc__, argv)


if __name__ == "__main__":
    main()
