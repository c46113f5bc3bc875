"""Compile the softsort kernels for a Hopper GPU without one: ``python -m hashkern.ops.softsort._compile_check``.

Builds the launches of the tile sizes that ``launch_config`` picks on CUDA and compiles them for
sm_90 through :mod:`hashkern.ops._triton_aot` (Triton's full pipeline to PTX, then ``ptxas``), and
prints registers, spills and shared memory per kernel. It exits non-zero when a kernel fails to
compile or needs more shared memory than an H100 has. Must run without ``TRITON_INTERPRET=1``.
It checks that the code builds, not that it is fast.
"""
from __future__ import annotations

import json
import os
import sys

import torch
import triton.language as tl

from hashkern.ops._triton_aot import SHARED_LIMIT, compile_for_gpus, make_launch
from hashkern.ops.softsort.triton_bwd import _soft_sort_gather_bwd_kernel
from hashkern.ops.softsort.triton_fwd import _soft_sort_gather_fwd_kernel, dot_precision, launch_config

H100_SMEM = SHARED_LIMIT[90]  # bytes of shared memory one block may use on sm_90
_TL = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}
_SCALARS = {"inv_tau": "fp32", "eps": "fp32"}  # every other runtime scalar (sizes, strides) is i32
_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)


def launches(dtypes=_DTYPES, dims=(64, 128, 256)) -> list[tuple[str, dict]]:
    """``(label, launch)`` for every softsort kernel variant, dtype and width ``d``, with CUDA's tiles."""
    cuda = torch.device("cuda")
    result = []
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
                arg_types = dict({name: "*" + ty for name, ty in ptrs.items()}, **_SCALARS)
                label = f"{fn.__name__:34s} {t:4s} d={d:<3d} {extra}"
                result.append((label, make_launch(fn, arg_types, consts, {"num_warps": warps}, rest="i32")))
    return result


def _key(kernel: str, launch: dict) -> str:
    return json.dumps([kernel, launch["signature"], launch["constexprs"], launch["options"]], sort_keys=True)


def compile_all(dtypes=_DTYPES, dims=(64, 128, 256)) -> bool:
    labelled = launches(dtypes, dims)
    reports = {_key(r["kernel"], r): r for r in compile_for_gpus([launch for _, launch in labelled], archs=(90,))}
    ok = True
    for label, launch in labelled:
        report = reports[_key(f"{launch['module']}.{launch['kernel']}", launch)]
        if not report["ok"]:  # every failure is reported, not just the first
            print(f"FAIL {label}: {report['error'].splitlines()[0][:200]}")
            ok = False
            continue
        smem = report["shared"]
        fits = smem <= H100_SMEM
        ok &= fits
        regs = "?" if report["registers"] is None else report["registers"]
        spills = "?" if report["spill_bytes"] is None else report["spill_bytes"]
        print(f"{'ok  ' if fits else 'SMEM'} {label} {smem} B smem, {regs} regs, {spills} B spilled")
    return ok


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: the interpreter does not compile kernels")
    sys.exit(0 if compile_all() else 1)
