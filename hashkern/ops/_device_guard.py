"""``on_device_of(tensor)``: make a CUDA tensor's device current around a Triton launch.

Triton launches on the *current* CUDA device and stream, whatever device the tensors are on, so a
kernel given tensors on ``cuda:1`` while ``cuda:0`` is current reads foreign pointers (an illegal
address). Every Triton launcher of hashkern wraps its launches in this guard; for CPU tensors (the
interpreter) it does nothing.
"""
from __future__ import annotations

import contextlib

import torch

__all__ = ["on_device_of"]


def on_device_of(tensor: torch.Tensor):
    """A context manager: ``torch.cuda.device(tensor.device)`` for CUDA tensors, else a no-op."""
    if tensor.device.type == "cuda":
        return torch.cuda.device(tensor.device)
    return contextlib.nullcontext()
