"""Backend choice shared by all ops: ``backend="auto" | "cuda" | "triton" | "cpu" | "torch"``.

``cuda``/``cpu`` are the compiled kernels of ``hashkern._C``, ``triton`` the Triton kernels,
``torch`` the plain-PyTorch path (reference or chunked). ``auto`` takes the first backend of
the op's preference list that runs on the tensor's device and whose declared support matrix
(:class:`Support`: dtypes, sizes, GPU architecture) holds the call's inputs; outside every
matrix it takes ``torch``. Naming a backend forces it, within its hard limits.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Mapping

import torch

from hashkern import _ext

BACKENDS = ("auto", "cuda", "triton", "cpu", "torch")


class BackendUnavailableError(RuntimeError):
    """A named backend cannot run on these tensors here (not built, or no device for it)."""

    def __init__(self, message: str, backend: str, device: torch.device):
        super().__init__(message)
        self.backend = backend
        self.device = torch.device(device)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclasses.dataclass(frozen=True)
class Support:
    """The inputs one backend of one op is declared for: its row of the op's support matrix.

    dtypes: the input dtypes the kernels take (empty: any).
    max_sizes: ``{size name: largest value}``, hard limits (shared memory, grid, 32-bit offsets).
    min_capability: the oldest CUDA compute capability ``(major, minor)`` it is built and
        tested for (CUDA tensors only; the Triton interpreter has none).
    auto_dtypes, auto_max_sizes: where ``auto`` picks the backend, when narrower than where it
        runs (e.g. float64 runs but the torch path is as fast); ``None`` means the hard limits.

    A named backend outside the hard limits raises a ValueError; ``auto`` passes over it.
    """

    dtypes: tuple[torch.dtype, ...] = ()
    max_sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    min_capability: tuple[int, int] | None = None
    auto_dtypes: tuple[torch.dtype, ...] | None = None
    auto_max_sizes: Mapping[str, int] | None = None

    def outside(self, device: torch.device, dtype: torch.dtype | None, sizes: Mapping[str, int],
                for_auto: bool) -> str | None:
        """Why these inputs are outside the matrix (a sentence), or None when they are inside."""
        dtypes = self.auto_dtypes if for_auto and self.auto_dtypes is not None else self.dtypes
        if dtypes and dtype is not None and dtype not in dtypes:
            return f"dtype {_dtype_name(dtype)} is not one of {', '.join(map(_dtype_name, dtypes))}"
        limits = dict(self.max_sizes)
        if for_auto and self.auto_max_sizes is not None:
            limits.update(self.auto_max_sizes)
        for name, largest in limits.items():
            if name not in sizes:
                raise TypeError(f"the support matrix limits size {name!r} but the call passed only {sorted(sizes)}")
            if sizes[name] > largest:
                return f"{name} = {sizes[name]} is above its limit {largest}"
        if self.min_capability is not None and device.type == "cuda":
            have = cuda_capability(device.index if device.index is not None else torch.cuda.current_device())
            if have < tuple(self.min_capability):
                want = ".".join(map(str, self.min_capability))
                return f"the GPU's compute capability {have[0]}.{have[1]} is below {want}"
        return None


@torch.compiler.assume_constant_result
def cuda_capability(index: int) -> tuple[int, int]:
    """(major, minor) of CUDA device ``index``, read once."""
    return _capability(index)


@functools.lru_cache(maxsize=None)
def _capability(index: int) -> tuple[int, int]:
    return tuple(torch.cuda.get_device_capability(index))


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
        return device.type == backend and _ext.has_kernel(op, backend) and (
            backend == "cpu" or _ext.cuda_kernels_run_on(device))  # a CUDA build without code for this GPU
    return False


def resolve_backend(backend: str, op: str, device: torch.device, preference: tuple[str, ...], *,
                    support: Mapping[str, Support] | None = None, dtype: torch.dtype | None = None,
                    sizes: Mapping[str, int] | None = None) -> str:
    """Return the concrete backend for ``op`` on ``device``.

    ``preference`` lists the op's backends fastest first (``torch`` last). ``support`` maps a
    backend to its :class:`Support` row (a backend without one takes any input); ``dtype`` and
    ``sizes`` describe this call's inputs for it. ``auto`` picks the first backend that runs
    here and holds the inputs, else ``torch``. A named backend that cannot run raises an error
    saying why (:class:`BackendUnavailableError`, or ValueError outside its hard limits).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    device = torch.device(device)
    support = support or {}
    sizes = sizes or {}
    if backend == "auto":
        for candidate in preference:
            if not _runs_on(candidate, op, device):
                continue
            row = support.get(candidate)
            if row is None or row.outside(device, dtype, sizes, for_auto=True) is None:
                return candidate
        return "torch"
    if backend not in preference:
        raise ValueError(f"backend={backend!r} is not implemented for {op}; choose from {('auto',) + preference}")
    if backend in ("cpu", "cuda"):
        if device.type != backend:
            raise ValueError(f"backend={backend!r} needs {backend} tensors, got tensors on {device}")
        _ext.require_kernel(op, backend, device)
    if backend == "triton" and not triton_available(device):
        raise BackendUnavailableError(
            f"backend='triton' is unavailable for {op} on {device}: install triton and use CUDA tensors "
            "(or set TRITON_INTERPRET=1 before importing hashkern to run Triton on CPU tensors, slowly)",
            backend, device)
    row = support.get(backend)
    reason = None if row is None else row.outside(device, dtype, sizes, for_auto=False)
    if reason is not None:
        raise ValueError(f"backend={backend!r} does not support these inputs of {op}: {reason}; "
                         "use backend='auto' (it falls back to backend='torch') or backend='torch'")
    return backend
