"""Shared benchmark runner: median time, peak memory, and a stamped Markdown results table.

Time: ``triton.testing.do_bench`` medians on CUDA (events, after warm-up); on the CPU, the
median wall time of repeated calls. Peak memory: bytes allocated by one call beyond what was
allocated before it (``torch.cuda.max_memory_allocated`` on CUDA, the profiler's allocation
events on the CPU).

``--tiny`` (what ``GPU_CHECK_DRY=1 make gpu-check`` runs, so the scripts cannot rot): the
``--quick`` sizes, one timed call per variant, torch.compile off; its tables say they are no
measurement. :func:`report_target` records a benchmark's target beside the measured value for
the gpu-check summary.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS_ENV = "HASHKERN_BENCH_TARGETS"  # a JSON-lines file that report_target appends to
_tiny = False  # set by --tiny: smoke sizes, one timed call, no torch.compile


def report_target(benchmark: str, what: str, target: str, measured: str, met: bool | None) -> None:
    """Record one target of a benchmark against its measured value (``met`` None: not judged).

    Printed, and appended to the file named by $HASHKERN_BENCH_TARGETS when set (gpu-check
    collects them into its summary)."""
    record = {"benchmark": benchmark, "what": what, "target": target, "measured": measured, "met": met,
              "tiny": _tiny}
    print(f"TARGET {benchmark}: {what}: target {target}, measured {measured}, "
          f"{'met' if met else 'not judged' if met is None else 'MISSED'}")
    path = os.environ.get(TARGETS_ENV)
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def devices_to_run(requested: str = "all") -> list[torch.device]:
    """The benchmark's devices; CUDA rows are skipped, with a message, on a machine without one."""
    devices = []
    if requested in ("all", "cpu"):
        devices.append(torch.device("cpu"))
    if requested in ("all", "cuda"):
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
        else:
            print("CUDA rows skipped: no CUDA device on this machine")
    return devices


def _cpu_peak_bytes(fn: Callable[[], object]) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def _cuda_peak_bytes(fn: Callable[[], object]) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def measure(fn: Callable[[], object], device: torch.device, *, min_runs: int = 5, budget_s: float = 2.0,
            memory: bool = True) -> tuple[float, int | None]:
    """(median milliseconds, peak extra bytes of one call) for ``fn`` on ``device``."""
    device = torch.device(device)
    if _tiny:
        min_runs, budget_s = 1, 0.0
    fn()  # warm-up: compilation, caches, allocator
    if device.type == "cuda":
        from triton.testing import do_bench

        rep = 1 if _tiny else max(100, int(budget_s * 1000 / 4))
        ms = do_bench(fn, warmup=1 if _tiny else 25, rep=rep, return_mode="median")
        return ms, (_cuda_peak_bytes(fn) if memory else None)
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_runs or (time.perf_counter() < deadline and len(times) < 1000):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), (_cpu_peak_bytes(fn) if memory else None)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def _git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "hashkern", "csrc", "benchmarks"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def stamp(device: torch.device) -> str:
    """Device, versions, commit and date: the provenance line of every table."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    extra = f", CUDA {torch.version.cuda}" if device.type == "cuda" else ""
    if device.type == "cpu" and hasattr(os, "getloadavg"):  # other work on the cores skews CPU rows
        extra = f", load average {os.getloadavg()[0]:.1f} at write time"
    return (f"Device: {device_name(device)}. torch {torch.__version__}{extra}, triton {triton_version}, "
            f"Python {platform.python_version()}. Commit {_git_commit()}. "
            f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.")


def format_ms(ms: float | None) -> str:
    return "—" if ms is None else (f"{ms:.3f}" if ms < 10 else f"{ms:.1f}")


def format_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def write_table(name: str, rows: Sequence[Sequence[object]], header: Sequence[str], device: torch.device,
                notes: str = "", directory: Path | None = None) -> Path:
    """Write ``results/<name>_<device type>.md`` (a Markdown table under its stamp) and print it."""
    directory = RESULTS if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"# {name} ({device.type})", "", stamp(device), ""]
    if _tiny:
        lines += ["**Tiny mode (--tiny): smoke sizes, one timed call, torch.compile off. Not a measurement.**", ""]
    if notes:
        lines += [notes, ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    path = directory / f"{name}_{device.type}.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # never a half-written table
    print(text)
    return path


def argument_parser(description: str) -> argparse.ArgumentParser:
    """The options every bench_<op>.py takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", choices=["all", "cpu", "cuda"], default="all")
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    parser.add_argument("--tiny", action="store_true",
                        help="--quick sizes, one timed call, torch.compile off: checks the script, measures nothing")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    return parser


def set_tiny() -> None:
    """Tiny mode for this process: see the module docstring."""
    global _tiny
    _tiny = True
    torch._dynamo.config.disable = True  # torch.compile'd baselines run eager: compiling is most of a smoke run


def run_tables(tables: Sequence[tuple[str, Callable, Sequence[str], object]], description: str,
               argv=None) -> list[Path]:
    """The ``main`` of a bench_<op>.py: for each device, each ``(name, run(device, quick) -> rows,
    header, notes)`` table is measured and written."""
    args = argument_parser(description.strip().splitlines()[0]).parse_args(argv)
    if args.tiny:
        set_tiny()
        args.quick = True
    # notes may be a callable of the device, read after the run (to report what the run measured).
    return [write_table(name, run(device, args.quick), header, device,
                        notes(device) if callable(notes) else notes, args.out)
            for device in devices_to_run(args.device) for name, run, header, notes in tables]
