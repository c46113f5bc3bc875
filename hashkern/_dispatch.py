"""Backend choice shared by all ops: ``backend="auto" | "cuda" | "triton" | "cpu" | "torch"``.

``cuda``/``cpu`` are the compiled kernels of ``hashkern._C``, ``triton`` the Triton kernels,
``torch`` the plain-PyTorch path (reference or chunked). Each op declares its backends once, in
an :class:`OpBackends`: preference per device, support matrix (:class:`Support`: dtypes, sizes,
GPU architecture) and which backends are non-deterministic where. ``auto`` takes the first
backend of the device's preference list that runs there, holds the call's inputs and, under
``torch.use_deterministic_algorithms(True)``, is deterministic; else ``torch``. Naming a backend
forces it, within its hard limits. :func:`explain_backend` says why ``auto`` passed over each
backend (``auto`` also logs it at DEBUG level on the ``hashkern.dispatch`` logger).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Mapping

import torch

from hashkern import _ext
from hashkern._validation import dtype_name as _dtype_name

BACKENDS = ("auto", "cuda", "triton", "cpu", "torch")


class BackendUnavailableError(RuntimeError):
    """A named backend cannot run on these tensors here (not built, or no device for it)."""

    def __init__(self, message: str, backend: str, device: torch.device):
        super().__init__(message)
        self.backend = backend
        self.device = torch.device(device)


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
    if not _triton_installed():
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


@dataclasses.dataclass(frozen=True)
class AutoVia:
    """``backend="auto"`` hands calls whose ``argument`` is one of ``values`` to ``op``'s own choice
    (``default``: the argument's value when the call leaves it out)."""

    argument: str
    values: tuple
    op: str
    default: object


@dataclasses.dataclass(frozen=True)
class OpBackends:
    """The backends of one op, declared once.

    op: the public name (``hashkern.explain_backend(op, ...)`` looks it up; errors name it).
    preference: backends fastest first (``torch`` last), for every device type;
        ``preference_by_device`` overrides it per device type (``{"cuda": ("triton", "torch")}``).
    support: ``{backend: Support}``, the support matrix (a backend without a row takes any input).
    nondeterministic: ``{backend: device types}`` where the backend's results may change from run to
        run (float atomics); ``auto`` passes over it there under ``torch.use_deterministic_algorithms``.
    kernel: the ``hashkern._C`` op whose presence decides whether ``cpu``/``cuda`` are built (default: op).
    auto_via: calls that ``auto`` runs as another op (:class:`AutoVia`), so :func:`explain_backend` follows it.
    """

    op: str
    preference: tuple[str, ...]
    preference_by_device: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    support: Mapping[str, Support] = dataclasses.field(default_factory=dict)
    nondeterministic: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    kernel: str | None = None
    auto_via: AutoVia | None = None

    def __post_init__(self):
        for name in self.backends + tuple(self.support) + tuple(self.nondeterministic):
            if name not in BACKENDS[1:]:
                raise ValueError(f"{self.op}: unknown backend {name!r}; backends are {BACKENDS[1:]}")

    @property
    def backends(self) -> tuple[str, ...]:
        """Every backend of the op, on any device (the ``backend=`` values it accepts besides ``auto``)."""
        names = list(self.preference)
        for order in self.preference_by_device.values():
            names += [b for b in order if b not in names]
        return tuple(names)

    def preference_for(self, device: torch.device) -> tuple[str, ...]:
        return tuple(self.preference_by_device.get(torch.device(device).type, self.preference))

    def compiled_op(self) -> str:
        return self.kernel or self.op


_DECLARED: dict[str, OpBackends] = {}
_log = logging.getLogger("hashkern.dispatch")


def declare(backends: OpBackends) -> OpBackends:
    """Register an op's declaration for :func:`explain_backend`; returns it."""
    _DECLARED[backends.op] = backends
    return backends


def _passed_over(candidate: str, backends: OpBackends, device: torch.device, dtype: torch.dtype | None,
                 sizes: Mapping[str, int]) -> str | None:
    """Why ``auto`` does not take ``candidate`` for these inputs (a sentence), or None when it does."""
    if candidate == "triton" and not triton_available(device):
        return ("triton is not installed" if not _triton_installed() else
                f"Triton runs CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), not {device.type} tensors")
    if candidate in ("cpu", "cuda"):
        if device.type != candidate:
            return f"the {candidate} kernels need {candidate} tensors, got {device.type} tensors"
        if not _ext.has_kernel(backends.compiled_op(), candidate):
            return f"hashkern._C was built without the {candidate} kernel of {backends.compiled_op()}"
        if candidate == "cuda" and not _ext.cuda_kernels_run_on(device):
            return _ext.cuda_image_problem_on(device)  # a CUDA build without code for this GPU
    row = backends.support.get(candidate)
    reason = None if row is None else row.outside(device, dtype, sizes, for_auto=True)
    if reason is not None:
        return reason
    if device.type in backends.nondeterministic.get(candidate, ()) and torch.are_deterministic_algorithms_enabled():
        return (f"it is not deterministic on {device.type} (float atomics) and "
                "torch.use_deterministic_algorithms(True) is set")
    return None


def _triton_installed() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _auto(backends: OpBackends, device: torch.device, dtype, sizes) -> tuple[str, list[tuple[str, str | None]]]:
    """(the backend ``auto`` takes, [(backend, why it was passed over, or None for the one taken)])."""
    trail = []
    for candidate in backends.preference_for(device):
        reason = _passed_over(candidate, backends, device, dtype, sizes)
        trail.append((candidate, reason))
        if reason is None:
            return candidate, trail
    return "torch", trail


def resolve_backend(backend: str, backends: OpBackends, device: torch.device, *,
                    dtype: torch.dtype | None = None, sizes: Mapping[str, int] | None = None) -> str:
    """Return the concrete backend of the op declared by ``backends`` on ``device``.

    ``dtype`` and ``sizes`` describe this call's inputs for the support matrix. ``auto`` picks the
    first backend of the device's preference that runs here, holds the inputs and, under
    ``torch.use_deterministic_algorithms(True)``, is deterministic on this device; else ``torch``.
    A named backend that cannot run raises an error saying why (:class:`BackendUnavailableError`,
    or ValueError outside its hard limits).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    device = torch.device(device)
    sizes = sizes or {}
    op = backends.op
    if backend == "auto":
        chosen, trail = _auto(backends, device, dtype, sizes)
        if not torch.compiler.is_compiling() and _log.isEnabledFor(logging.DEBUG):  # no graph break
            skipped = "; ".join(f"{name}: {why}" for name, why in trail if why is not None)
            _log.debug("%s on %s: auto takes %s%s", op, device, chosen, f" (passed over {skipped})" if skipped else "")
        return chosen
    if backend not in backends.backends:
        choices = ("auto",) + backends.backends
        raise ValueError(f"backend={backend!r} is not implemented for {op}; choose from {choices}")
    if backend in ("cpu", "cuda"):
        if device.type != backend:
            raise ValueError(f"backend={backend!r} needs {backend} tensors, got tensors on {device}")
        _ext.require_kernel(backends.compiled_op(), backend, device)
    if backend == "triton" and not triton_available(device):
        raise BackendUnavailableError(
            f"backend='triton' is unavailable for {op} on {device}: install triton and use CUDA tensors "
            "(or set TRITON_INTERPRET=1 before importing hashkern to run Triton on CPU tensors, slowly)",
            backend, device)
    row = backends.support.get(backend)
    reason = None if row is None else row.outside(device, dtype, sizes, for_auto=False)
    if reason is not None:
        raise ValueError(f"backend={backend!r} does not support these inputs of {op}: {reason}; "
                         "use backend='auto' (it falls back to backend='torch') or backend='torch'")
    return backend


def explain_backend(op: str, *inputs, sizes: Mapping[str, int] | None = None,
                    **arguments) -> list[tuple[str, str | None]]:
    """Why ``backend="auto"`` takes the backend it takes for ``op`` on these inputs.

    Args:
        op: a public op name (``"patch_similarity"``, ``"sorted_cosine"``, ``"hamming_topk"``, ...).
        inputs: the call's tensors (the first one's device and dtype decide), or a device.
        sizes: the sizes the op's support matrix limits, if it limits any.
        arguments: the call's arguments that send ``auto`` to another op, when the op has such
            (``patch_similarity``'s ``reduce``: ``"maxmean"``, its default, runs as ``maxsim``).
    Returns:
        ``[(backend, reason)]`` in the device's order of preference, up to the backend taken:
        ``reason`` says why ``auto`` passed over that backend, None for the one it takes;
        ``("torch", None)`` last when it passed over every other. A call that ``auto`` runs as
        another op gets that op's trail (``patch_similarity`` on the CPU: ``maxsim``'s C++ kernel, ``"cpu"``).
    """
    if op not in _DECLARED:  # importing hashkern imported every op package, which declared its backends
        raise ValueError(f"op must be one of {sorted(_DECLARED)}, got {op!r}")
    if not inputs:
        raise TypeError("explain_backend needs the call's tensors or a device after op")
    backends = _DECLARED[op]
    via = backends.auto_via
    unknown = set(arguments) - ({via.argument} if via is not None else set())
    if unknown:
        raise TypeError(f"explain_backend for {op} takes no argument {sorted(unknown)}"
                        + (f"; only {via.argument!r}" if via is not None else ""))
    if via is not None and arguments.get(via.argument, via.default) in via.values:
        backends = _DECLARED[via.op]
    first = inputs[0]
    if isinstance(first, torch.Tensor):
        device, dtype = first.device, first.dtype
    else:
        device, dtype = torch.device(first), None
    chosen, trail = _auto(backends, device, dtype, sizes or {})
    if trail[-1] != (chosen, None):
        trail.append((chosen, None))
    return trail
