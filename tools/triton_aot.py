"""Compile the project's Triton kernels for real GPUs on a machine without one.

A developer tool, not used by the ops themselves. Launches come from two places: recorded while
the ops run under the Triton interpreter (kernel, argument types, constexpr values, num_warps,
num_stages; ``record_launches``), or built by hand for the tile sizes the CUDA path picks
(``make_launch``). Either way each argument is specialised by the installed Triton's own JIT binder
(``jit_specialization``): pointers aligned to 16 bytes and ints divisible by 16 carry
``tt.divisibility = 16``, ints equal to 1 become constants, floats are fp32 unless annotated, so
the check compiles the kernel the JIT would (vectorised loads, ``cp.async`` pipelines and their shared
memory), not a generic one. Each distinct launch is then compiled ahead of time, in a process without the
interpreter, for sm_80 and sm_90 down to a cubin (``compile_for_gpus``), and reported with its
shared memory, whether it uses tensor cores, and the registers and spill bytes ``ptxas -v``
reports. This catches what the interpreter lets through and a GPU would refuse: dot shapes under
16, bad layouts, type errors, too much shared memory. It cannot check numerics or speed.

``python -m tools.triton_aot`` is the compile process: it reads ``{"launches": [...], "archs": [...]}``
or ``{"families": [...] | null, "which": [...], "archs": [...]}`` (launches built there from
``tools.aot_specs``, with that process's Triton) as JSON on stdin and prints ``{"triton": version,
"reports": [...]}`` as one JSON line.
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


_TRITON_TO_TORCH = {name: dtype for dtype, name in _TORCH_TO_TRITON.items() if dtype != torch.bool}


def _placeholder(type_name: str):
    """A value the JIT specialises like an argument known only by its type: a 16-byte aligned tensor for a
    pointer (as every torch allocation is), an int that is neither 1 nor a multiple of 16, a float."""
    if type_name.startswith("*"):
        return torch.empty(0, dtype=_TRITON_TO_TORCH[type_name[1:]], device="meta")
    if type_name in ("i1", "u1"):
        return True
    if type_name.startswith(("i", "u")):
        return 3 if type_name.endswith(("8", "16", "32")) else 2**40 + 3
    if type_name.startswith(("fp", "bf")):
        return 0.5
    raise TypeError(f"cannot stand in for a Triton argument of type {type_name!r}")


def jit_specialization(kernel, arguments: dict) -> tuple[dict, dict, list]:
    """(signature, constexprs, attrs) of ``kernel`` called with ``arguments`` (name -> value, every
    parameter), exactly as the installed Triton's JIT binder specialises them. attrs is a JSON-able list of
    [parameter index, attribute list] (e.g. ``[3, [["tt.divisibility", 16]]]``)."""
    from triton.backends.compiler import BaseBackend
    from triton.runtime.jit import KernelParam, create_function_from_signature

    fn = _python_fn(kernel)
    signature = inspect.signature(fn)
    params = [KernelParam(i, p, False, False) for i, p in enumerate(signature.parameters.values())]
    binder = create_function_from_signature(signature, params, BaseBackend)
    bound, specialization, _ = binder(**arguments)
    types, constexprs, attrs = {}, {}, []
    for index, (name, (kind, spec)) in enumerate(zip(bound, specialization)):
        types[name] = kind
        if kind == "constexpr":
            constexprs[name] = _encode_constexpr(bound[name])
        elif isinstance(spec, str):
            attrs.append([index, BaseBackend.parse_attr(spec)])
    return types, constexprs, attrs


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


def make_launch(kernel, arg_types: dict, constexprs: dict, options: dict, rest: str | None = None) -> dict:
    """A launch dict for ``kernel`` without running it.

    ``arg_types`` gives each runtime argument either its real value (an int, float, bool or tensor —
    meta tensors will do: specialised exactly as the JIT would) or only its Triton type ("*fp16",
    "i32", "fp32", ...: a pointer is taken as 16-byte aligned like every torch allocation, an int as
    neither 1 nor a multiple of 16); names the kernel lacks are ignored, ``rest`` types any runtime
    argument left out (None: none may be left out). Arguments annotated ``tl.constexpr`` take their
    values from ``constexprs``; ``options`` holds num_warps and num_stages.
    """
    fn = _python_fn(kernel)
    annotations = inspect.get_annotations(fn)
    arguments = {}
    for name in inspect.signature(fn).parameters:
        if "constexpr" in str(annotations.get(name, "")):
            arguments[name] = _decode_constexpr(_encode_constexpr(constexprs[name]))
        else:
            value = arg_types[name] if name in arg_types or rest is None else rest
            arguments[name] = _placeholder(value) if isinstance(value, str) else value
    signature, constants, attrs = jit_specialization(fn, arguments)
    return {"module": fn.__module__, "kernel": fn.__name__, "signature": signature, "constexprs": constants,
            "attrs": attrs, "options": dict(options)}


@contextmanager
def record_launches():
    """Yields a list that fills with one dict per kernel launch made under the interpreter."""
    from triton.runtime.interpreter import InterpretedFunction

    launches = []
    original = InterpretedFunction.run

    def recording_run(self, *args, grid, warmup, **kwargs):
        options = {key: kwargs[key] for key in ("num_warps", "num_stages") if key in kwargs}
        call = {key: value for key, value in kwargs.items() if key not in ("num_warps", "num_stages")}
        bound = inspect.signature(self.fn).bind(*args, **call)
        bound.apply_defaults()
        signature, constexprs, attrs = jit_specialization(self.fn, dict(bound.arguments))
        launches.append({"module": self.fn.__module__, "kernel": self.fn.__name__, "signature": signature,
                         "constexprs": constexprs, "attrs": attrs, "options": options})
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = recording_run
    try:
        yield launches
    finally:
        InterpretedFunction.run = original


def unique(launches):
    """The launches that compile to different code (the ``sizes`` label of a launch is not part of it)."""
    seen, result = set(), []
    for launch in launches:
        key = json.dumps({k: v for k, v in launch.items() if k != "sizes"}, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            result.append(launch)
    return result


def _compile_process(request: dict, triton_path: str | None, timeout: float) -> dict:
    """Run this module as the compile process on ``request``; ``triton_path`` goes first on its path."""
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (triton_path, repo_root, env.get("PYTHONPATH")) if p)
    result = subprocess.run([sys.executable, "-m", "tools.triton_aot"], input=json.dumps(request),
                            capture_output=True, text=True, env=env, timeout=timeout, cwd=repo_root)
    if result.returncode != 0:
        raise RuntimeError(f"the compile process failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def compile_for_gpus(launches, archs=(80, 90), timeout=900, triton_path: str | None = None):
    """Compile each distinct launch for each arch in a fresh process; returns one report per
    (launch, arch): kernel, arch, constexprs, options, signature, ok, and when ok shared (bytes),
    tensor_cores, cubin_bytes, registers and spill_bytes (None where ptxas does not say), else error."""
    return _compile_process({"launches": unique(launches), "archs": list(archs)}, triton_path, timeout)["reports"]


def compile_families(names=None, which=("real", "ones"), archs=(90,), triton_path: str | None = None,
                     all_dtypes: bool = True, timeout=1800) -> tuple[list[dict], str]:
    """(reports, Triton version) of the kernel families of ``tools.aot_specs`` (all when ``names`` is None),
    built and compiled in one fresh process, so the launches carry the specialisation of the Triton found
    there (``triton_path`` first on its path: another version than the installed one)."""
    request = {"families": names, "which": list(which), "all_dtypes": all_dtypes, "archs": list(archs)}
    answer = _compile_process(request, triton_path, timeout)
    return answer["reports"], answer["triton"]


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


def _compile_one(job) -> dict:
    """Compile one (launch, arch) to a cubin; its report."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    launch, arch = job
    report = {"kernel": f"{launch['module']}.{launch['kernel']}", "arch": arch, "sizes": launch.get("sizes", ""),
              "constexprs": launch["constexprs"], "options": launch["options"], "signature": launch["signature"]}
    try:
        kernel = getattr(importlib.import_module(launch["module"]), launch["kernel"])
        constexprs = {name: _decode_constexpr(v) for name, v in launch["constexprs"].items()}
        attrs = {(index,): attr for index, attr in launch.get("attrs", [])}
        source = ASTSource(fn=kernel, signature=launch["signature"], constexprs=constexprs, attrs=attrs)
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=launch["options"])
        ptx = compiled.asm["ptx"]
        registers, spill_bytes = _ptxas_usage(ptx, arch)
        report.update(ok=True, shared=compiled.metadata.shared, tensor_cores="mma" in ptx,
                      cubin_bytes=len(compiled.asm["cubin"]), registers=registers, spill_bytes=spill_bytes)
    except Exception as error:  # reported per launch, so one failure shows them all
        report.update(ok=False, error=f"{type(error).__name__}: {str(error)[-1500:]}")
    return report


def _compile_all(request):
    """Every (launch, arch), on all cores (fork: each worker imports the kernel modules once)."""
    import multiprocessing

    jobs = [(launch, arch) for launch in request["launches"] for arch in request["archs"]]
    workers = min(len(jobs), len(os.sched_getaffinity(0)))
    if workers <= 1:
        return [_compile_one(job) for job in jobs]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(_compile_one, jobs, chunksize=1)


def _serve(request: dict) -> dict:
    import triton

    if "families" in request:
        from tools.aot_specs import build

        request = dict(request, launches=unique(build(request["families"], request["which"], request["all_dtypes"])))
    return {"triton": triton.__version__, "reports": _compile_all(request)}


if __name__ == "__main__":
    print(json.dumps(_serve(json.loads(sys.stdin.read()))))
