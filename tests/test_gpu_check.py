"""`make gpu-check`'s machinery: step budgets and failures, the plan in both modes, the summary,
and the benchmark runner's tiny mode and targets. CI runs the whole dry run after `make test`."""
import json
import sys
import time

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
    monkeypatch.setattr(gpu_check, "sanitizer_command", lambda tool: ["compute-sanitizer", "--tool", tool])
    monkeypatch.setattr(gpu_check.shutil, "which", lambda name: "/usr/bin/" + name)
    gpu = gpu_check.plan(False, "9.0", tmp_path, tmp_path)
    dry = gpu_check.plan(True, None, tmp_path, tmp_path)
    names = [s.name for s in gpu]
    assert names == [s.name for s in dry]
    benches = sorted(p.stem for p in (gpu_check.ROOT / "benchmarks").glob("bench_*.py"))
    assert names == ["environment", "build", "gpu-tests", "memcheck", "racecheck", *benches]
    by_name = {s.name: s for s in gpu}
    assert by_name["build"].env["TORCH_CUDA_ARCH_LIST"] == "9.0" and by_name["build"].env["HASHKERN_FORCE_CUDA"] == "1"
    assert by_name["memcheck"].commands[0][:3] == ["compute-sanitizer", "--tool", "memcheck"]
    assert all("--device" in s.commands[0] and "cuda" in s.commands[0] for s in gpu if s.name in benches)
    dry_by_name = {s.name: s for s in dry}
    assert dry_by_name["memcheck"].skip and dry_by_name["racecheck"].skip
    assert dry_by_name["build"].commands[0][:2] == ["env", "HASHKERN_NO_EXT=1"]  # the build only, not the check
    assert all("--tiny" in s.commands[0] for s in dry if s.name in benches)
    assert sum(s.budget_s for s in gpu) <= 8 * 60, "the GPU run must fit in 8 minutes"


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
    assert "| soft_sort | n=1024 fwd+bwd | <= 1 ms | 0.8 ms | yes |" in text
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
