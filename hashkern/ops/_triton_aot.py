"""Compile the project's Triton kernels for real GPUs on a machine without one.

A developer tool, not used by the ops themselves. Launches come from two places: recorded while
the ops run under the Triton interpreter (kernel, argument types, constexpr values, num_warps,
num_stages; ``record_launches``), or built by hand for the tile sizes the CUDA path picks
(``make_launch``). Each distinct launch is then compiled ahead of time, in a process without the
interpreter, for sm_80 and sm_90 down to a cubin (``compile_for_gpus``), and reported with its
shared memory, whether it uses tensor cores, and the registers and spill bytes ``ptxas -v``
reports. This catches what the interpreter lets through and a GPU would refuse: dot shapes under
16, bad layouts, type errors, too much shared memory. It cannot check numerics or speed.

``python -m hashkern.ops._triton_aot`` is the compile process: it reads ``{"launches": [...],
"archs": [...]}`` as JSON on stdin and prints the reports as one JSON line.
"""
from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager

import torch

_TORCH_TO_TRITON = {
    torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
    torch.int8: "i8", torch.int16: "i16", torch.int32: "i32", torch.int64: "i64", torch.uint8: "u8",
    torch.bool: "i1",
}
# Shared memory a block may use: 163 KiB on sm_80 (A100), 227 KiB on sm_90 (H100).
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}


def _arg_type(value):
    if isinstance(value, torch.Tensor):
        return "*" + _TORCH_TO_TRITON[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    if value is None:
        return "constexpr"
    raise TypeError(f"cannot type a Triton argument of {type(value).__name__}")


def _encode_constexpr(value):
    import triton.language as tl

    if isinstance(value, tl.dtype):  # e.g. an output dtype chosen by the launcher
        return {"tl_dtype": value.name}
    return value


def _decode_constexpr(value):
    import triton.language as tl

    return tl.dtype(value["tl_dtype"]) if isinstance(value, dict) else value


def _python_fn(kernel):
    """The Python function under a JITFunction, InterpretedFunction or Autotuner."""
    while hasattr(kernel, "fn"):
        kernel = kernel.fn
    return kernel


def make_launch(kernel, arg_types: dict[str, str], constexprs: dict, options: dict, rest: str | None = None) -> dict:
    """A launch dict for ``kernel`` without running it.

    ``arg_types`` gives the Triton type of runtime arguments ("*fp16", "i32", "fp32", ...; names
    the kernel lacks are ignored), ``rest`` the type of any runtime argument it leaves out (None:
    none may be left out). Arguments annotated ``tl.constexpr`` take their values from
    ``constexprs``; ``options`` holds num_warps and num_stages.
    """
    fn = _python_fn(kernel)
    annotations = inspect.get_annotations(fn)
    signature = {}
    for name in inspect.signature(fn).parameters:
        if "constexpr" in str(annotations.get(name, "")):
            signature[name] = "constexpr"
        elif name in arg_types or rest is None:
            signature[name] = arg_types[name]
        else:
            signature[name] = rest
    return {"module": fn.__module__, "kernel": fn.__name__, "signature": signature,
            "constexprs": {name: _encode_constexpr(value) for name, value in constexprs.items()},
            "options": dict(options)}


@contextmanager
def record_launches():
    """Yields a list that fills with one dict per kernel launch made under the interpreter."""
    from triton.runtime.interpreter import InterpretedFunction

    launches = []
    original = InterpretedFunction.run

    def recording_run(self, *args, grid, warmup, **kwargs):
        options = {key: kwargs.pop(key) for key in ("num_warps", "num_stages") if key in kwargs}
        bound = inspect.signature(self.fn).bind(*args, **kwargs)
        bound.apply_defaults()
        annotations = inspect.get_annotations(self.fn)
        signature, constexprs = {}, {}
        for name, value in bound.arguments.items():
            if "constexpr" in str(annotations.get(name, "")) or value is None:
                signature[name] = "constexpr"
                constexprs[name] = _encode_constexpr(value)
            else:
                signature[name] = _arg_type(value)
        launches.append({"module": self.fn.__module__, "kernel": self.fn.__name__, "signature": signature,
                         "constexprs": constexprs, "options": options})
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = recording_run
    try:
        yield launches
    finally:
        InterpretedFunction.run = original


def unique(launches):
    seen, result = set(), []
    for launch in launches:
        key = json.dumps(launch, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            result.append(launch)
    return result


def compile_for_gpus(launches, archs=(80, 90), timeout=900):
    """Compile each distinct launch for each arch in a fresh process; returns one report per
    (launch, arch): kernel, arch, constexprs, options, signature, ok, and when ok shared (bytes),
    tensor_cores, cubin_bytes, registers and spill_bytes (None where ptxas does not say), else error."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    payload = json.dumps({"launches": unique(launches), "archs": list(archs)})
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-m", "hashkern.ops._triton_aot"], input=payload, capture_output=True,
                            text=True, env=env, timeout=timeout, cwd=package_root)
    if result.returncode != 0:
        raise RuntimeError(f"the compile process failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _ptxas_usage(ptx: str, arch: int) -> tuple[int | None, int | None]:
    """Registers per thread and bytes of spill stores that ``ptxas -v`` reports for ``ptx``."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as handle:
        handle.write(ptx)
    try:
        log = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name={sm_arch_from_capability(arch)}",
                              handle.name, "-o", os.devnull], capture_output=True, text=True, check=True).stderr
    finally:
        os.unlink(handle.name)
    registers = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores", log)
    return (int(registers.group(1)) if registers else None, int(spills.group(1)) if spills else None)


def _compile_all(request):
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    reports = []
    for launch in request["launches"]:
        kernel = getattr(importlib.import_module(launch["module"]), launch["kernel"])
        for arch in request["archs"]:
            report = {"kernel": f"{launch['module']}.{launch['kernel']}", "arch": arch,
                      "constexprs": launch["constexprs"], "options": launch["options"],
                      "signature": launch["signature"]}
            try:
                constexprs = {name: _decode_constexpr(v) for name, v in launch["constexprs"].items()}
                source = ASTSource(fn=kernel, signature=launch["signature"], constexprs=constexprs)
                compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=launch["options"])
                ptx = compiled.asm["ptx"]
                registers, spill_bytes = _ptxas_usage(ptx, arch)
                report.update(ok=True, shared=compiled.metadata.shared,
                              tensor_cores="mma" in ptx, cubin_bytes=len(compiled.asm["cubin"]),
                              registers=registers, spill_bytes=spill_bytes)
            except Exception as error:  # reported per launch, so one failure shows them all
                report.update(ok=False, error=f"{type(error).__name__}: {str(error)[-1500:]}")
            reports.append(report)
    return reports


if __name__ == "__main__":
    print(json.dumps(_compile_all(json.loads(sys.stdin.read()))))
