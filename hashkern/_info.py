"""``hashkern info``: what this installation is, what it was built with, and what ``auto`` runs here."""
from __future__ import annotations

import os
import platform
import sys

import torch

import hashkern
from hashkern import _dispatch, _ext
from hashkern._version import __version__

# The op whose kernels stand for the extension's in this report (every compiled op is built alike).
_PROBE_OP = "hamming_topk"
_TRITON_MIN_CAPABILITY = (8, 0)  # what the Triton kernels' support rows declare (ops/*/__init__.py)


def _triton_version() -> str:
    try:
        import triton
    except ImportError:
        return "not installed (pip install triton adds the Triton kernels)"
    return triton.__version__


def _cpu_kernels() -> str:
    if not _ext.has_kernel(_PROBE_OP, "cpu") or not hasattr(torch.ops.hashkern, "_cpu_kernels"):
        return "none (hashkern._C is not loaded)"
    chosen, *supported = torch.ops.hashkern._cpu_kernels("")
    forced = os.environ.get("HASHKERN_CPU_KERNELS")
    how = f"forced by HASHKERN_CPU_KERNELS={forced}" if forced else "each code width takes the fastest, measured"
    return f"{chosen} ({how}; this CPU supports: {', '.join(supported)})"


def _search_kernels_per_width(widths=(64, 128, 256, 512, 1024)) -> str:
    """The Hamming search kernels measured (or forced) for a few code widths: ``_ext.cpu_kernel_choice``."""
    if not _ext.has_kernel(_PROBE_OP, "cpu") or not hasattr(torch.ops.hashkern, "_cpu_kernel_choice"):
        return "none (hashkern._C is not loaded)"
    choices = {nbits: _ext.cpu_kernel_choice(nbits) for nbits in widths}
    return ", ".join(f"{nbits} bits: {_describe(c)}" for nbits, c in choices.items())


def _describe(choice: dict) -> str:
    """"avx512-rows + bit-sliced avx512 from 8 queries (measured)": per-row kernels, bit-sliced search, source."""
    sliced = (f" + bit-sliced {choice['sliced']} from {choice['sliced_min_queries']} queries"
              if choice["sliced"] else "")
    return f"{choice['kernels']}{sliced} ({choice['source']})"


def auto_backends(device: torch.device) -> list[str]:
    """The backends ``auto`` may take on ``device``, fastest first (each op's support matrix decides per call)."""
    backends = []
    if _ext.has_kernel(_PROBE_OP, device.type):
        if device.type == "cpu":
            backends.append("cpu")
        elif _ext.cuda_kernels_run_on(device):
            backends.append("cuda")
    if _dispatch.triton_available(device):
        backends.append("triton")
    return backends + ["torch"]


def _gpu_lines() -> list[str]:
    if not torch.cuda.is_available():
        return ["GPUs: none visible" + ("" if torch.version.cuda else " (torch is a CPU-only build)")]
    lines = []
    for index in range(torch.cuda.device_count()):
        device = torch.device("cuda", index)
        major, minor = _ext.device_capability(index)
        notes = []
        if _ext.has_kernel(_PROBE_OP, "cuda") and not _ext.cuda_kernels_run_on(device):
            notes.append(_ext.cuda_image_problem((major, minor), _ext.compiled_cuda_archs()))
        if _dispatch.triton_available(device) and (major, minor) < _TRITON_MIN_CAPABILITY:
            notes.append("the Triton kernels are declared for compute capability 8.0+: auto passes over them here")
        line = (f"GPU {index}: {torch.cuda.get_device_name(index)}, compute capability {major}.{minor}; "
                f"auto uses: {', '.join(auto_backends(device))}")
        lines.append(line + "".join(f"\n    ({note})" for note in notes))
    return lines


def _built_with(record: dict) -> str:
    if not record:
        return "no build record"
    if record.get("extension") != "built":
        return f"not built ({record.get('reason')})"
    nvcc = f", nvcc {record['nvcc']}" if record.get("nvcc") else ""
    return f"torch {record.get('torch')}, CUDA {record.get('cuda') or 'none'}, compiler {record.get('compiler')}{nvcc}"


def report() -> str:
    """The text ``hashkern info`` prints."""
    record = _ext.build_record() or {}
    cpu = torch.device("cpu")
    lines = [
        f"hashkern {__version__} ({os.path.dirname(hashkern.__file__)})",
        f"python {platform.python_version()} ({sys.executable}), {platform.system()} {platform.machine()}",
        f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none (CPU-only build)'}",
        f"triton {_triton_version()}",
        f"extension: {_ext.build_info()}",
        f"built with: {_built_with(record)}",
        "GPU architectures compiled in: " + (", ".join(_ext.compiled_cuda_archs()) or "none"),
        f"CPU kernels: {_cpu_kernels()}",
        f"CPU search kernels per width: {_search_kernels_per_width()}",
        f"CPU: auto uses: {', '.join(auto_backends(cpu))}",
    ]
    return "\n".join(lines + _gpu_lines())


def main() -> int:
    print(report())
    return 0
