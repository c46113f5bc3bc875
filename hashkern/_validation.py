"""Input checks shared by every public function: errors name the argument and what was expected."""
from __future__ import annotations

import math
import numbers
import operator
from typing import Iterable

import numpy as np
import torch

# The floating dtypes every float op takes; half inputs accumulate in fp32 (ops/_numerics.at_least_float32).
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``, for error messages."""
    return str(dtype).replace("torch.", "")


def check_tensor(name: str, value, *, ndim: int | Iterable[int] | None = None,
                 dtypes: Iterable[torch.dtype] | None = None, floating: bool = False) -> torch.Tensor:
    """Check that ``value`` is a tensor with the given rank and dtype; returns it unchanged."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got shape {tuple(value.shape)}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if value.dtype not in dtypes:
            names = ", ".join(dtype_name(d) for d in dtypes)
            raise TypeError(f"{name} must have dtype {names}, got {dtype_name(value.dtype)}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {dtype_name(value.dtype)}")
    return value


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    """All tensors on one device; returns it."""
    items = list(tensors.items())
    first_name, first = items[0]
    for name, tensor in items[1:]:
        if tensor.device != first.device:
            raise ValueError(f"{first_name} and {name} must be on the same device, "
                             f"got {first.device} and {tensor.device}")
    return first.device


def check_float(name: str, value, *, low: float | None = None, high: float | None = None,
                low_open: bool = False) -> float:
    """A finite real number as a Python float: int, float, or a numpy integer / floating scalar.

    ``low`` / ``high`` bound it inclusively (``low_open``: strictly above ``low``). Bools,
    tensors, strings and complex numbers are refused.
    """
    if isinstance(value, (bool, torch.Tensor)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number (int, float or a real numpy scalar), got {type(value).__name__}")
    number = float(value)
    too_low = low is not None and (number <= low if low_open else number < low)
    if not math.isfinite(number) or too_low or (high is not None and number > high):
        bounds = [f"{'>' if low_open else '>='} {low}"] if low is not None else []
        bounds += [f"<= {high}"] if high is not None else []
        raise ValueError(f"{name} must be a finite number{' ' if bounds else ''}{' and '.join(bounds)}, got {value}")
    return number


def check_positive(name: str, value: float) -> float:
    """A finite number > 0 (temperatures, scales); numpy scalars accepted (see :func:`check_float`)."""
    if isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a Python number, got a tensor")
    return check_float(name, value, low=0, low_open=True)


def check_bool(name: str, value) -> bool:
    """A real bool (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def as_tensor(value):
    """A NumPy array as a tensor sharing its memory (copied only if not contiguous); anything else unchanged."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    return value


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """An integer within [low, high] (inclusive where given), as a Python int.

    Anything with ``__index__`` counts (numpy integer scalars); bools, tensors, floats and
    strings are refused.
    """
    if isinstance(value, (bool, torch.Tensor)) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = operator.index(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def output_buffer(out: torch.Tensor | None, *, shape: tuple, dtype: torch.dtype, device: torch.device,
                  name: str = "out", inputs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The caller's ``out`` after checking it (and that it shares no memory with ``inputs``), or a new tensor."""
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    check_out(name, out, shape=shape, dtype=dtype, device=device)
    for input_name, tensor in (inputs or {}).items():
        check_no_overlap(name, out, input_name, tensor)
    return out


def check_out(name: str, out: torch.Tensor, *, shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A caller-provided output buffer: exact shape, dtype, device, and contiguous."""
    check_tensor(name, out)
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(out.shape)}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {out.dtype}")
    if out.device != device:
        raise ValueError(f"{name} must be on {device}, got {out.device}")
    if not out.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    return out


def _byte_span(t: torch.Tensor) -> tuple[int, int]:
    """[first, last) addresses that ``t``'s elements can touch (any strides, negative ones included)."""
    low = sum(min(0, (n - 1) * st) for n, st in zip(t.shape, t.stride()))
    high = sum(max(0, (n - 1) * st) for n, st in zip(t.shape, t.stride()))
    return t.data_ptr() + low * t.element_size(), t.data_ptr() + (high + 1) * t.element_size()


def check_no_overlap(out_name: str, out: torch.Tensor, input_name: str, tensor: torch.Tensor) -> None:
    """Refuse an output buffer whose memory overlaps an input's: kernels read inputs while writing outputs.

    Conservative: two address ranges that intersect are refused even if strides interleave them.
    """
    if out.numel() == 0 or tensor.numel() == 0 or out.device != tensor.device or out.device.type == "meta":
        return
    (a0, a1), (b0, b1) = _byte_span(out), _byte_span(tensor)
    if a0 < b1 and b0 < a1:
        raise ValueError(f"{out_name} shares memory with {input_name}: an output buffer must not overlap an "
                         f"input (the kernel would read values it already overwrote); pass a separate buffer")
