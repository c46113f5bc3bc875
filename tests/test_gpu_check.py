"""`make gpu-check`'s machinery: step budgets and failures, the plan in both modes, the summary,
and the benchmark runner's tiny mode and targets. CI runs the whole dry run after `make test`."""
import json
import subprocess
import sys
import time

import pytest
import torch

from benchmarks import _runner, bench_hamming, gpu_check
from benchmarks.gpu_check_summary import junit_counts, write_summary


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_step_over_budget_is_killed_with_its_children(tmp_path):
    # the child spawns a grandchild; both must die when the budget runs out
    code = ("import subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
    step = gpu_check.Step("slow", [python(code)], budget_s=1.5, log=tmp_path / "slow.log")
    start = time.monotonic()
    gpu_check.run_step(step, deadline=time.monotonic() + 100, echo=False)
    assert step.status.startswith("TIMEOUT") and time.monotonic() - start < 15
    assert "killed after" in step.log.read_text()


def test_a_failing_command_stops_its_step(tmp_path):
    step = gpu_check.Step("bad", [python("print('first'); raise SystemExit(3)"), python("print('second')")],
                          log=tmp_path / "bad.log")
    gpu_check.run_step(step, deadline=time.monotonic() + 100, echo=False)
    assert step.status == "FAIL (exit 3)"
    text = step.log.read_text()
    assert "first" in text and "second" not in text


def test_the_overall_deadline_caps_every_step(tmp_path):
    step = gpu_check.Step("late", [python("pass")], budget_s=100, log=tmp_path / "late.log")
    gpu_check.run_step(step, deadline=time.monotonic() + 2, echo=False)
    assert step.status == "not run (out of time)"


def test_dry_and_gpu_runs_have_the_same_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "sanitizer_prefix", lambda tool: ["compute-sanitizer", "--tool", tool])
    monkeypatch.setattr(gpu_check.shutil, "which", lambda name: "/usr/bin/" + name)
    gpu = gpu_check.plan(False, "9.0", tmp_path, tmp_path)
    dry = gpu_check.plan(True, None, tmp_path, tmp_path)
    names = [s.name for s in gpu]
    assert names == [s.name for s in dry]
    benches = sorted(p.stem for p in (gpu_check.ROOT / "benchmarks").glob("bench_*.py"))
    assert names == ["gpu", "environment", "build", "gpu-tests", "sanitizer-probe", "memcheck", "racecheck", *benches]
    assert gpu[0].commands[0][0] == "nvidia-smi" and dry[0].skip  # the capability is read before torch loads
    assert "--gpu-check" in by_name_of(gpu)["bench_patchsim"].commands[0]
    tests = by_name_of(gpu)["gpu-tests"].commands[0]
    assert "loadgroup" in tests or "-n" not in tests  # the xdist_group("gpu_heavy") tests share one worker
    by_name = {s.name: s for s in gpu}
    assert by_name["build"].env["TORCH_CUDA_ARCH_LIST"] == "9.0" and by_name["build"].env["HASHKERN_FORCE_CUDA"] == "1"
    assert by_name["memcheck"].commands[0][:3] == ["compute-sanitizer", "--tool", "memcheck"]
    assert all("--device" in s.commands[0] and "cuda" in s.commands[0] for s in gpu if s.name in benches)
    dry_by_name = {s.name: s for s in dry}
    assert dry_by_name["memcheck"].skip and dry_by_name["racecheck"].skip
    assert dry_by_name["build"].commands[0][:2] == ["env", "HASHKERN_NO_EXT=1"]  # the build only, not the check
    assert all("--tiny" in s.commands[0] for s in dry if s.name in benches)
    assert sum(s.budget_s for s in gpu) <= 8 * 60, "the GPU run must fit in 8 minutes"


def by_name_of(steps):
    return {s.name: s for s in steps}


def test_the_sanitized_tests_exist_and_are_few():
    """Each node id names one collected CUDA test (a typo would make pytest fail under the sanitizer)."""
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                *gpu_check.SANITIZED_TESTS], capture_output=True, text=True, cwd=gpu_check.ROOT)
    ids = [line for line in collected.stdout.splitlines() if "::" in line]
    assert sorted(ids) == sorted(gpu_check.SANITIZED_TESTS) and len(ids) <= 16, collected.stdout[-2000:]
    assert all("[cuda" in node for node in ids)


