"""Every Triton kernel of hashkern compiles for sm_90 as the GPU JIT would specialise it, on the installed Triton
and on Triton 3.6.0 (the device image's), at the goal sizes and with every size the API allows set to 1
(the JIT turns an int argument equal to 1 into a constant: ``b2.to(...)`` then fails to compile), without
register spills and within an H100's shared memory. No GPU needed (tools/aot_specs.py has the registry)."""
import os
import re
import subprocess
import sys
import warnings
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
    for line in aot_specs.problems(reports, known=True):
        warnings.warn(f"triton {version}: {line}")
    bad = aot_specs.problems(reports)
    assert not bad, f"triton {version}:\n" + "\n\n".join(bad)


@pytest.fixture(scope="module")
def pinned():
    """(reports, version) of every family at every size set, on the installed Triton."""
    return compile_families(None, ("real", "ones"))


def test_every_kernel_compiles_on_the_installed_triton(pinned):
    _check(*pinned)


def test_gemm_kernels_use_tensor_cores(pinned):
    """bf16 / fp16 / TF32 GEMMs of patch similarity (forward and softmaxmean's dS) run on mma/wgmma, not FMAs."""
    gemm = [r for r in pinned[0] if r["ok"] and r["constexprs"].get("DOT_PRECISION") in ("tf32", "ieee")
            and (r["signature"]["x1_ptr"] in ("*bf16", "*fp16") or r["constexprs"]["DOT_PRECISION"] == "tf32")]
    kinds = {(r["kernel"].rsplit(".", 1)[1], r["signature"]["x1_ptr"], r["constexprs"]["DOT_PRECISION"]) for r in gemm}
    assert len(kinds) == 2 * 3  # (forward, dS) x (bf16, fp16, tf32)
    scalar = [f"{r['kernel']} [{r['sizes']}]" for r in gemm if not r["tensor_cores"]]
    assert not scalar, "\n".join(scalar)


def test_launches_carry_the_jit_specialisation():
    """The check compiles what the JIT would run: aligned pointers and multiples of 16 are marked divisible."""
    import torch

    size = dict(b1=256, P=196, b2=256, Q=196, D=768)
    launch = aot_specs.patchsim_launches(size, torch.bfloat16)[0]
    names = list(launch["signature"])
    divisible = {names[index] for index, attr in launch["attrs"] if attr == [["tt.divisibility", 16]]}
    assert {"x1_ptr", "x2_ptr", "value_ptr", "stat_ptr", "D", "s1r", "s2r", "R1", "b2"} <= divisible
    assert "Q" not in divisible and "IMAGES" not in divisible  # 196 and the image count are not multiples of 16
    assert launch["signature"]["s1d"] == "constexpr" and launch["constexprs"]["s1d"] == 1  # stride 1: a constant


def _triton36_folder() -> str:
    """A folder holding Triton 3.6.0 (``pip install --target``), installed on first use; skips when it cannot be."""
    folder = Path(os.environ.get("HASHKERN_TRITON36_DIR", ROOT / "build" / "triton36"))
    version = "import sys; sys.path.insert(0, sys.argv[1]); import triton; print(triton.__version__)"
    probe = [sys.executable, "-c", version, str(folder)]
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
