"""Shared benchmark runner: median time, peak memory, and a stamped Markdown results table.

Time: ``triton.testing.do_bench`` medians on CUDA (events, after warm-up); on the CPU, the
median wall time of repeated calls. Peak memory: bytes allocated by one call beyond what was
allocated before it (``torch.cuda.max_memory_allocated`` on CUDA, the profiler's allocation
events on the CPU).

Modes (the ``mode`` a bench's ``run(device, mode)`` gets): ``full`` (the default: every size and
baseline), ``quick`` (smoke sizes), ``tiny`` (what ``GPU_CHECK_DRY=1 make gpu-check`` runs, so the
scripts cannot rot: the quick sizes, one timed call per variant, torch.compile off; its tables say
they are no measurement) and ``gpu-check`` (what ``make gpu-check`` runs on the lent GPU: each bench's
own short CUDA size list, the goal sizes with hashkern against the torch path, no torch.compile, short
timing runs). Tables are rewritten after every row, so a run stopped by its budget leaves the rows it
measured. :func:`report_target` records a benchmark's target (and the cost model's prediction) beside
the measured value for the gpu-check summary.
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
MODES = ("full", "quick", "tiny", "gpu-check")
_tiny = False  # set by --tiny: smoke sizes, one timed call, no torch.compile
_gpu_check = False  # set by --gpu-check: short timing runs, no torch.compile


def report_target(benchmark: str, what: str, target: str, measured: str, met: bool | None,
                  predicted: str | None = None) -> None:
    """Record one target of a benchmark against its measured value (``met`` None: not judged) and, where the
    op's cost model (benchmarks/notes/) predicts one, the predicted value.

    Printed, and appended to the file named by $HASHKERN_BENCH_TARGETS when set (gpu-check
    collects them into its summary)."""
    record = {"benchmark": benchmark, "what": what, "target": target, "measured": measured, "met": met,
              "predicted": predicted, "tiny": _tiny}
    print(f"TARGET {benchmark}: {what}: target {target}, measured {measured}"
          f"{f', predicted {predicted}' if predicted else ''}, "
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


SLOW_CALL_S = 0.3  # gpu-check: a call slower than this is timed by 3 calls, not do_bench


GPU_CHECK_START_S = 20.0  # a bench process: Python, torch / triton / hashkern imports, CUDA context, first JIT compiles


def gpu_check_row_seconds(call_s: float) -> float:
    """Seconds ``measure`` spends on one row in gpu-check mode on CUDA for a call of ``call_s`` seconds: a slow
    call 5 times (warm-up, 3 timed, memory); else the warm-up, do_bench's 5 estimate calls, its 10 ms of
    warm-up and 60 ms of repeats, the memory call, and ~0.3 s of Python and inputs."""
    return 5 * call_s if call_s > SLOW_CALL_S else 7 * call_s + 0.07 + 0.3


def _cuda_median_of_calls(fn: Callable[[], object], calls: int) -> float:
    """Median milliseconds of ``calls`` calls, each between CUDA events."""
    times = []
    for _ in range(calls):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end))
    return statistics.median(times)


def measure(fn: Callable[[], object], device: torch.device, *, min_runs: int = 5, budget_s: float = 2.0,
            memory: bool = True) -> tuple[float, int | None]:
    """(median milliseconds, peak extra bytes of one call) for ``fn`` on ``device``."""
    device = torch.device(device)
    if _tiny:
        min_runs, budget_s = 1, 0.0
    start = time.perf_counter()
    fn()  # warm-up: compilation, caches, allocator
    if device.type == "cuda" and _gpu_check:
        torch.cuda.synchronize()
        if time.perf_counter() - start > SLOW_CALL_S:  # do_bench's 5 estimate runs and warm-up would cost too much
            return _cuda_median_of_calls(fn, 3), (_cuda_peak_bytes(fn) if memory else None)
    if device.type == "cuda":
        from triton.testing import do_bench

        rep = 1 if _tiny else 60 if _gpu_check else max(100, int(budget_s * 1000 / 4))
        ms = do_bench(fn, warmup=1 if _tiny else 10 if _gpu_check else 25, rep=rep, return_mode="median")
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
                notes: str = "", directory: Path | None = None, echo: bool = True) -> Path:
    """Write ``results/<name>_<device type>.md`` (a Markdown table under its stamp); print it when ``echo``."""
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
    if echo:
        print(text, flush=True)
    return path


def argument_parser(description: str) -> argparse.ArgumentParser:
    """The options every bench_<op>.py takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", choices=["all", "cpu", "cuda"], default="all")
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    parser.add_argument("--tiny", action="store_true",
                        help="--quick sizes, one timed call, torch.compile off: checks the script, measures nothing")
    parser.add_argument("--gpu-check", action="store_true",
                        help="make gpu-check's short CUDA size list: goal sizes, no torch.compile, short timing runs")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    return parser


def set_tiny() -> None:
    """Tiny mode for this process: see the module docstring."""
    global _tiny
    _tiny = True
    torch._dynamo.config.disable = True  # torch.compile'd baselines run eager: compiling is most of a smoke run


def set_gpu_check() -> None:
    """gpu-check mode for this process: see the module docstring."""
    global _gpu_check
    _gpu_check = True
    torch._dynamo.config.disable = True  # no torch.compile in the GPU run: its compiles would eat the budget


def mode_of(args) -> str:
    return "tiny" if args.tiny else "gpu-check" if args.gpu_check else "quick" if args.quick else "full"


def measure_rows(name: str, run: Callable, header: Sequence[str], notes, device: torch.device, mode: str,
                 directory: Path | None) -> Path:
    """Measure one table, rewriting it after every row ``run(device, mode)`` yields (rows may still be filled
    in later, e.g. a speed-up once the last variant is timed: the final write has them)."""
    rows: list = []
    write_table(name, rows, header, device, "", directory, echo=False)  # the table exists from the start
    for row in run(device, mode):
        rows.append(row)
        write_table(name, rows, header, device, "", directory, echo=False)
        print("row: | " + " | ".join(str(cell) for cell in row) + " |", flush=True)
    return write_table(name, rows, header, device, notes(device) if callable(notes) else notes, directory)


def run_tables(tables: Sequence[tuple[str, Callable, Sequence[str], object]], description: str,
               argv=None) -> list[Path]:
    """The ``main`` of a bench_<op>.py: for each device, each ``(name, run(device, mode) -> rows (an iterable,
    usually a generator), header, notes)`` table is measured and written row by row."""
    args = argument_parser(description.strip().splitlines()[0]).parse_args(argv)
    if args.tiny:
        set_tiny()
        args.quick = True
    if args.gpu_check:
        set_gpu_check()
    mode = mode_of(args)
    # notes may be a callable of the device, read after the run (to report what the run measured).
    return [measure_rows(name, run, header, notes, device, mode, args.out)
            for device in devices_to_run(args.device) for name, run, header, notes in tables]
