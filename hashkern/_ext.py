"""What the compiled extension ``hashkern._C`` provides, what it was built with, and clear errors when it does not.

The extension registers its ops under ``torch.ops.hashkern`` with ``TORCH_LIBRARY``;
whether a backend was built is read from the dispatcher, so this module never
guesses from the environment. What the build used (torch, CUDA, GPU architectures) is
read from ``hashkern/_build_info.py``, which setup.py writes.

Importing hashkern warns once (:class:`ExtensionWarning`) when ``hashkern._C`` does not
load, or was built for another torch: the ops then run their Triton or PyTorch paths.
``HASHKERN_NO_EXT=1`` at import skips the extension without a warning.
"""
from __future__ import annotations

import functools
import os
import warnings

import torch

BUILD_HINT = (
    "Build it with `pip install --no-build-isolation .` from the hashkern source tree or sdist, "
    "against the torch you run (a CUDA build of torch and a CUDA toolkit are needed for the CUDA kernels), "
    "or use backend='torch'."
)

# Each compiled op (csrc schema) -> the public functions that run it; without hashkern._C they
# take their Triton or PyTorch path instead.
KERNEL_USERS = {
    "pack_bits": ("pack_bits",),
    "unpack_bits": ("unpack_bits",),
    "hamming_distance": ("hamming_distance",),
    "hamming_topk": ("hamming_topk", "HammingIndex.search"),
    "hamming_radius_count": ("hamming_radius", "HammingIndex.radius_search"),
    "hamming_radius_fill": ("hamming_radius", "HammingIndex.radius_search"),
    "softsort_scan_fwd": ("soft_sort_gather", "sorted_cosine"),
    "softsort_scan_bwd": ("soft_sort_gather", "sorted_cosine"),
    "sort_rows_descending": ("soft_sort_gather", "sorted_cosine"),
    "maxsim": ("maxsim", "maxsim_paired", "patch_similarity"),
    "maxsim_backward": ("maxsim", "maxsim_paired", "patch_similarity"),
}


class ExtensionWarning(RuntimeWarning):
    """hashkern._C did not load, or was built for another torch: the compiled kernels are not used."""


try:
    from hashkern._build_info import BUILD as _BUILD
except ImportError:  # a source tree never built, or built before setup.py recorded its builds
    _BUILD = None


def _import_extension() -> str | None:
    """Load hashkern._C; why it is not loaded, or None when it is."""
    if os.environ.get("HASHKERN_NO_EXT") == "1":
        return "HASHKERN_NO_EXT=1 was set when hashkern was imported"
    try:
        from hashkern import _C  # noqa: F401  (loading it registers torch.ops.hashkern.*)
    except Exception as error:  # ImportError (missing, undefined symbol) or a failed registration
        if _BUILD is not None and _BUILD.get("extension") != "built":
            return f"hashkern was installed without it ({_BUILD.get('reason')})"
        return f"the extension hashkern._C could not be imported ({type(error).__name__}: {error})"
    return None


def _torch_description(version: str, cuda: str | None) -> str:
    return f"torch {version}" + (f" with CUDA {cuda}" if cuda else " (no CUDA)")


def load_warning(build: dict | None, load_error: str | None, running: str, running_cuda: str | None) -> str | None:
    """The warning for this load of hashkern._C, or None when there is nothing to say.

    build: the build record (None when there is none); load_error: why _C is not loaded
    (None when it is); running, running_cuda: the running torch's version and CUDA version.
    """
    if load_error is not None and load_error.startswith("HASHKERN_NO_EXT=1"):
        return None  # asked for at import
    if load_error is not None and build is not None and build.get("extension") == "skipped":
        return None  # asked for at build time (HASHKERN_NO_EXT=1); build_info() says so
    now = _torch_description(running, running_cuda)
    if load_error is None:
        if build is None or build.get("extension") != "built" or build.get("torch") == running:
            return None
        return (f"hashkern._C was built for {_torch_description(build['torch'], build.get('cuda'))} but {now} is "
                "running: an extension built for another torch may crash or compute wrongly. Reinstall hashkern "
                "against this torch (pip install --no-build-isolation --no-deps --force-reinstall <source>).")
    if build is None:
        built_for = "No build record was found (hashkern was not built by its setup.py)"
    elif build.get("extension") == "built":
        built_for = f"It was built for {_torch_description(build['torch'], build.get('cuda'))}"
    else:
        built_for = f"Its build against torch {build.get('torch')} did not produce it"
    users = ", ".join(dict.fromkeys(user for users in KERNEL_USERS.values() for user in users))
    return (f"hashkern runs without its compiled C++/CUDA kernels: {load_error}. {built_for}; {now} is running. "
            f"{users} run their Triton or PyTorch paths instead (slower: hamming_topk on CPU ~90x). "
            f"{BUILD_HINT} HASHKERN_NO_EXT=1 silences this warning.")


