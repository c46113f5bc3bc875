"""Op modules that moved: their old import paths (README, "Moved names") work for one release, with a warning."""
import importlib
import pathlib
import sys
import warnings

import pytest

from hashkern._moved import MOVED

OPS_MOVED = sorted(old for old in MOVED if old.startswith("hashkern.ops."))
OLD_NAMES = {  # one name each old module was imported for, and where it lives now
    "hashkern.ops.softsort.functions": ("SortedCosineFunction", "hashkern.ops.softsort.autograd"),
    "hashkern.ops.softsort.scan_torch": ("SCRATCH_ELEMS", "hashkern.ops.softsort.torch_impl"),
    "hashkern.ops.softsort.triton_scan": ("scan_config", "hashkern.ops.softsort.triton_launch"),
    "hashkern.ops.softsort.triton_scan_kernels": ("_softsort_scan_fwd_kernel", "hashkern.ops.softsort.triton_kernels"),
    "hashkern.ops.patchsim.torch_gemm": ("patch_similarity_torch_bwd", "hashkern.ops.patchsim.torch_impl"),
    "hashkern.ops.patchsim.triton_fwd": ("_patch_similarity_fwd_kernel", "hashkern.ops.patchsim.triton_kernels"),
    "hashkern.ops.patchsim.triton_bwd": ("_patch_similarity_dx1_kernel", "hashkern.ops.patchsim.triton_kernels"),
}


def test_every_moved_op_module_is_checked():
    assert sorted(OLD_NAMES) == OPS_MOVED


@pytest.mark.parametrize("old", OPS_MOVED)
def test_an_old_path_warns_and_gives_the_moved_names(old):
    name, new = OLD_NAMES[old]
    if "triton" in new:
        pytest.importorskip("triton")
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"module {old} moved to"):
        module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=f"{old}.{name} moved to {new}.{name}"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)


def test_from_import_of_an_old_path():
    from hashkern.ops.patchsim import torch_impl
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from hashkern.ops.patchsim.torch_gemm import patch_similarity_torch_fwd
    assert patch_similarity_torch_fwd is torch_impl.patch_similarity_torch_fwd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from hashkern.ops.patchsim.torch_gemm import argmax_csr_torch  # now in _common
    from hashkern.ops.patchsim import _common
    assert argmax_csr_torch is _common.argmax_csr_torch


def test_every_old_path_is_listed_in_the_readme():
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Moved names", 1)[1]
    for old in OPS_MOVED:
        assert f"| `{old}` |" in section, old
