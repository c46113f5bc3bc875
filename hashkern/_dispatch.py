"""Backend choice shared by all ops: ``backend="auto" | "cuda" | "triton" | "cpu" | "torch"``.

``cuda``/``cpu`` are the compiled kernels of ``hashkern._C``, ``triton`` the Triton kernels,
``torch`` the plain-PyTorch path (reference or chunked). ``auto`` takes the first backend of
the op's preference list that runs on the tensor's device.
"""
from __future__ import annotations

import os

import torch

from hashkern import _ext

BACKENDS = ("auto", "cuda", "triton", "cpu", "torch")


def triton_available(device: torch.device) -> bool:
    """Triton runs CUDA tensors, or CPU tensors under the interpreter (TRITON_INTERPRET=1)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def _runs_on(backend: str, op: str, device: torch.device) -> bool:
    if backend == "torch":
        return True
    if backend == "triton":
        return triton_available(device)
    if backend in ("cpu", "cuda"):
        return device.type == backend and _ext.has_kernel(op, backend)
    return False


def resolve_backend(backend: str, op: str, device: torch.device, preference: tuple[str, ...]) -> str:
    """Return the concrete backend for ``op`` on ``device``.

    ``preference`` lists the op's backends fastest first (``torch`` last); ``auto`` picks the
    first that runs here. A named backend that cannot run raises an error saying why.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        for candidate in preference:
            if _runs_on(candidate, op, device):
                return candidate
        return "torch"
    if backend not in preference:
        raise ValueError(f"backend={backend!r} is not implemented for {op}; choose from {('auto',) + preference}")
    if backend in ("cpu", "cuda"):
        if device.type != backend:
            raise ValueError(f"backend={backend!r} needs {backend} tensors, got tensors on {device}")
        _ext.require_kernel(op, backend)
    if backend == "triton" and not triton_available(device):
        raise RuntimeError(
            f"backend='triton' is unavailable for {op} on {device}: install triton and use CUDA tensors "
            "(or set TRITON_INTERPRET=1 before importing hashkern to run Triton on CPU tensors, slowly)"
        )
    return backend