_load_error: str | None = _import_extension()
_warning = load_warning(_BUILD, _load_error, torch.__version__, torch.version.cuda)
if _warning is not None:
    warnings.warn(_warning, ExtensionWarning, stacklevel=2)

_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


def extension_loaded() -> bool:
    """True when ``hashkern._C`` was imported and its ops are registered."""
    return _load_error is None


def build_record() -> dict | None:
    """What hashkern._C was built with (torch, cuda, cuda_archs, compiler, ...), or None when unrecorded."""
    return None if _BUILD is None else dict(_BUILD)


# Registrations are fixed once _C is loaded, so tracing (torch.compile) may treat this as a constant.
@torch.compiler.assume_constant_result
def has_kernel(op: str, backend: str) -> bool:
    """True when the extension has a kernel for ``hashkern::<op>`` on ``backend`` ("cpu"/"cuda")."""
    if _load_error is not None or not torch._C._dispatch_has_kernel(f"hashkern::{op}"):
        return False  # no extension, or one built before this op existed
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"hashkern::{op}", _DISPATCH_KEYS[backend])


def compiled_cuda_archs() -> list[str]:
    """The GPU targets compiled into hashkern._C: ``sm_80`` (machine code), ``compute_90`` (PTX, compiled
    by the driver for newer GPUs); empty when unrecorded or built without CUDA."""
    return list(_BUILD.get("cuda_archs", [])) if _BUILD is not None else []


def cuda_image_problem(capability: tuple[int, int], archs: list[str]) -> str | None:
    """Why none of ``archs`` runs on a GPU of compute ``capability`` (major, minor), or None when one does.

    Machine code ``sm_XY`` runs on capability X.y for y >= Y; PTX ``compute_XY`` on any capability
    >= X.Y; an arch-specific target (``sm_90a``) only on its own. Unrecorded archs (``[]``) pass.
    """
    if not archs:
        return None
    have = tuple(capability)
    for arch in archs:
        kind, _, number = arch.partition("_")
        digits = number.rstrip("abcdefghijklmnopqrstuvwxyz")
        if len(digits) < 2 or not digits.isdigit():
            continue
        target = (int(digits[:-1]), int(digits[-1]))
        specific = digits != number
        if target == have or (not specific and kind == "sm" and target[0] == have[0] and target[1] <= have[1]) \
                or (not specific and kind == "compute" and target <= have):
            return None
    return (f"hashkern._C has no code for compute capability {have[0]}.{have[1]}: it was built for "
            f"{', '.join(archs)} (sm_XY runs on X.Y and later X.* GPUs, compute_XY PTX on X.Y and later)")


def device_capability(index: int) -> tuple[int, int]:
    """(major, minor) of CUDA device ``index``."""
    return tuple(torch.cuda.get_device_capability(index))


@functools.lru_cache(maxsize=None)
def _image_problem_for(index: int) -> str | None:
    return cuda_image_problem(device_capability(index), compiled_cuda_archs())


# The device's capability and the build are fixed: one check per device, constant under tracing.
@torch.compiler.assume_constant_result
def _cuda_image_problem(index: int) -> str | None:
    return _image_problem_for(index)


def _cuda_index(device: torch.device | int | str) -> int:
    device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    return device.index if device.index is not None else torch.cuda.current_device()


def cuda_image_problem_on(device: torch.device | int | str) -> str | None:
    """Why hashkern._C has no code for this CUDA device's architecture, or None when it has.

    Checked once per device."""
    return _cuda_image_problem(_cuda_index(device))


