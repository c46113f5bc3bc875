"""hashkern._C that does not load, or was built for another torch or GPU: one warning, a fallback, clear errors."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hashkern import _dispatch, _ext
from hashkern.ops import search

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda", 0)

# Makes `from hashkern import _C` fail as an extension built for another torch does.
_BREAK_C = """
import importlib.abc, sys
class BrokenExtension(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hashkern._C":
            raise ImportError("_C.so: undefined symbol: _ZN3c1017RegisterOperatorsD1Ev")
sys.meta_path.insert(0, BrokenExtension())
"""


def _run(script: str, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "HASHKERN_NO_EXT"}
    environment.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment,
                          cwd=ROOT, timeout=600)


def test_an_extension_that_fails_to_load_warns_once_and_the_ops_fall_back():
    script = _BREAK_C + """
import warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import torch, hashkern
    import hashkern.ops.search, hashkern.ops.softsort, hashkern.index  # every importer of _ext
    from hashkern._ext import ExtensionWarning
    q = hashkern.pack_bits(torch.randn(5, 64) > 0)
    db = hashkern.pack_bits(torch.randn(50, 64) > 0)
    for _ in range(3):
        dist, idx = hashkern.hamming_topk(q, db, 4)
    full = hashkern.hamming_distance(q, db)
    assert torch.equal(dist, full.sort(dim=1, stable=True).values[:, :4])
ours = [w for w in caught if issubclass(w.category, ExtensionWarning)]
print(len(ours))
print(ours[0].message if ours else "")
"""
    result = _run(script)
    assert result.returncode == 0, result.stderr
    count, message = result.stdout.split("\n", 1)
    assert count == "1", result.stdout
    assert "undefined symbol: _ZN3c1017RegisterOperatorsD1Ev" in message  # the cause
    assert f"torch {torch.__version__}" in message and "is running" in message  # what runs
    assert "built for" in message or "build record" in message  # what it was built for
    for op in ("hamming_topk", "hamming_distance", "pack_bits", "sorted_cosine"):  # what falls back
        assert op in message


def test_no_warning_when_the_extension_is_switched_off_at_import():
    script = _BREAK_C + "import warnings; warnings.simplefilter('error'); import hashkern; print(hashkern.build_info())"
    result = _run(script, HASHKERN_NO_EXT="1")
    assert result.returncode == 0, result.stderr
    assert "HASHKERN_NO_EXT=1" in result.stdout


BUILT = {"extension": "built", "torch": "2.13.0+cpu", "cuda": None, "cuda_archs": []}


def test_load_warning_says_what_was_built_and_what_runs():
    mismatch = _ext.load_warning(BUILT, None, "2.14.1+cu130", "13.0")
    assert "built for torch 2.13.0+cpu (no CUDA)" in mismatch and "torch 2.14.1+cu130 with CUDA 13.0" in mismatch
    assert _ext.load_warning(BUILT, None, "2.13.0+cpu", None) is None  # the torch it was built for
    assert _ext.load_warning(None, None, "2.13.0", None) is None  # loaded, nothing recorded to compare

    failed = {"extension": "failed", "torch": "2.13.0+cpu", "reason": "no working C++ compiler: 'c++' ..."}
    text = _ext.load_warning(failed, "hashkern was installed without it (no working C++ compiler)", "2.13.0+cpu", None)
    assert "no working C++ compiler" in text and "did not produce it" in text and "hamming_topk" in text

    skipped = {"extension": "skipped", "reason": "HASHKERN_NO_EXT=1 at build time"}
    assert _ext.load_warning(skipped, "hashkern was installed without it", "2.13.0", None) is None
    assert _ext.load_warning(BUILT, "HASHKERN_NO_EXT=1 was set when hashkern was imported", "2.13.0", None) is None
    assert "No build record" in _ext.load_warning(None, "could not be imported (ImportError)", "2.13.0", None)


def test_every_compiled_op_names_the_functions_that_lose_it():
    """KERNEL_USERS (what the warning lists) covers every op csrc registers, and nothing else."""
    schemas = set()
    for source in (ROOT / "csrc").rglob("*.cpp"):
        schemas |= set(re.findall(r'm\.def\("(\w+)\(', source.read_text()))
    assert {s for s in schemas if not s.startswith("_")} == set(_ext.KERNEL_USERS)


@pytest.mark.parametrize("capability, archs, runs", [
    ((8, 6), ["sm_80"], True),                    # machine code runs on later minors of its major
    ((8, 0), ["sm_86"], False),
    ((7, 0), ["sm_75", "sm_80", "sm_90", "compute_90"], False),  # a V100 below the default list
    ((10, 0), ["sm_80", "sm_90", "compute_90"], True),  # PTX: the driver compiles it for newer GPUs
    ((12, 0), ["sm_80", "sm_90"], False),         # no PTX, no newer GPUs
    ((9, 0), ["sm_90a"], True),
    ((10, 0), ["sm_90a", "compute_90a"], False),  # arch-specific code runs on its own GPU only
    ((7, 5), [], True),                           # nothing recorded: nothing to refuse
])
def test_which_compiled_code_runs_on_which_gpu(capability, archs, runs):
    assert (_ext.cuda_image_problem(capability, archs) is None) == runs


@pytest.fixture
def fake_gpu(monkeypatch):
    """CUDA device 0 of a settable compute capability, a build with CUDA kernels for sm_80/sm_90 + PTX 9.0."""
    gpu = {"capability": (7, 0), "reads": 0}

    def capability(index):
        gpu["reads"] += 1
        return gpu["capability"]

    monkeypatch.setattr(_ext, "device_capability", capability)
    monkeypatch.setattr(_ext, "compiled_cuda_archs", lambda: ["sm_80", "sm_90", "compute_90"])
    monkeypatch.setattr(_ext, "has_kernel", lambda op, backend: True)
    _ext._image_problem_for.cache_clear()
    yield gpu
    _ext._image_problem_for.cache_clear()


def test_auto_passes_over_cuda_kernels_without_code_for_the_gpu(fake_gpu):
    # hamming_topk's own declaration: cuda, then cpu (CPU tensors only), then torch.
    assert _dispatch.resolve_backend("auto", search.TOPK_BACKENDS, CUDA) == "torch"
    taken, trail = _dispatch._auto(search.TOPK_BACKENDS, CUDA, None, {})
    assert "no code for compute capability 7.0" in dict(trail)["cuda"]  # what explain_backend shows
    assert _ext.cuda_kernels_run_on(CUDA) is False and _ext.cuda_kernels_run_on(0) is False
    assert fake_gpu["reads"] == 1  # checked once per device
    _ext._image_problem_for.cache_clear()
    fake_gpu["capability"] = (9, 0)
    assert _dispatch.resolve_backend("auto", search.TOPK_BACKENDS, CUDA) == "cuda"


def test_auto_takes_triton_next_when_the_op_has_it(fake_gpu):
    pytest.importorskip("triton")
    with_triton = _dispatch.OpBackends("fake_op", preference=("cuda", "triton", "torch"), kernel="hamming_topk")
    assert _dispatch.resolve_backend("auto", with_triton, CUDA) == "triton"


def test_named_cuda_backend_refuses_a_gpu_without_code(fake_gpu):
    with pytest.raises(RuntimeError) as error:
        _dispatch.resolve_backend("cuda", search.TOPK_BACKENDS, CUDA)
    message = str(error.value)
    assert "compute capability 7.0" in message and "sm_80, sm_90, compute_90" in message  # what it has
    assert 'TORCH_CUDA_ARCH_LIST="7.0" pip install --no-build-isolation' in message  # how to rebuild
    assert "backend='auto'" in message