def test_capability_is_read_from_nvidia_smi_or_torch(tmp_path):
    smi = tmp_path / "gpu.log"
    smi.write_text("$ nvidia-smi --query-gpu=...\nNVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 580.159.04\n")
    probe = tmp_path / "environment.log"
    probe.write_text("gpu NVIDIA H200 | 132 SMs | 140 GiB\ncapability=9.0\n")
    assert gpu_check.capability_from(smi) == "9.0" and gpu_check.capability_from(probe) == "9.0"
    assert gpu_check.capability_from(tmp_path / "missing.log") is None


def test_a_refusing_sanitizer_skips_both_sanitizer_steps(tmp_path):
    """gVisor: compute-sanitizer answers "Device not supported"; that is not a failure of the code."""
    refusal = "print('========= Device not supported on this system'); raise SystemExit(1)"
    steps = [gpu_check.Step("sanitizer-probe", [python(refusal)]),
             gpu_check.Step("memcheck", [python("raise SystemExit(7)")]),
             gpu_check.Step("racecheck", [python("raise SystemExit(7)")])]
    assert gpu_check.run_all(steps, False, tmp_path, tmp_path, time.monotonic() + 60) == ""
    assert steps[0].status == "skipped" and "unusable" in steps[0].note
    assert [s.status for s in steps[1:]] == ["skipped", "skipped"]
    assert all(s.note == "skipped: sanitizer unusable here" for s in steps[1:])