def cuda_kernels_run_on(device: torch.device | int | str) -> bool:
    """True when hashkern._C holds code for this CUDA device's architecture (checked once per device)."""
    return cuda_image_problem_on(device) is None


def require_kernel(op: str, backend: str, device: torch.device | None = None) -> None:
    """Raise a RuntimeError saying how to get ``backend`` when its kernel for ``op`` was not built
    (or, for a CUDA ``device``, was not built for that GPU's architecture)."""
    if has_kernel(op, backend):
        if backend == "cuda" and device is not None and not cuda_kernels_run_on(device):
            major, minor = device_capability(_cuda_index(device))
            raise RuntimeError(
                f"hashkern: backend='cuda' is unavailable for {op} on {device}: "
                f"{cuda_image_problem_on(device)}. Rebuild for this GPU: "
                f"TORCH_CUDA_ARCH_LIST=\"{major}.{minor}\" pip install --no-build-isolation --no-deps "
                "--force-reinstall <hashkern source> (a build on a machine that sees the GPU targets it by "
                "default), or use backend='auto', which falls back to Triton or PyTorch.")
        return
    if _load_error is not None:
        reason = _load_error
    elif backend == "cuda":
        reason = "hashkern._C was built without CUDA kernels (no CUDA build of torch or no CUDA toolkit at build time)"
    else:
        reason = f"hashkern._C has no {backend} kernel for {op}"
    raise RuntimeError(f"hashkern: backend={backend!r} is unavailable for {op}: {reason}. {BUILD_HINT}")


def build_info() -> str:
    """One line that says which compiled backends this installation has, and what they were built for."""
    if _load_error is not None:
        return f"hashkern._C not loaded: {_load_error}; only the PyTorch/Triton paths are available"
    backends = [b for b in ("cpu", "cuda") if has_kernel("hamming_distance", b)]
    line = "hashkern._C loaded with kernels for: " + ", ".join(backends)
    if _BUILD is not None and _BUILD.get("extension") == "built":
        line += f" (built for {_torch_description(_BUILD['torch'], _BUILD.get('cuda'))}"
        line += f"; GPU targets {', '.join(_BUILD['cuda_archs'])})" if _BUILD.get("cuda_archs") else ")"
    return line


def cpu_kernel_choice(nbits: int) -> dict:
    """The CPU Hamming kernels that search and distance ops run for codes of ``nbits`` bits.

    Returns ``{"kernels": name, "sliced": search, "sliced_min_queries": n, "source": how,
    "cpu": identity}``: ``kernels`` is ``"avx512-rows" | "avx2-rows" | "sse4-rows" | "portable"``
    when measured, or the set that ``HASHKERN_CPU_KERNELS`` forces (``"avx512"``, ``"avx2"`` and
    ``"sse4"`` are their ``-rows`` sets plus the bit-sliced search on 512-row AVX-512, 256-row AVX2
    and 128-row SSE planes); ``sliced`` the bit-sliced search's instruction set, ``"avx512" |
    "avx2" | "sse4"``, or None when top-k never takes it; ``sliced_min_queries`` the number of
    queries sharing a block of codes from which top-k of codes of 16m bytes up to 1536 bits takes
    the bit-sliced search (0: never); ``source`` is ``"measured"`` (timed
    on this machine at the width's first use in this process), ``"cache"`` (read from the file
    named by ``HASHKERN_CPU_CALIBRATION``) or ``"forced"``; ``cpu`` the vendor, family, model
    and vector flags the cache is keyed by. Measuring takes a few milliseconds, once per width.
    """
    from hashkern._validation import check_int

    nbits = check_int("nbits", nbits, low=1, high=2**31 - 1)
    require_kernel("hamming_topk", "cpu")
    kernels, sliced_min_queries, source, sliced = torch.ops.hashkern._cpu_kernel_choice((nbits + 7) // 8)
    return {"kernels": kernels, "sliced": sliced or None, "sliced_min_queries": int(sliced_min_queries),
            "source": source, "cpu": torch.ops.hashkern._cpu_identity()}
