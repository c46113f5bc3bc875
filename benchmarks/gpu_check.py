"""`make gpu-check`: the whole GPU run in one command, on a fresh copy of the tree.

Steps, each with a time budget and capped by one overall deadline (8 minutes, leaving 2 of a 10-minute
device command for start-up and transfers):
  gpu              nvidia-smi: the GPU, its compute capability and memory, read before anything imports torch
  environment      versions, GPU, compute capability, nvcc, compute-sanitizer (a cold import of torch and
                   triton can take tens of seconds: its budget is generous)
  build            the extension for this GPU's architecture only, all cores, CUDA kernels required
  gpu-tests        ``pytest -m gpu tests`` (junit XML counted); with pytest-xdist the tests that need tens
                   of GB of GPU memory run in one worker (``xdist_group("gpu_heavy")``, ``--dist loadgroup``) and
                   every GPU test empties the caching allocator after itself (tests/conftest.py)
  sanitizer-probe  compute-sanitizer on a one-tensor torch program: where the tool refuses the device
                   (gVisor: "Device not supported") the two sanitizer steps are "skipped: sanitizer unusable here"
  memcheck         SANITIZED_TESTS (a short fixed list of small CUDA tests) under compute-sanitizer memcheck
  racecheck        the same under racecheck
  bench_*          every benchmarks/bench_*.py with ``--gpu-check``: its own short CUDA size list (goal sizes,
                   hashkern against the torch path, no torch.compile), tables rewritten after every row
Writes under $GPU_CHECK_OUT (default $OUT when set, else build/gpu_check), few files so the
device tool returns them all (it takes 8): summary.md (one page: pass/fail and time per step,
each benchmark target against its measured value and the cost model's prediction, the last lines of
each failed step), gpu_check.tar.gz (all.log with every step's output, the per-step logs, junit XML,
targets), and results/*_cuda.md (the benchmark tables: copy them into benchmarks/results/ to commit
them). The summary and the tarball are written on every exit path (a failed step, no GPU, an exception,
SIGTERM or SIGINT). Exit status 0 only when no step failed or ran out of time.
Run: ``make gpu-check``, or ``python3 -m benchmarks.gpu_check`` where there is no make.

``GPU_CHECK_DRY=1`` runs the same sequence on the CPU in under 3 minutes so it cannot rot (CI
runs it after ``make test``): the build command runs with HASHKERN_NO_EXT=1 (compiles nothing,
the extension ``make test`` built is used), the GPU tests are collected and skip, the nvidia-smi and
sanitizer steps are skipped (no GPU), and the benchmarks run ``--device cpu --tiny``.
Other variables: GPU_CHECK_DEADLINE_S (total seconds), GPU_CHECK_BUDGET_<STEP> (one step's
seconds, e.g. GPU_CHECK_BUDGET_BUILD=200), GPU_CHECK_ONLY (comma-separated step names).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from benchmarks.gpu_check_summary import junit_counts, write_summary

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
# Budgets in seconds (GPU run, dry run). The GPU budgets add up to 8 minutes (tests/test_gpu_check.py checks it).
DEADLINE_S = {"gpu": 480, "dry": 170}
BUDGETS = {"gpu": (5, 5), "environment": (45, 25), "build": (120, 25), "gpu-tests": (100, 50),
           "sanitizer-probe": (15, 5), "memcheck": (25, 5), "racecheck": (25, 5)}
# each at least the replay's estimate of its rows (tests/test_gpu_check.py)
BENCH_BUDGET = {"gpu": {"bench_hamming": 25, "bench_maxsim": 15, "bench_patchsim": 30, "bench_search": 35,
                        "bench_softsort": 40},
                "dry": {}}
BENCH_BUDGET_DEFAULT = {"gpu": 25, "dry": 35}
# A short fixed list of small CUDA tests of the hand-written CUDA kernels (12 tests; the sanitizer's
# --kernel-name keeps torch's own kernels out): odd shapes, offsets and widths, rows at odd addresses.
SANITIZED_TESTS = [
    "tests/ops/test_hamming.py::test_odd_and_empty_shapes[cuda-65-1030]",
    "tests/ops/test_hamming.py::test_odd_and_empty_shapes[cuda-4-0]",
    "tests/ops/test_hamming.py::test_non_contiguous_and_offset_inputs[cuda]",
    "tests/ops/test_search.py::test_topk_size_one_and_odd_shapes[cuda-auto]",
    "tests/ops/test_search.py::test_topk_all_codes_equal[cuda-auto]",
    "tests/ops/test_search.py::test_radius_no_queries_and_no_hits[cuda]",
    "tests/ops/test_search_gpu.py::test_misaligned_rows[cuda-1-5]",
    "tests/ops/test_search_gpu.py::test_misaligned_rows[cuda-3-12]",
    "tests/ops/test_search_gpu.py::test_misaligned_rows[cuda-7-125]",
    "tests/ops/test_search_gpu.py::test_misaligned_rows[cuda-7-129]",
    "tests/ops/test_search_gpu.py::test_misaligned_rows[cuda-0-8]",
    "tests/ops/test_search_gpu.py::test_misaligned_rows[cuda-1-1]",
]
NVIDIA_SMI = ["nvidia-smi", "--query-gpu=name,compute_cap,memory.total,driver_version", "--format=csv,noheader"]
SANITIZER_PROBE = "import torch; x = torch.ones(1024, device='cuda'); print('sanitizer probe', float(x.sum()))"

ENV_PROBE = """
import shutil, subprocess, sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA runtime", torch.version.cuda)
try:
    import triton; print("triton", triton.__version__)
