"""Compile the Triton softsort scans for Hopper without a GPU: ``python -m hashkern.ops.softsort._compile_check``.

Builds the launches that ``triton_scan.scan_config`` picks on CUDA (both kernels; gather and
cosine; shared and per-row values; fp32 and fp64) and compiles them for sm_90 through
:mod:`hashkern.ops._triton_aot`, printing registers and spills. Exits non-zero when one fails.
Must run without ``TRITON_INTERPRET=1``. It checks that the code builds, not that it is fast.
"""
from __future__ import annotations

import sys

import torch
import triton

from hashkern.ops._triton_aot import compile_for_gpus, make_launch
from hashkern.ops.softsort.triton_scan import scan_config
from hashkern.ops.softsort.triton_scan_kernels import _softsort_scan_bwd_kernel, _softsort_scan_fwd_kernel

_TL = {torch.float32: "fp32", torch.float64: "fp64"}
MODES = ((True, True), (False, True), (False, False))  # (COSINE, SHARED_V); the cosine shares its values


def launches(dtypes=(torch.float32, torch.float64), modes=MODES, shapes=((1024, 128), (1000, 100))) -> list[dict]:
    """The CUDA launches at real sizes, so the JIT's specialisation (ints divisible by 16 or not) is
    the one that runs: ``shapes`` are (n, d), with n anchors of n positions each."""
    result = []
    for n, d in shapes:
        cfg = scan_config(n, d, torch.device("cuda"))
        sizes = {"b": n, "n": n, "d": d, "chunk": cfg.chunk, "nchunks": triton.cdiv(n, cfg.chunk), "tau": 0.005}
        for dtype in dtypes:
            for cosine, shared in modes:
                for kernel in (_softsort_scan_fwd_kernel, _softsort_scan_bwd_kernel):
                    constexprs = {"SHARED_V": shared, "COSINE": cosine, "BA": cfg.rows, "BD": cfg.features}
                    warps = cfg.num_warps if kernel is _softsort_scan_fwd_kernel else cfg.num_warps_bwd(cosine, dtype)
                    result.append(make_launch(kernel, {"idx_ptr": "*i64", **sizes}, constexprs,
                                              {"num_warps": warps}, rest="*" + _TL[dtype]))
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
