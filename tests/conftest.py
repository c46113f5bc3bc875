"""Shared test set-up.

Without CUDA, Triton kernels run on CPU tensors in the interpreter; TRITON_INTERPRET must be
set before any ``@triton.jit`` function is defined, so it is set here, before hashkern is imported.
With CUDA, Triton compiles for the GPU and cannot take CPU tensors: a test that asks for
``backend="triton"`` on CPU tensors is skipped there (its CUDA twin runs), and tests that want
Triton wherever it runs take the ``triton_device`` fixture.
"""
import os
import zlib

import torch


def wants_interpreter(cuda_available: bool) -> bool:
    """Triton's interpreter is the only way to run its kernels without a GPU."""
    return not cuda_available


if wants_interpreter(torch.cuda.is_available()):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped without one")
    config.addinivalue_line("markers", "slow: long-running; deselect with -m 'not slow'")
    config.addinivalue_line("markers", "forward_variant(name): the patch-similarity Triton forward a test runs")
    # GPU tests that need tens of GB of GPU memory carry xdist_group("gpu_heavy"): with --dist loadgroup they
    # share one worker, so two never hold the GPU's memory at once (set on the test itself: pytest-xdist reads
    # the mark in its own collection hook, before a conftest could add it)
    config.addinivalue_line("markers", "xdist_group(name): pytest-xdist's group (--dist loadgroup)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _release_gpu_memory(request):
    """After a GPU test, the caching allocator gives its blocks back: the next test (or another xdist worker
    on the same GPU) gets the memory."""
    yield
    if "gpu" in request.keywords and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def triton_test_device() -> torch.device:
    """Where ``backend="triton"`` runs in this session: the GPU, else CPU tensors in the interpreter."""
    if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        return torch.device("cuda")
    return torch.device("cpu")


@pytest.fixture
def triton_device():
    """The device for tests of ``backend="triton"`` that must run on every machine."""
    return triton_test_device()


# What Triton's GPU launcher raises for a CPU tensor argument (a test calling a launcher directly).
TRITON_CPU_POINTER_ERROR = "cannot be accessed from Triton"


def triton_cpu_skip_reason(error: BaseException, cuda_available: bool) -> str | None:
    """Why a test that raised ``error`` is skipped rather than failed, or None when it failed.

    On a GPU machine Triton compiles for the GPU (no interpreter), so ``backend="triton"`` on
    CPU tensors raises BackendUnavailableError, and a launcher given CPU tensors directly raises
    Triton's pointer error; that is the harness, not the kernel, failing.
    """
    from hashkern._dispatch import BackendUnavailableError

    if not cuda_available:
        return None  # CPU-only machines run Triton in the interpreter: every such error is real
    seen = 0
    while error is not None and seen < 10:  # also when wrapped (torch.library.opcheck re-raises)
        asked_on_cpu = (isinstance(error, BackendUnavailableError) and error.backend == "triton"
                        and error.device.type == "cpu")
        launched_on_cpu = isinstance(error, ValueError) and TRITON_CPU_POINTER_ERROR in str(error)
        if asked_on_cpu or launched_on_cpu:
            return ("Triton on CPU tensors needs TRITON_INTERPRET=1 (CPU-only machines); "
                    "on this GPU machine the CUDA variants of the test run Triton")
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    try:
        return (yield)
    except Exception as error:
        reason = triton_cpu_skip_reason(error, torch.cuda.is_available())
        if reason is None:
            raise
        pytest.skip(reason)


@pytest.fixture(params=DEVICES)
def device(request):
    """Every test taking ``device`` runs on CPU, and on CUDA when there is one."""
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed(request):
    """A per-test seed: reproducible, yet different inputs in every test."""
    seed = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(seed)
    return seed


def poison(tensor: torch.Tensor) -> torch.Tensor:
    """Fill an output buffer with garbage the kernel must overwrite (NaN, or -1 / all ones bits)."""
    if tensor.is_floating_point():
        return tensor.fill_(float("nan"))
    if tensor.dtype == torch.bool:
        return tensor.fill_(True)
    if tensor.dtype == torch.uint8:
        return tensor.fill_(0xA5)
    return tensor.fill_(-1)


@pytest.fixture
def poisoned():
    """``poisoned(shape, dtype, device)`` -> an output buffer full of poison."""
    def make(shape, dtype, device):
        return poison(torch.empty(shape, dtype=dtype, device=device))
    return make