@pytest.mark.parametrize("failure", ["exception", "sigterm"])
def test_the_summary_is_written_on_every_exit_path(tmp_path, monkeypatch, failure):
    def run_all(steps, dry, out, work, deadline):
        steps[0].status, steps[0].log = "pass", work / "gpu.log"
        steps[0].log.write_text("NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 580.159.04\n")
        if failure == "sigterm":
            gpu_check._stop(gpu_check.signal.SIGTERM, None)
        raise RuntimeError("broken plan")

    monkeypatch.setattr(gpu_check, "run_all", run_all)
    monkeypatch.setenv("GPU_CHECK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("GPU_CHECK_DRY", "1")
    assert gpu_check.main() == 1
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "FAIL" in text and "stopped early" in text and "81559 MiB" in text
    assert ("SIGTERM" if failure == "sigterm" else "broken plan") in text
    assert (tmp_path / "out" / "gpu_check.tar.gz").exists()


def test_no_gpu_stops_before_the_build_with_a_summary(tmp_path, monkeypatch):
    """A GPU run on a machine without one: the environment runs, the build does not, the summary says why."""
    monkeypatch.setenv("GPU_CHECK_OUT", str(tmp_path / "out"))
    monkeypatch.delenv("GPU_CHECK_DRY", raising=False)
    monkeypatch.setattr(gpu_check.shutil, "which", lambda name: None)  # no nvidia-smi, no sanitizer
    monkeypatch.setattr(gpu_check, "ENV_PROBE", "print('gpu none')")
    assert gpu_check.main() == 1
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "no CUDA device visible" in text and "| build | not run |" in text


def test_replay_of_the_benchmark_steps_writes_every_row_and_fits_the_budgets(tmp_path, monkeypatch):
    """Each bench's --gpu-check rows (its CUDA size list) replayed on the CPU through the runner with no-op
    timings: every table is on disk with each row as soon as it is measured, and the estimated time of the rows
    (benchmarks._runner.gpu_check_row_seconds, calls predicted by the cost models) fits each bench's budget;
    the budgets of the whole GPU run add up to at most 8 minutes."""
    from benchmarks import bench_patchsim, bench_search, bench_softsort

    monkeypatch.setattr(_runner, "stamp", lambda device: "Device: a replay on the CPU (the stamp reads the GPU).")
    steps = by_name_of(gpu_check.plan(False, "9.0", tmp_path, tmp_path))
    for bench in (bench_hamming, bench_patchsim, bench_search, bench_softsort):
        planned = bench.gpu_check_rows()
        assert planned, bench.__name__
        for table in dict.fromkeys(row[0] for row in planned):
            rows = [row for row in planned if row[0] == table]
            path = tmp_path / f"{table}_cuda.md"

            def replay(device, mode, rows=rows, path=path):
                for done, (_, size, variant, call_s) in enumerate(rows):
                    yield [size, variant, f"{call_s * 1e3:.2f} ms predicted"]
                    written = [line for line in path.read_text().splitlines() if line.startswith("| ") and
                               "predicted" in line]
                    assert len(written) == done + 1, f"{table}: row {done + 1} is not on disk after it was measured"

            _runner.measure_rows(table, replay, ["size", "variant", "time"], "", torch.device("cuda"), "gpu-check",
                                 tmp_path)
            assert path.read_text().count("predicted |") == len(rows)
        seconds = _runner.GPU_CHECK_START_S + sum(_runner.gpu_check_row_seconds(row[3]) for row in planned)
        step = steps[bench.__name__.rsplit(".", 1)[1]]
        assert seconds <= step.budget_s, f"{step.name}: rows need ~{seconds:.0f} s, budget {step.budget_s:.0f} s"
    assert sum(s.budget_s for s in steps.values()) <= 8 * 60
    assert gpu_check.DEADLINE_S["gpu"] <= 8 * 60  # 2 of the device command's 10 minutes stay for start-up


def test_only_runs_the_named_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("GPU_CHECK_ONLY", "build,bench_hamming")
    monkeypatch.setenv("GPU_CHECK_BUDGET_BENCH_HAMMING", "12")
    steps = {s.name: s for s in gpu_check.plan(True, None, tmp_path, tmp_path)}
    assert steps["build"].skip is None and steps["bench_hamming"].skip is None
    assert steps["bench_hamming"].budget_s == 12
    assert steps["gpu-tests"].skip == "skipped: not in GPU_CHECK_ONLY"


def test_summary_lists_steps_targets_and_failures(tmp_path):
    ok = gpu_check.Step("build", status="pass", seconds=61.0, budget_s=130)
    bad = gpu_check.Step("bench_x", status="TIMEOUT (40 s budget)", seconds=40.0, budget_s=40, log=tmp_path / "x.log")
    bad.log.write_text("line 1\nTraceback: it broke\n")
    targets = tmp_path / "targets.jsonl"
    targets.write_text(json.dumps({"benchmark": "soft_sort", "what": "n=1024 fwd+bwd", "target": "<= 1 ms",
                                   "measured": "0.8 ms", "met": True}) + "\n")
    (tmp_path / "junit.xml").write_text('<testsuites><testsuite tests="5" failures="1" errors="0" skipped="2"/>'
                                        "</testsuites>")
    assert junit_counts(tmp_path / "junit.xml") == {"passed": 2, "failed": 1, "skipped": 2}
    assert junit_counts(tmp_path / "missing.xml") is None
    write_summary(tmp_path / "summary.md", [ok, bad], mode="gpu", elapsed=101, deadline=470, targets=targets,
                  tables=[tmp_path / "soft_sort_cuda.md"])
    text = (tmp_path / "summary.md").read_text()
    assert "FAIL (bench_x)" in text and "| build | pass | 61.0 | 130 |" in text
    assert "| soft_sort | n=1024 fwd+bwd | <= 1 ms | 0.8 ms | — | yes |" in text  # no prediction recorded
    assert "results/soft_sort_cuda.md" in text and "Traceback: it broke" in text


def test_tiny_benchmark_run_reports_targets(tmp_path, monkeypatch):
    monkeypatch.setattr(_runner, "_tiny", False)
    monkeypatch.setattr(torch._dynamo.config, "disable", False)  # restored after the test
    monkeypatch.setenv(_runner.TARGETS_ENV, str(tmp_path / "targets.jsonl"))
    (path,) = bench_hamming.main(["--tiny", "--device", "cpu", "--out", str(tmp_path)])
    assert "Tiny mode" in path.read_text() and "| 64 | 256 | 2048 |" in path.read_text()
    _runner.report_target("hamming_distance", "1000 x 1e5 at 64 bits", "<= 5 ms", "3.1 ms", True)
    (record,) = [json.loads(line) for line in (tmp_path / "targets.jsonl").read_text().splitlines()]
    assert record["met"] is True and record["tiny"] is True
