"""``hashkern info`` / ``python -m hashkern info`` / ``hashkern --version``."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hashkern
from hashkern import _ext, _info
from hashkern.training import cli

ROOT = Path(__file__).resolve().parents[1]


def test_python_m_hashkern_info_reports_versions_and_kernels():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "hashkern", "info"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith(f"hashkern {hashkern.__version__} ")
    assert f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}" in text
    for line in ("triton ", "extension: ", "built with: ", "GPU architectures compiled in: ", "CPU kernels: ",
                 "CPU: auto uses: "):
        assert "\n" + line in text, line
    if _ext.has_kernel("hamming_topk", "cpu"):
        chosen = torch.ops.hashkern._cpu_kernels("")[0]
        assert f"CPU kernels: {chosen} (" in text and "CPU: auto uses: cpu, " in text
        per_width = next(line for line in text.splitlines() if line.startswith("CPU search kernels per width: "))
        for nbits in (64, 256, 1024):
            assert f"{nbits} bits: " in per_width, per_width


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"hashkern {hashkern.__version__}"


def test_info_subcommand_prints_the_report(capsys):
    assert cli.main(["info"]) == 0
    assert capsys.readouterr().out.startswith(f"hashkern {hashkern.__version__} ")


def test_info_says_what_auto_uses_on_a_gpu_without_code_for_it(monkeypatch):
    """A V100 (7.0) seen by a build for sm_80/sm_90 + PTX 9.0: auto passes over the CUDA kernels, and says why."""
    pytest.importorskip("triton")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "Tesla V100-SXM2-16GB")
    monkeypatch.setattr(_ext, "device_capability", lambda index: (7, 0))
    monkeypatch.setattr(_ext, "compiled_cuda_archs", lambda: ["sm_80", "sm_90", "compute_90"])
    monkeypatch.setattr(_ext, "has_kernel", lambda op, backend: True)
    _ext._image_problem_for.cache_clear()
    try:
        text = _info.report()
    finally:
        _ext._image_problem_for.cache_clear()
    assert "GPU 0: Tesla V100-SXM2-16GB, compute capability 7.0; auto uses: triton, torch" in text
    assert "no code for compute capability 7.0: it was built for sm_80, sm_90, compute_90" in text
    assert "GPU architectures compiled in: sm_80, sm_90, compute_90" in text
