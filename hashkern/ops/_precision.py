"""The library's one TF32 rule: fp32 matrix products use TF32 tensor cores exactly when PyTorch's own
CUDA matmuls (cuBLAS) would.

``fp32_matmul_uses_tf32()`` reads the newer ``torch.backends.cuda.matmul.fp32_precision``
(``"tf32"`` / ``"ieee"``) where this torch has it; when that is unset (``"none"``) it inherits the
generic ``torch.backends.fp32_precision``, and then the legacy ``allow_tf32`` flag (what
``torch.set_float32_matmul_precision("high")`` sets). It never raises: torch refuses to read the
legacy flag once the new API was used, and a torch without either answers False (IEEE fp32).
Every fp32 Triton kernel of hashkern takes ``tl.dot(..., input_precision=...)`` from here.
"""
from __future__ import annotations

import torch

__all__ = ["fp32_matmul_uses_tf32", "dot_precision"]


def _read(obj, name: str):
    try:
        return getattr(obj, name)
    except Exception:  # torch raises on mixed legacy/new precision APIs; treat as unset
        return None


def fp32_matmul_uses_tf32() -> bool:
    """True when fp32 matmuls on CUDA run on TF32 tensor cores under the user's torch settings."""
    matmul = _read(torch.backends.cuda, "matmul")
    for setting in (_read(matmul, "fp32_precision"), _read(torch.backends, "fp32_precision")):
        if setting == "tf32":
            return True
        if setting == "ieee":
            return False
    return bool(_read(matmul, "allow_tf32"))


def dot_precision(dtype: torch.dtype, is_cuda: bool) -> str:
    """``input_precision`` of ``tl.dot`` for inputs of ``dtype``: "tf32" or "ieee" for fp32 (the rule above,
    on CUDA; the interpreter multiplies in full fp32), "fma" for fp64 (its MMA lowering is refused on
    sm_90), "ieee" for fp16/bf16 (tensor cores with fp32 accumulation either way)."""
    if dtype == torch.float64:
        return "fma"
    if dtype == torch.float32 and is_cuda and fp32_matmul_uses_tf32():
        return "tf32"
    return "ieee"
