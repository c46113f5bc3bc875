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


CHECK_ROWS = 256  # rows of the result checked against the matmul (a full fp16 check would need na x nb x 2 bytes)


def sizes(device: torch.device, mode: str):
    if mode in ("quick", "tiny"):
        return [(64, 256, 2048)]
    if mode == "gpu-check":  # one output of 4 GB per call: two fit beside the inputs on any lent GPU
        return [(bits, 10_000, 100_000) for bits in (64, 256)]
    if device.type == "cuda":  # a fresh and a reused [1e4, 5e5] int32 output: 2 x 18.6 GiB
        return [(bits, 10_000, 500_000) for bits in (64, 256, 1024)]
    return [(bits, 1_000, 100_000) for bits in (16, 32, 64, 128, 256, 1024)]


def check_against_matmul(a_pm1, b_pm1, a_packed, b_packed, bits: int) -> None:
    """hashkern's first CHECK_ROWS rows equal the ±1 matmul's (fp16 holds integers up to 2048 exactly)."""
    rows = slice(0, CHECK_ROWS)
    if not torch.equal(matmul_distance(a_pm1[rows], b_pm1).to(torch.int32),
                       hashkern.hamming_distance(a_packed[rows], b_packed)):
        raise AssertionError(f"hamming_distance disagrees with the ±1 matmul at K={bits}")


def variant_names(device: torch.device, mode: str) -> list[str]:
    float_dtype = torch.float16 if device.type == "cuda" else torch.float32
    return [f"±1 matmul, eager ({str(float_dtype).replace('torch.', '')})",
            *([] if mode == "gpu-check" else ["±1 matmul, torch.compile"]),
            "hashkern.hamming_distance (packed)", "hashkern.hamming_distance (packed, out= reused)"]


def gpu_check_rows() -> list[tuple[str, str, str, float]]:
    """(table, size, variant, predicted seconds a call) of the rows ``--gpu-check`` measures on CUDA: the
    [1e4, 1e5] int32 output is 4 GB, written at ~3 TB/s plus its page faults (benchmarks/notes/hamming.md)."""
    cuda = torch.device("cuda")
    return [("hamming_distance", f"{bits} bits {na} x {nb}", name, 0.005)
            for bits, na, nb in sizes(cuda, "gpu-check") for name in variant_names(cuda, "gpu-check")]


def run(device: torch.device, mode: str):
    float_dtype = torch.float16 if device.type == "cuda" else torch.float32
    compiled_matmul = torch.compile(matmul_distance)
    for bits, na, nb in sizes(device, mode):
        a_pm1 = random_pm1(na, bits, device, float_dtype)
        b_pm1 = random_pm1(nb, bits, device, float_dtype)
        a_packed, b_packed = hashkern.pack_bits(a_pm1), hashkern.pack_bits(b_pm1)
        reused = None  # a caller's buffer, made before its row: no fresh pages to fault in per call
        eager, compiled, fresh, reused_out = variant_names(device, "full")
        functions = {eager: lambda: matmul_distance(a_pm1, b_pm1), compiled: lambda: compiled_matmul(a_pm1, b_pm1),
                     fresh: lambda: hashkern.hamming_distance(a_packed, b_packed),
                     reused_out: lambda: hashkern.hamming_distance(a_packed, b_packed, out=reused)}
        check_against_matmul(a_pm1, b_pm1, a_packed, b_packed, bits)
        baseline_ms = None
        for name, fn in ((name, functions[name]) for name in variant_names(device, mode)):
            try:
                if name == reused_out:
                    reused = torch.empty(na, nb, dtype=torch.int32, device=device)
                ms, peak = measure(fn, device)
            except RuntimeError as error:  # e.g. out of memory: reported, not hidden
                yield [bits, na, nb, name, f"failed: {type(error).__name__}", "—", "—"]
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            baseline_ms = ms if baseline_ms is None else baseline_ms
            yield [bits, na, nb, name, format_ms(ms), f"{baseline_ms / ms:.1f}×", format_bytes(peak)]
        reused = None  # freed before the next size's inputs


def main(argv=None):
    header = ["bits", "na", "nb", "method", "median ms", "speed-up vs eager matmul", "peak extra memory"]
    notes = ("Output: the full [na, nb] distance matrix (int32 for hashkern, float for the matmul). "
             f"Inputs: random ±1 codes; hashkern's first {CHECK_ROWS} rows are checked equal to the matmul's "
             "before timing. "
             "A fresh output costs its page faults (the kernel zeroes 4 bytes per pair); with out= reused, "
             "what is left at 16 to 64 bits is mostly writing the 4-byte outputs.")
    return run_tables([("hamming_distance", run, header, notes)], __doc__, argv)


if __name__ == "__main__":
    main()
