"""What the compiled extension ``hashkern._C`` provides, and clear errors when it does not.

The extension registers its ops under ``torch.ops.hashkern`` with ``TORCH_LIBRARY``;
whether a backend was built is read from the dispatcher, so this module never
guesses from the environment.
"""
from __future__ import annotations

import os

import torch

BUILD_HINT = (
    "Build it with `pip install --no-build-isolation -e .` from the hashkern source tree "
    "(a CUDA build of torch and CUDA_HOME are needed for the CUDA kernels), "
    "or use backend='torch'."
)

_load_error: str | None = None
if os.environ.get("HASHKERN_NO_EXT") == "1":
    _load_error = "HASHKERN_NO_EXT=1 was set when hashkern was built or imported"
else:
    try:
        from hashkern import _C  # noqa: F401  (loading it registers torch.ops.hashkern.*)
    except ImportError as error:
        _load_error = f"the extension hashkern._C could not be imported ({error})"

_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


def extension_loaded() -> bool:
    """True when ``hashkern._C`` was imported and its ops are registered."""
    return _load_error is None


# Registrations are fixed once _C is loaded, so tracing (torch.compile) may treat this as a constant.
@torch.compiler.assume_constant_result
def has_kernel(op: str, backend: str) -> bool:
    """True when the extension has a kernel for ``hashkern::<op>`` on ``backend`` ("cpu"/"cuda")."""
    if _load_error is not None or not torch._C._dispatch_has_kernel(f"hashkern::{op}"):
        return False  # no extension, or one built before this op existed
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"hashkern::{op}", _DISPATCH_KEYS[backend])


def require_kernel(op: str, backend: str) -> None:
    """Raise a RuntimeError saying how to get ``backend`` when its kernel for ``op`` was not built."""
    if has_kernel(op, backend):
        return
    if _load_error is not None:
        reason = _load_error
    elif backend == "cuda":
        reason = "hashkern._C was built without CUDA kernels (no CUDA build of torch or no CUDA toolkit at build time)"
    else:
        reason = f"hashkern._C has no {backend} kernel for {op}"
    raise RuntimeError(f"hashkern: backend={backend!r} is unavailable for {op}: {reason}. {BUILD_HINT}")


def build_info() -> str:
    """One line that says which compiled backends this installation has."""
    if _load_error is not None:
        return f"hashkern._C not loaded: {_load_error}; only the PyTorch/Triton paths are available"
    backends = [b for b in ("cpu", "cuda") if has_kernel("hamming_distance", b)]
    return "hashkern._C loaded with kernels for: " + ", ".join(backends)
