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


def cpu_kernel_choice(nbits: int) -> dict:
    """The CPU Hamming kernels that search and distance ops run for codes of ``nbits`` bits.

    Returns ``{"kernels": name, "sliced_min_queries": n, "source": how, "cpu": identity}``:
    ``kernels`` is ``"avx512" | "avx2-rows" | "portable"`` when measured, or the set that
    ``HASHKERN_CPU_KERNELS`` forces (``"avx2"`` is ``"avx2-rows"`` plus the bit-sliced search);
    ``sliced_min_queries`` the number of queries sharing a block of codes from which 128- and
    256-bit top-k takes the bit-sliced search (0: never); ``source`` is ``"measured"`` (timed
    on this machine at the width's first use in this process), ``"cache"`` (read from the file
    named by ``HASHKERN_CPU_CALIBRATION``) or ``"forced"``; ``cpu`` the vendor, family, model
    and vector flags the cache is keyed by. Measuring takes a few milliseconds, once per width.
    """
    from hashkern._validation import check_int

    nbits = check_int("nbits", nbits, low=1, high=2**31 - 1)
    require_kernel("hamming_topk", "cpu")
    kernels, sliced, source = torch.ops.hashkern._cpu_kernel_choice((nbits + 7) // 8)
    return {"kernels": kernels, "sliced_min_queries": int(sliced), "source": source,
            "cpu": torch.ops.hashkern._cpu_identity()}
