"""Every Triton kernel of hashkern compiles for sm_90 as the GPU JIT would specialise it, on the installed Triton
and on Triton 3.6.0 (the device image's), at the goal sizes and with every size the API allows set to 1
(the JIT turns an int argument equal to 1 into a constant: ``b2.to(...)`` then fails to compile), without
register spills and within an H100's shared memory. No GPU needed (tools/aot_specs.py has the registry)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton.backends.nvidia")

from tools import aot_specs  # noqa: E402
from tools.triton_aot import compile_families  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TRITON36 = "3.6.0"  # the device image's Triton (the device notes, 2026-11)


def _kernels_in_package() -> set[str]:
    """"module.function" of every ``@triton.jit`` function named ``*_kernel`` under hashkern/."""
    found = set()
    for path in (ROOT / "hashkern").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for name in re.findall(r"@triton\.jit[^\n]*\ndef (\w+_kernel)\(", path.read_text()):
            found.add(f"{module}.{name}")
    return found


def test_every_kernel_of_the_package_is_in_the_registry():
    registered = {kernel for family in aot_specs.FAMILIES for kernel in family.kernels}
    missing = _kernels_in_package() - registered
    assert not missing, f"kernels no family of tools/aot_specs.py compiles: {sorted(missing)}"
    stale = registered - _kernels_in_package()
    assert not stale, f"registered kernels that do not exist: {sorted(stale)}"


def test_every_registered_kernel_is_launched_at_every_size_set():
    """The launches name each kernel of a family, at the real sizes and at the sizes of ones."""
    for family in aot_specs.FAMILIES:
        for which in ("real", "ones"):
            launched = {f"{launch['module']}.{launch['kernel']}" for launch in family.all_launches([which])}
            assert launched == set(family.kernels), (family.name, which, set(family.kernels) - launched)


def test_sizes_of_one_become_constants():
    """The ones set reaches the JIT's constant specialisation for each size argument that can be 1."""
    launches = aot_specs.build(["patchsim"], ["ones"])
    constants = {name for launch in launches for name, kind in launch["signature"].items() if kind == "constexpr"
                 and launch["constexprs"].get(name) == 1}
    assert {"R1", "b2", "Q", "D", "IMAGES", "r1", "rows", "images"} <= constants
    launches = aot_specs.build(["softsort_scan"], ["ones"])
    constants = {name for launch in launches for name, kind in launch["signature"].items() if kind == "constexpr"
                 and launch["constexprs"].get(name) == 1}
    assert {"b", "n", "d", "nchunks"} <= constants


def _check(reports, version):
    assert reports, "nothing was compiled"
    bad = aot_specs.problems(reports)
    assert not bad, f"triton {version}:\n" + "\n\n".join(bad)


def test_every_kernel_compiles_on_the_installed_triton():
    reports, version = compile_families(None, ("real", "ones"))
    _check(reports, version)


def _triton36_folder() -> str:
    """A folder holding Triton 3.6.0 (``pip install --target``), installed on first use; skips when it cannot be."""
    folder = Path(os.environ.get("HASHKERN_TRITON36_DIR", ROOT / "build" / "triton36"))
    probe = [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import triton; print(triton.__version__)",
             str(folder)]
    if subprocess.run(probe, capture_output=True, text=True).stdout.strip() != TRITON36:
        install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(folder),
                                  f"triton=={TRITON36}", "--no-deps"], capture_output=True, text=True)
        if install.returncode != 0:
            pytest.skip(f"triton {TRITON36} could not be installed into {folder}: {install.stderr.strip()[-300:]}")
    return str(folder)


def test_every_kernel_compiles_on_triton_3_6():
    """The device image's Triton: the goal sizes in each family's first dtype, and the sizes of ones."""
    reports, version = compile_families(None, ("real", "ones"), triton_path=_triton36_folder(), all_dtypes=False)
    assert version == TRITON36
    _check(reports, version)
