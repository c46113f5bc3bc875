"""hashkern.ops._precision: the one TF32 rule, read from either torch API without ever raising."""
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hashkern.ops._precision import dot_precision, fp32_matmul_uses_tf32


class _Refusing:
    """torch's legacy flag after the new API was used: reading it raises."""

    fp32_precision = "none"

    @property
    def allow_tf32(self):
        raise RuntimeError("mix of the legacy and new APIs")


@pytest.mark.parametrize("matmul,generic,expect", [
    (SimpleNamespace(fp32_precision="none", allow_tf32=False), "none", False),  # torch's default
    (SimpleNamespace(fp32_precision="none", allow_tf32=True), "none", True),    # legacy flag / "high"
    (SimpleNamespace(fp32_precision="tf32", allow_tf32=False), "none", True),   # new API wins
    (SimpleNamespace(fp32_precision="ieee", allow_tf32=True), "none", False),
    (SimpleNamespace(fp32_precision="none", allow_tf32=False), "tf32", True),   # inherited generic setting
    (SimpleNamespace(allow_tf32=True), None, True),                             # an older torch: legacy only
    (_Refusing(), "none", False),                                               # never raises
])
def test_tf32_rule(monkeypatch, matmul, generic, expect):
    backends = SimpleNamespace(cuda=SimpleNamespace(matmul=matmul))
    if generic is not None:
        backends.fp32_precision = generic
    monkeypatch.setattr(torch, "backends", backends)
    assert fp32_matmul_uses_tf32() is expect
    assert dot_precision(torch.float32, True) == ("tf32" if expect else "ieee")


def test_real_torch_settings():
    """With the real torch, in a fresh process: the new API read, then the legacy read torch itself refuses."""
    code = ("import torch\nfrom hashkern.ops._precision import fp32_matmul_uses_tf32 as rule\n"
            "a = rule()\ntorch.backends.cuda.matmul.fp32_precision = 'tf32'\nb = rule()\n"
            "torch.backends.cuda.matmul.fp32_precision = 'ieee'\nprint(a, b, rule())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split()
    assert out == ["False", "True", "False"]


def test_dot_precision_per_dtype():
    assert dot_precision(torch.float64, True) == "fma"
    assert dot_precision(torch.bfloat16, True) == "ieee"
    assert dot_precision(torch.float32, False) == "ieee"  # the interpreter multiplies in full fp32
