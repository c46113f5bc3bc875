"""The benchmark harness end to end, at smoke size: measured rows under a provenance stamp."""
import torch

from benchmarks import bench_hamming
from benchmarks._runner import measure


def test_bench_hamming_writes_a_stamped_table(tmp_path):
    (path,) = bench_hamming.main(["--quick", "--device", "cpu", "--out", str(tmp_path)])
    text = path.read_text()
    assert path.name == "hamming_distance_cpu.md"
    assert "torch " + torch.__version__ in text and "Commit " in text
    rows = [line for line in text.splitlines() if line.startswith("| 64 |")]
    assert len(rows) == 4 and all("failed" not in row for row in rows)
    assert "hashkern.hamming_distance" in rows[-1]


def test_measure_reports_time_and_peak_memory():
    ms, peak = measure(lambda: torch.ones(1 << 20), torch.device("cpu"), min_runs=3, budget_s=0.05)
    assert ms > 0
    assert peak >= 4 << 20  # the 4 MiB the call allocates


def test_python_m_benchmarks_selects_by_name(capsys):
    from benchmarks.__main__ import benchmark_names, main, select

    assert "bench_hamming" in benchmark_names()
    assert select(["hamming"]) == select(["bench_hamming"]) == ["bench_hamming"]
    assert select(None) == benchmark_names()
    assert main(["--only", "no_such_benchmark"]) == 2
    assert "no benchmark named" in capsys.readouterr().err
