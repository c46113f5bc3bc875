"""Shared test set-up.

Without CUDA, Triton kernels run on CPU tensors in the interpreter; TRITON_INTERPRET must be
set before any ``@triton.jit`` function is defined, so it is set here, before hashkern is imported.
"""
import os
import zlib

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped without one")
    config.addinivalue_line("markers", "slow: long-running; deselect with -m 'not slow'")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


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