except ImportError:
    print("triton not installed")
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print("gpu", torch.cuda.get_device_name(0), "|", props.multi_processor_count, "SMs |",
          round(props.total_memory / 2**30), "GiB")
    print("capability=%d.%d" % torch.cuda.get_device_capability(0))
else:
    print("gpu none")
for tool in ("nvcc", "compute-sanitizer", "ncu"):
    path = shutil.which(tool)
    run = subprocess.run([path, "--version"], capture_output=True, text=True) if path else None
    out = run.stdout.strip().splitlines() if run else []
    print(tool, path or "not found", "|", out[-1] if out else "")
"""


@dataclasses.dataclass
class Step:
    name: str
    commands: list[list[str]] = dataclasses.field(default_factory=list)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    budget_s: float = 60.0
    skip: str | None = None       # why it is skipped, when it is
    status: str = "not run"       # pass | FAIL (exit n) | TIMEOUT | skipped | not run (out of time)
    seconds: float = 0.0
    note: str = ""
    log: Path | None = None


def budget(name: str, default: float) -> float:
    return float(os.environ.get("GPU_CHECK_BUDGET_" + re.sub(r"\W", "_", name).upper(), default))


def sanitizer_prefix(tool: str) -> list[str]:
    """compute-sanitizer with the options this version has, checking hashkern's kernels only."""
    command = ["compute-sanitizer", "--tool", tool, "--error-exitcode", "7"]
    try:
        help_text = subprocess.run(["compute-sanitizer", "--help"], capture_output=True, text=True,
                                   timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        help_text = ""
    if "--report-api-errors" in help_text:  # torch probes the driver API; its failed probes are not our bugs
        command += ["--report-api-errors", "no"]
    if "--kernel-name" in help_text:  # torch's own kernels are not ours to check, and slow under the tool
        command += ["--kernel-name", "kns=hamming"]
    return command


def sanitizer_command(tool: str) -> list[str]:
    """compute-sanitizer over the short fixed list of small CUDA tests."""
    return sanitizer_prefix(tool) + [PY, "-m", "pytest", *SANITIZED_TESTS, "-q", "-x", "-p", "no:cacheprovider"]


def sanitizer_refused(log: Path) -> bool:
    """Whether the probe's log shows the tool refusing the device (not a bug of ours)."""
    text = log.read_text(errors="replace") if log is not None and log.exists() else ""
    return "Device not supported" in text or "sanitizer probe" not in text


def cuda_home() -> str:
    """$CUDA_HOME, else /usr/local/cuda when nvcc is there, else the toolkit of the nvcc on PATH."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    nvcc = shutil.which("nvcc")
    if not Path("/usr/local/cuda/bin/nvcc").exists() and nvcc:
        return str(Path(nvcc).resolve().parent.parent)
    return "/usr/local/cuda"


def plan(dry: bool, capability: str | None, out: Path, work: Path) -> list[Step]:
    """The steps in order; the same names and commands in both modes except where dry says."""
    mode = "dry" if dry else "gpu"
    pick = 1 if dry else 0
    gpu = Step("gpu", [NVIDIA_SMI])
    if dry:
        gpu.skip = "skipped: no GPU (dry run)"
    elif shutil.which("nvidia-smi") is None:
        gpu.skip = "skipped: nvidia-smi not found (the environment step reads the capability from torch)"
    steps = [gpu, Step("environment", [[PY, "-c", ENV_PROBE]])]
    # the built extension must load, with its CUDA kernels on a GPU run
    wanted = "_ext.extension_loaded()" if dry else "_ext.has_kernel('hamming_topk', 'cuda')"
    loads = [PY, "-c", f"import sys, hashkern; from hashkern import _ext; print(hashkern.build_info()); "
                       f"sys.exit(0 if {wanted} else 1)"]
    if dry:  # compiles nothing: the extension `make test` built is the one checked
        build = Step("build", [["env", "HASHKERN_NO_EXT=1", PY, "setup.py", "build_ext", "--inplace"], loads],
                     note="dry: HASHKERN_NO_EXT=1, compiles nothing; the extension `make test` built is used")
    else:
        build = Step("build", [[PY, "setup.py", "build_ext", "--inplace"], loads],
                     env={"HASHKERN_FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": capability or "9.0",
                          "MAX_JOBS": str(os.cpu_count() or 1), "CUDA_HOME": cuda_home()},
                     note=f"TORCH_CUDA_ARCH_LIST={capability}, MAX_JOBS={os.cpu_count()}")
    steps.append(build)
    # pytest-xdist (in the device image) overlaps Triton's compiles and the CPU oracles of the tests
    # (the memory-heavy tests share one worker: --dist loadgroup and their xdist_group("gpu_heavy") mark)
    workers = ["-n", "4", "--dist", "loadgroup"] if importlib.util.find_spec("xdist") is not None else []
    steps.append(Step("gpu-tests", [[PY, "-m", "pytest", "-m", "gpu", "tests", "-q", "-p", "no:cacheprovider",
                                     *workers, f"--junitxml={work / 'gpu_tests.xml'}"]],
                      env={"HASHKERN_EXPECT_CUDA": "0" if dry else "1"}))
    probe = Step("sanitizer-probe")
    sanitizers = [probe] + [Step(tool, env={"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"})  # each tensor its own allocation
                            for tool in ("memcheck", "racecheck")]
    for step in sanitizers:
        if dry:
            step.skip = "skipped: no GPU (dry run)"
        elif shutil.which("compute-sanitizer") is None:
            step.skip = "skipped: compute-sanitizer not found"
        elif step is probe:
            step.commands = [sanitizer_prefix("memcheck") + [PY, "-c", SANITIZER_PROBE]]
        else:
            step.commands = [sanitizer_command(step.name)]
    steps += sanitizers
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        args = ["--device", "cpu", "--tiny"] if dry else ["--device", "cuda", "--gpu-check"]
        seconds = BENCH_BUDGET[mode].get(script.stem, BENCH_BUDGET_DEFAULT[mode])
        steps.append(Step(script.stem, [[PY, "-m", f"benchmarks.{script.stem}", *args, "--out", str(out / "results")]],
                          env={"HASHKERN_BENCH_TARGETS": str(work / "targets.jsonl")},
                          budget_s=budget(script.stem, seconds)))
    for step in steps:
        if step.name in BUDGETS:
            step.budget_s = budget(step.name, BUDGETS[step.name][pick])
    only = [name for name in os.environ.get("GPU_CHECK_ONLY", "").split(",") if name]
    for step in steps:
        if only and step.name not in only and step.skip is None:
            step.skip = "skipped: not in GPU_CHECK_ONLY"
    return steps


def run_step(step: Step, deadline: float, echo: bool = True) -> None:
    """Run the step's commands in order under its budget (and the overall deadline), logging to step.log."""
    if step.skip:
        step.status = "skipped"
        step.note = step.skip if not step.note else f"{step.skip}; {step.note}"
        return
    allowed = min(step.budget_s, deadline - time.monotonic())
    if allowed < min(5.0, step.budget_s):  # what is left of the deadline is too short to be worth starting
        step.status = "not run (out of time)"
        return
    env = {**os.environ, **step.env, "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    step.status = "pass"
    with open(step.log, "w") as log:
        for command in step.commands:
            shown = ("<inline script>" if "\n" in arg else arg for arg in command)
            log.write(f"$ {' '.join(shown)}\n")
            log.flush()
            left = allowed - (time.monotonic() - start)
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # its own process group, killed whole on timeout
            try:
                code = process.wait(timeout=max(left, 1))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                step.status = f"TIMEOUT ({allowed:.0f} s budget)"
                log.write(f"\n[gpu-check] killed after {allowed:.0f} s\n")
                break
            if code != 0:
                step.status = f"FAIL (exit {code})" + (" sanitizer errors" if code == 7 else "")
                break
    step.seconds = time.monotonic() - start
    if echo:
        print(f"[gpu-check] {step.name}: {step.status} in {step.seconds:.1f} s", flush=True)


def capability_from(log: Path | None) -> str | None:
    """The compute capability ("9.0") in nvidia-smi's CSV line or the environment probe's capability= line."""
    if log is None or not log.exists():
        return None
    text = log.read_text(errors="replace")
    match = re.search(r"^capability=(\d+\.\d+)$", text, re.MULTILINE) or \
        re.search(r"^[^,\n]+, (\d+\.\d+), [^,\n]+, [^,\n]+$", text, re.MULTILINE)
    return match.group(1) if match else None


class Stopped(Exception):
    """SIGTERM / SIGINT: the run stops, and its summary is still written."""


def _stop(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def finish(steps: list[Step], out: Path, work: Path, mode: str, began: float, total: float, note: str = "") -> int:
    """summary.md, all.log and gpu_check.tar.gz from whatever ran; the exit status."""
    tests = next((s for s in steps if s.name == "gpu-tests"), None)
    counts = junit_counts(work / "gpu_tests.xml")
    if tests is not None and counts is not None:
        tests.note = ", ".join(f"{v} {k}" for k, v in counts.items())
        if mode == "dry" and tests.status == "pass" and counts["skipped"] == 0:
            tests.status, tests.note = "FAIL", tests.note + "; no GPU test was collected"
    write_summary(out / "summary.md", steps, mode=mode, elapsed=time.monotonic() - began, deadline=total,
                  targets=work / "targets.jsonl", tables=sorted((out / "results").glob("*.md")), note=note)
    with open(work / "all.log", "w") as combined:
        for step in steps:
            if step.log is not None and step.log.exists():
                combined.write(f"\n===== {step.name}: {step.status} =====\n{step.log.read_text(errors='replace')}")
    with tarfile.open(out / "gpu_check.tar.gz", "w:gz") as bundle:
        bundle.add(work, arcname="gpu_check")
    print((out / "summary.md").read_text(), flush=True)
    failed = [s.name for s in steps if s.status not in ("pass", "skipped")]
    return 1 if failed or note else 0


def run_all(steps: list[Step], dry: bool, out: Path, work: Path, deadline: float) -> str:
    """Run the steps in order (the plan re-made once the capability is known); returns a note for the summary
    when the run stopped early, else ""."""
    for index, step in enumerate(steps):
        step.log = work / f"{step.name}.log"
        if step.name == "build":  # the capability is known now: plan the rest with it
            capability = capability_from(steps[0].log) or capability_from(steps[1].log)
            if not dry and capability is None:
                return ("no CUDA device visible to nvidia-smi or torch: run GPU_CHECK_DRY=1 make gpu-check on a "
                        "CPU machine")
            fresh = plan(dry, capability, out, work)
            for position in range(index, len(steps)):
                steps[position] = fresh[position]
                steps[position].log = work / f"{steps[position].name}.log"
            step = steps[index]
        if step.name in ("memcheck", "racecheck"):
            probe = next(s for s in steps if s.name == "sanitizer-probe")
            if probe.commands and probe.status != "pass" and step.skip is None:
                step.skip = "skipped: sanitizer unusable here"
        run_step(step, deadline)
        if step.name == "sanitizer-probe" and step.status.startswith("FAIL") and sanitizer_refused(step.log):
            step.status, step.note = "skipped", "sanitizer unusable here: it refused the device (not our code)"
    return ""


def main() -> int:
    dry = os.environ.get("GPU_CHECK_DRY") == "1"
    mode = "dry" if dry else "gpu"
    default_out = os.environ.get("OUT") or str(ROOT / "build" / "gpu_check")
    out = Path(os.environ.get("GPU_CHECK_OUT") or default_out).resolve()
    (out / "results").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    total = float(os.environ.get("GPU_CHECK_DEADLINE_S", DEADLINE_S[mode]))
    began = time.monotonic()
    deadline = began + total
    print(f"[gpu-check] {mode} run, {total:.0f} s deadline, results under {out}", flush=True)
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    steps = plan(dry, None, out, work)
    note = ""
    try:
        note = run_all(steps, dry, out, work, deadline)
    except Stopped as stop:
        note = f"stopped by {stop} during the run"
    except Exception as error:  # the summary still says what ran
        note = f"gpu_check itself failed: {type(error).__name__}: {error}"
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        code = finish(steps, out, work, mode, began, total, note)
        shutil.rmtree(work, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
