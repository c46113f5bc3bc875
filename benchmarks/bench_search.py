"""Exact Hamming top-k search and mAP: hashkern vs faiss-cpu, the ±1 matmul + topk, and NumPy loops.

Run: ``python -m benchmarks.bench_search [--quick] [--device cpu|cuda|all]``.
Writes benchmarks/results/hamming_topk_<device>.md and map_<device>.md.
faiss-cpu (``pip install faiss-cpu``) is optional: without it its rows say so.
``HASHKERN_BENCH_SEARCH_N`` sets N of the CPU rows with 1,000 queries (default 1,000,000; a
smaller N for a loaded machine, where faiss takes minutes a call at the wide codes).
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch

import hashkern
from benchmarks._runner import format_bytes, format_ms, measure, run_tables
from hashkern.metrics import mean_average_precision
from hashkern.ops.search import hamming_topk, hamming_topk_reference

try:
    import faiss
except ImportError:  # optional benchmark dependency
    faiss = None


def random_pm1(n: int, bits: int, device: torch.device) -> torch.Tensor:
    return torch.where(torch.rand(n, bits, device=device) < 0.5, 1.0, -1.0)


def matmul_topk(q_pm1: torch.Tensor, db_pm1: torch.Tensor, k: int, chunk: int):
    """The usual baseline: distances from a ±1 matmul, then torch.topk, a chunk of queries at a time."""
    dist, idx = [], []
    for s in range(0, q_pm1.shape[0], chunk):
        d = 0.5 * (q_pm1.shape[1] - q_pm1[s:s + chunk] @ db_pm1.T)
        values, indices = torch.topk(d, k, dim=1, largest=False)
        dist.append(values)
        idx.append(indices)
    return torch.cat(dist), torch.cat(idx)


CPU_WIDTHS = (16, 32, 64, 128, 256, 512, 768, 1024, 1536)
FEW_QUERY_WIDTHS = (64, 256, 1024)


def topk_sizes(device: torch.device, mode: str):
    """(bits, nq, N, k) rows."""
    if mode in ("quick", "tiny"):
        return [(64, 64, 20_000, 10), (1024, 4, 20_000, 10)]
    if mode == "gpu-check":
        return [(64, 10_000, 1_000_000, 100), (256, 1_000, 1_000_000, 1_000), (64, 1_000, 1_000_000, 10_000)]
    if device.type == "cuda":
        rows = [(bits, 10_000, 1_000_000, 1_000) for bits in (64, 128, 256, 1024)]
        rows += [(64, 1_000, 10_000_000, 100)]
        rows += [(64, 1_000, 1_000_000, k) for k in (1, 100, 10_000, 100_000)]
        return rows
    # Few queries: faiss parallelises over queries only; hashkern splits the database.
    rows = [(bits, nq, 1_000_000, 10) for bits in FEW_QUERY_WIDTHS for nq in (1, 4, 16)]
    n = int(os.environ.get("HASHKERN_BENCH_SEARCH_N", 1_000_000))
    return rows + [(bits, 1_000, n, k) for bits in CPU_WIDTHS for k in (100, 1_000)]


def kernel_choice(bits: int) -> str:
    """The CPU kernels hamming_topk runs for this code length (measured, cached or forced)."""
    choice = hashkern._ext.cpu_kernel_choice(bits)
    sliced = choice["sliced_min_queries"]
    return choice["kernels"] + (f", bit-sliced {choice['sliced']} from {sliced} queries" if choice["sliced"] else "")


# CPU: the float matmul baseline takes ~30 s a call at N = 1e6, so it runs at one size only.
MATMUL_CPU_SIZE = (64, 100)

# Per bits: ns of CPU time per (query, code) pair of the distance kernels alone, filled by run_topk.
_KERNEL_NS: dict[int, float] = {}


def kernel_ns_per_pair(bits: int, reps: int = 20) -> float:
    """CPU time per pair on one core of xor + popcount + one compare, nothing else: the radius
    count of 1,024 queries over 2,048 codes that stay in L1/L2. The floor of any exact search.
    One thread, timed by its CPU time, so other work on the machine hardly changes it."""
    q = torch.randint(0, 256, (1024, bits // 8), dtype=torch.uint8)
    db = torch.randint(0, 256, (2048, bits // 8), dtype=torch.uint8)
    counts = torch.empty(q.shape[0], dtype=torch.int64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.ops.hashkern.hamming_radius_count(q, db, bits // 4, counts)
        start = time.thread_time()
        for _ in range(reps):
            torch.ops.hashkern.hamming_radius_count(q, db, bits // 4, counts)
        return (time.thread_time() - start) / (reps * q.shape[0] * db.shape[0]) * 1e9
    finally:
        torch.set_num_threads(threads)


def topk_notes(device: torch.device) -> str:
    notes = ("Exact k nearest by Hamming distance; hashkern orders ties by index. Distances of every method "
             "are checked equal to hashkern's before timing (faiss orders ties arbitrarily, so indices may "
             f"differ). CPU threads: {torch.get_num_threads()}. faiss peak memory is outside torch's view. "
             "ns / pair: wall time per (query, code) pair. faiss calls over 1 s are timed once, after the "
             "call whose distances are checked.")
    if device.type != "cpu" or not _KERNEL_NS:
        return notes
    threads = torch.get_num_threads()
    floors = "; ".join(f"{bits} bits {ns:.3f} ns ({kernel_choice(bits).split(',')[0]}) → "
                       f"{ns * 1e9 / threads / 1e6:,.0f} ms" for bits, ns in sorted(_KERNEL_NS.items()))
    load = (f" Load average at the start of the run: {_LOAD_AT_START:.1f} on {os.cpu_count()} cores."
            if _LOAD_AT_START is not None else "")
    faiss_version = faiss.__version__ if faiss is not None else "not installed"
    cpu = (f"**CPU**: {torch.ops.hashkern._cpu_identity()} (vendor, family, model, the vector flags the "
           f"kernels use); faiss-cpu {faiss_version}. **kernels**: what hamming_topk ran for the row's code "
           "length: chosen per width by timing every set this CPU runs at first use (avx512-rows: AVX-512 "
           "VPOPCNTDQ per row, avx2-rows: AVX2 vpshufb per row, sse4-rows: SSE4.1 pshufb per row on 128-bit "
           "vectors, portable: scalar popcount), and the bit-sliced search (avx512: 512-row planes, avx2: "
           "256-row planes, sse4: 128-row planes) with the query count per block from which codes of 16m "
           "bytes up to 1536 bits take it instead.")
    return (f"{notes}\n\n{cpu}\n\n**Machine limit** per width: xor + popcount + one compare per pair with the "
            "kernels chosen, the minimum of any search that computes every distance, measured alone on codes "
            f"in L1/L2 (CPU time per pair on one core) and as the floor of 1,000 × 1,000,000 pairs on "
            f"{threads} threads: {floors}. The top-k selection adds a vector compare per pair and work per "
            "accepted candidate; the database (N·bits/8 bytes) streams from L3/DRAM once per 32 queries "
            "(128 when a tile takes the bit-sliced search, 8 when k > 4096); with fewer queries than "
            "threads it is split across the threads." + load)


_LOAD_AT_START: float | None = None


def run_topk(device: torch.device, mode: str):
    global _LOAD_AT_START
    _LOAD_AT_START = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    quick = mode in ("quick", "tiny")
    for bits, nq, n, k in topk_sizes(device, mode):
        if device.type == "cpu" and bits not in _KERNEL_NS and hasattr(torch.ops.hashkern, "_cpu_kernels"):
            _KERNEL_NS[bits] = kernel_ns_per_pair(bits, reps=2 if quick else 20)
        variants = []
        if device.type != "cpu" or quick or (bits, k) == MATMUL_CPU_SIZE:
            q_pm1, db_pm1 = random_pm1(nq, bits, device), random_pm1(n, bits, device)
            q, db = hashkern.pack_bits(q_pm1), hashkern.pack_bits(db_pm1)
            matmul_dtype = torch.float16 if device.type == "cuda" else torch.float32
            q_mm, db_mm = q_pm1.to(matmul_dtype), db_pm1.to(matmul_dtype)
            chunk = max(1, (1 << 28) // (n * q_mm.element_size()))
            variants.append((f"±1 matmul ({str(matmul_dtype).replace('torch.', '')}) + torch.topk, chunked",
                             lambda: matmul_topk(q_mm, db_mm, k, chunk)))
        else:  # random packed codes directly: ±1 floats of 10^6 wide codes take gigabytes
            q = torch.randint(0, 256, (nq, bits // 8), dtype=torch.uint8, device=device)
            db = torch.randint(0, 256, (n, bits // 8), dtype=torch.uint8, device=device)
        dist, _ = hamming_topk(q, db, k)
        if not torch.equal(hamming_topk_reference(q[:4], db, k)[0], dist[:4]):
            raise AssertionError(f"hamming_topk distances differ from the reference at K={bits}, k={k}")
        if device.type == "cpu":
            if faiss is None:
                yield [bits, nq, n, k, "faiss-cpu IndexBinaryFlat", "", "skipped: faiss-cpu not installed",
                       "—", "—", "—", "—"]
            else:
                index = faiss.IndexBinaryFlat(bits)
                index.add(db.numpy())
                q_np = q.numpy()
                start = time.perf_counter()
                faiss_dist, _ = index.search(q_np, k)
                faiss_first_ms = (time.perf_counter() - start) * 1e3
                if not np.array_equal(faiss_dist, dist.numpy()):
                    raise AssertionError(f"hamming_topk distances differ from faiss at K={bits}, k={k}")
                variants.append(("faiss-cpu IndexBinaryFlat", lambda: index.search(q_np, k)))
        variants.append(("hashkern.hamming_topk", lambda: hamming_topk(q, db, k)))
        if device.type != "cpu" or quick or (bits, k) == MATMUL_CPU_SIZE:
            if not torch.equal(matmul_topk(q_mm[:4], db_mm, k, chunk)[0].to(torch.int32), dist[:4]):
                raise AssertionError(f"hamming_topk distances differ from the matmul baseline at K={bits}, k={k}")
        timings, measured = {}, []
        for name, fn in variants:
            slow = name.startswith("faiss") and faiss_first_ms > 1000
            try:
                if slow:  # the checked call above was its warm-up: one timed call
                    start = time.perf_counter()
                    fn()
                    ms, peak = (time.perf_counter() - start) * 1e3, None
                else:
                    ms, peak = measure(fn, device, min_runs=3, budget_s=3.0)
            except Exception as error:  # a baseline that cannot run here is reported, not hidden
                failed = f"failed: {type(error).__name__}: {error}"[:80]
                yield [bits, nq, n, k, name, "", failed, "—", "—", "—", "—"]
                continue
            timings[name] = ms
            kernels = kernel_choice(bits) if device.type == "cpu" and name == "hashkern.hamming_topk" else ""
            measured.append([bits, nq, n, k, name, kernels, format_ms(ms), f"{nq / ms * 1e3:,.0f}",
                             f"{ms * 1e6 / (nq * n):.3f}", "", format_bytes(peak)])
            yield measured[-1]
        ours = timings.get("hashkern.hamming_topk")
        for row in measured:  # filled in place: the table's next write has them
            if ours is not None:
                row[9] = f"{timings[row[4]] / ours:.2f}×"


def numpy_map_loop(q_pm1: np.ndarray, db_pm1: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray, topk: int):
    """DeepHash-pytorch / CIBHash evaluation: a per-query argsort of the whole database (stable here)."""
    total = 0.0
    for i in range(q_pm1.shape[0]):
        gnd = (db_labels == q_labels[i]).astype(np.float64)
        hamm = 0.5 * (q_pm1.shape[1] - db_pm1 @ q_pm1[i])
        tgnd = gnd[np.argsort(hamm, kind="stable")][:topk]
        tsum = int(tgnd.sum())
        if tsum == 0:
            continue
        count = np.linspace(1, tsum, tsum)
        tindex = np.asarray(np.where(tgnd == 1)).flatten() + 1.0
        total += np.mean(count / tindex)
    return total / q_pm1.shape[0]


def gpu_check_rows() -> list[tuple[str, str, str, float]]:
    """(table, size, variant, predicted seconds a call) of the rows ``--gpu-check`` measures on CUDA: the search
    reads nq N bits / 8 bytes of codes from L2 (~0.1 ns a pair), the matmul baseline writes nq N fp16 distances
    and selects from them (~0.02 ns a pair); mAP is one top-k search and a sort of its results."""
    rows = []
    for bits, nq, n, k in topk_sizes(torch.device("cuda"), "gpu-check"):
        rows += [("hamming_topk", f"{bits} bits, {nq} x {n}, k = {k}", "±1 matmul (float16) + torch.topk, chunked",
                  0.02e-9 * nq * n * bits / 64 + 0.01),
                 ("hamming_topk", f"{bits} bits, {nq} x {n}, k = {k}", "hashkern.hamming_topk", 0.1e-9 * nq * n)]
    rows += [("map", "64 bits, 10000 x 1000000", name, 0.05) for name in
             ("hashkern mean_average_precision", "hashkern, ties='expected'")]
    return rows


def run_map(device: torch.device, mode: str):
    if mode in ("quick", "tiny"):
        sizes = [(64, 100, 5_000, 1_000)]
    elif device.type == "cuda":
        sizes = [(64, 10_000, 1_000_000, 1_000)]
    else:
        sizes = [(bits, 1_000, 54_000, 1_000) for bits in (16, 32, 64)]
    for bits, nq, n, topk in sizes:
        q_pm1, db_pm1 = random_pm1(nq, bits, device), random_pm1(n, bits, device)
        q_labels, db_labels = torch.randint(0, 10, (nq,), device=device), torch.randint(0, 10, (n,), device=device)
        # Codes correlated with labels, so mAP is far from chance: flip bits towards a class code.
        centres = random_pm1(10, bits, device)
        q_pm1 = torch.where(torch.rand(nq, bits, device=device) < 0.4, centres[q_labels], q_pm1)
        db_pm1 = torch.where(torch.rand(n, bits, device=device) < 0.4, centres[db_labels], db_pm1)
        data = dict(q_codes=q_pm1, db_codes=db_pm1, q_labels=q_labels, db_labels=db_labels, topk=topk)
        ours = mean_average_precision(**data)
        variants = []
        if device.type == "cpu":
            args = (q_pm1.numpy(), db_pm1.numpy(), q_labels.numpy(), db_labels.numpy(), topk)
            reference = numpy_map_loop(*args)
            if abs(reference - ours) > 1e-9:
                raise AssertionError(f"mAP differs from the NumPy loop: {ours} vs {reference}")
            variants.append(("per-query NumPy argsort loop (DeepHash CalcTopMap)", lambda: numpy_map_loop(*args)))
        variants.append(("hashkern mean_average_precision", lambda: mean_average_precision(**data)))
        variants.append(("hashkern, ties='expected'", lambda: mean_average_precision(**data, ties="expected")))
        timings, measured = {}, []
        for name, fn in variants:
            slow = name.startswith("per-query NumPy")  # ~15 s a call: one timed run after the warm-up
            ms, peak = measure(fn, device, min_runs=1 if slow else 3, budget_s=0.0 if slow else 3.0, memory=False)
            timings[name] = ms
            measured.append([bits, nq, n, topk, name, format_ms(ms), "", f"{ours:.4f}"])
            yield measured[-1]
        for row in measured:  # filled in place: the table's next write has them
            row[6] = f"{timings[row[4]] / timings['hashkern mean_average_precision']:.2f}×"


def main(argv=None):
    topk_header = ["bits", "nq", "N", "k", "method", "kernels", "median ms", "queries/s", "ns / pair",
                   "time / hashkern's",
                   "peak extra memory"]
    map_header = ["bits", "nq", "N", "topk", "method", "median ms", "time / hashkern's", "mAP"]
    map_notes = ("mAP@topk, single-label relevance, end to end from ±1 codes (packing included). The NumPy loop "
                 "uses a stable argsort so its value equals hashkern's ties='index' exactly.")
    return run_tables([("hamming_topk", run_topk, topk_header, topk_notes),
                       ("map", run_map, map_header, map_notes)], __doc__, argv)


if __name__ == "__main__":
    main()
