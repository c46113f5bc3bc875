"""setup.py without a working compiler or OpenMP: the build goes on without hashkern._C and says so, unless forced."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _build_ext(tmp_path: Path, **env) -> subprocess.CompletedProcess:
    """``setup.py build_ext`` into tmp_path (not in place: the source tree is left alone)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HASHKERN_")}
    environment.update(env)
    command = [sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path / "lib"),
               "--build-temp", str(tmp_path / "temp")]
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)


def _record(tmp_path: Path) -> dict:
    namespace = {}
    exec((tmp_path / "lib" / "hashkern" / "_build_info.py").read_text(), namespace)
    return namespace["BUILD"]


def test_without_a_compiler_the_build_succeeds_without_the_extension(tmp_path):
    result = _build_ext(tmp_path, CXX="/bin/false")
    assert result.returncode == 0, result.stderr
    assert "installing WITHOUT the compiled extension hashkern._C: no working C++ compiler: '/bin/false'" \
        in result.stderr
    record = _record(tmp_path)
    assert record["extension"] == "failed" and "no working C++ compiler" in record["reason"]
    assert not list((tmp_path / "lib").rglob("_C*.so"))


def test_a_compiler_without_openmp_is_named(tmp_path):
    compiler = tmp_path / "no-openmp-c++"
    compiler.write_text('#!/bin/sh\nfor a; do [ "$a" = -fopenmp ] && { echo "omp.h: No such file" >&2; exit 1; }; '
                        'done\nexec c++ "$@"\n')
    compiler.chmod(compiler.stat().st_mode | stat.S_IEXEC)
    result = _build_ext(tmp_path, CXX=str(compiler))
    assert result.returncode == 0, result.stderr
    assert "has no OpenMP (-fopenmp failed: omp.h: No such file)" in _record(tmp_path)["reason"]


@pytest.mark.parametrize("force", ["HASHKERN_FORCE_EXT"])
def test_forcing_the_extension_makes_a_missing_compiler_fatal(tmp_path, force):
    result = _build_ext(tmp_path, CXX="/bin/false", **{force: "1"})
    assert result.returncode != 0
    assert "HASHKERN_FORCE_EXT=1 and the extension cannot be built: no working C++ compiler" in result.stderr
