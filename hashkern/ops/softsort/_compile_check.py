"""Compile the Triton softsort scans for Hopper without a GPU: ``python -m hashkern.ops.softsort._compile_check``.

Builds the launches that ``triton_scan.scan_config`` picks on CUDA (both kernels; gather and
cosine; shared and per-row values; fp32 and fp64) and compiles them for sm_90 through
:mod:`hashkern.ops._triton_aot`, printing registers and spills. Exits non-zero when one fails.
Must run without ``TRITON_INTERPRET=1``. It checks that the code builds, not that it is fast.
"""
from __future__ import annotations

import sys

import torch

from hashkern.ops._triton_aot import compile_for_gpus, make_launch
from hashkern.ops.softsort.triton_scan import scan_config
from hashkern.ops.softsort.triton_scan_kernels import _softsort_scan_bwd_kernel, _softsort_scan_fwd_kernel

_TL = {torch.float32: "fp32", torch.float64: "fp64"}
MODES = ((True, True), (False, True), (False, False))  # (COSINE, SHARED_V); the cosine shares its values


def launches(dtypes=(torch.float32, torch.float64), modes=MODES, n=1024, d=128) -> list[dict]:
    cfg = scan_config(n, d, torch.device("cuda"))
    result = []
    for dtype in dtypes:
        pointer = "*" + _TL[dtype]
        types = {"idx_ptr": "*i64", "b": "i32", "n": "i32", "d": "i32", "chunk": "i32", "nchunks": "i32",
                 "tau": "fp64"}
        for cosine, shared in modes:
            for kernel in (_softsort_scan_fwd_kernel, _softsort_scan_bwd_kernel):
                constexprs = {"SHARED_V": shared, "COSINE": cosine, "BA": cfg.rows, "BD": cfg.features}
                warps = cfg.num_warps if kernel is _softsort_scan_fwd_kernel else cfg.num_warps_bwd(cosine, dtype)
                result.append(make_launch(kernel, types, constexprs, {"num_warps": warps}, rest=pointer))
    return result


def compile_all(dtypes=(torch.float32, torch.float64), modes=MODES) -> bool:
    ok = True
    for report in compile_for_gpus(launches(dtypes, modes), archs=(90,)):
        name = report["kernel"].rsplit(".", 1)[-1]
        label = f"{name} {report['signature'].get('q_ptr')} {report['constexprs']}"
        if report["ok"]:
            print(f"ok   {label}: {report['registers']} registers, {report['spill_bytes']} spill bytes, "
                  f"{report['shared']} B shared")
            ok &= not report["spill_bytes"]
        else:
            print(f"FAIL {label}: {report['error']}")
            ok = False
    return ok


if __name__ == "__main__":
    sys.exit(0 if compile_all() else 1)
