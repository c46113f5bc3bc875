"""Compile the softsort kernels for a Hopper GPU without one: ``python -m hashkern.ops.softsort._compile_check``.

Runs Triton's full pipeline (to PTX, then ``ptxas`` for sm_90a) on the tile sizes that
``launch_config`` picks on CUDA, and prints registers, spills and shared memory per kernel. It
exits non-zero when a kernel fails to compile or needs more shared memory than an H100 has.
Must run without ``TRITON_INTERPRET=1``. It checks that the code builds, not that it is fast.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from hashkern.ops.softsort.triton_bwd import _soft_sort_gather_bwd_kernel
from hashkern.ops.softsort.triton_fwd import _soft_sort_gather_fwd_kernel, dot_precision, launch_config

H100_SMEM = 232448  # bytes of shared memory one block may use on sm_90
_TL = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}
_FLOATS = {"inv_tau", "eps"}


def _signature(fn, pointers: dict[str, str]) -> dict[str, str]:
    sig = {}
    for name in fn.arg_names:
        if name in pointers:
            sig[name] = "*" + pointers[name]
        elif name.isupper() or name.startswith("BLOCK"):
            sig[name] = "constexpr"
        else:
            sig[name] = "fp32" if name in _FLOATS else "i32"
    return sig


def _ptxas_report(ptx: str) -> str:
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as handle:
        handle.write(ptx)
    try:
        out = subprocess.run([ptxas, "-v", "--gpu-name=sm_90a", handle.name, "-o", os.devnull],
                             capture_output=True, text=True, check=True).stderr
    finally:
        os.unlink(handle.name)
    regs = re.search(r"Used (\d+) registers", out)
    spills = re.search(r"(\d+) bytes spill stores", out)
    return f"{regs.group(1) if regs else '?'} regs, {spills.group(1) if spills else '?'} B spilled"


def compile_all(dtypes=(torch.bfloat16, torch.float16, torch.float32, torch.float64), dims=(64, 128, 256)) -> bool:
    target = GPUTarget("cuda", 90, 32)
    cuda = torch.device("cuda")
    ok = True
    for dtype in dtypes:
        t, acc = _TL[dtype], ("fp64" if dtype == torch.float64 else "fp32")
        acc_tl = tl.float64 if dtype == torch.float64 else tl.float32
        for d in dims:
            jobs = []
            for mode in (0, 1, 2):
                ptrs = dict(Q=t, S=t, V=t, U=acc, G=acc, OUT=t if mode == 0 else acc, LSE=acc, DELTA=acc, DU=acc)
                jobs.append((_soft_sort_gather_fwd_kernel, ptrs, "fwd", dict(MODE=mode)))
            for shared in (True, False):
                ptrs = dict(Q=t, S=t, V=t, LSE=acc, DE=t, DELTA=acc, DQ=acc, DS=acc, DV=acc)
                jobs.append((_soft_sort_gather_bwd_kernel, ptrs, "bwd", dict(SHARED_V=shared, ROWS=8 if shared else 1)))
            for fn, ptrs, kind, extra in jobs:
                block_k, block_j, block_d, warps = launch_config(4096, d, cuda, dtype, kind)
                consts = dict(extra, ACC=acc_tl, PRECISION=dot_precision(dtype),
                              BLOCK_K=block_k, BLOCK_J=block_j, BLOCK_D=block_d)
                label = f"{fn.__name__:34s} {t:4s} d={d:<3d} {extra}"
                try:
                    kernel = triton.compile(ASTSource(fn=fn, signature=_signature(fn, ptrs), constexprs=consts),
                                            target=target, options={"num_warps": warps})
                except Exception as error:  # report every failure, not just the first
                    print(f"FAIL {label}: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
                    ok = False
                    continue
                smem = kernel.metadata.shared
                fits = smem <= H100_SMEM
                ok &= fits
                print(f"{'ok  ' if fits else 'SMEM'} {label} {smem} B smem, {_ptxas_report(kernel.asm['ptx'])}")
    return ok


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: the interpreter does not compile kernels")
    sys.exit(0 if compile_all() else 1)
