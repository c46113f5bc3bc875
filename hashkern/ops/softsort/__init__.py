"""Differentiable soft sort (SoftSort) over similarities, fused with the gather that consumes it.

Public ops:

* ``soft_sort(s, tau)`` -> the relaxed permutation ``P [b, n, n]`` (small n; materialises P);
* ``soft_sort_gather(s, v, tau)`` -> ``E = P v [b, n, d]`` without building ``P``;
* ``sorted_cosine(s, z1, z2, tau)`` -> ``c [n, n]``, ``c[i, k] = cos(E_i[k], z2[i])``, building
  neither ``P`` nor ``E`` (memory O(n^2 + n d)): the core of NSH's SortedNCE loss.

``soft_sort_gather`` and ``sorted_cosine`` never evaluate ``P`` entry by entry: sorted, SoftSort's
L1 kernel ``exp(-|q_r - q_t| / tau)`` splits into a left and a right decayed scan, so each row
costs O(n log n + n d) and a batch O(n^2 d), forward and backward, exact (``torch_impl.py``).
Backends: ``"cpu"`` (the C++ kernel of ``hashkern._C``, which radix-sorts the rows and runs rows
with few distinct values, such as Hamming similarities, over their tie groups: one pass over the
values per row forward, two backward), ``"triton"`` (CUDA, or CPU tensors under
``TRITON_INTERPRET=1``) and ``"torch"`` (the same scans in plain PyTorch, any device); ``"auto"``
picks the first that runs on the tensors' device. Triton is imported only when it is chosen.
"""
from __future__ import annotations

import dataclasses

import torch

from hashkern._dispatch import OpBackends, Support, declare, resolve_backend
from hashkern._validation import FLOAT_DTYPES, check_bool, check_positive, check_same_device, check_tensor
from hashkern.ops.softsort.autograd import SoftSortGatherFunction, SortedCosineFunction, acc_dtype
from hashkern.ops.softsort.reference import (
    soft_sort_gather_reference,
    soft_sort_reference,
    sorted_cosine_reference,
)

__all__ = [
    "soft_sort", "soft_sort_gather", "sorted_cosine",
    "soft_sort_reference", "soft_sort_gather_reference", "sorted_cosine_reference",
    "SoftSortGatherFunction", "SortedCosineFunction", "SORTED_COSINE_BACKENDS", "SOFT_SORT_GATHER_BACKENDS",
]

# The C++ kernel first (CPU tensors), then Triton (CUDA, or the interpreter), then the scans in torch.
# Every float dtype (half inputs accumulate in fp32) and any n, d: the kernels tile d and walk n.
# Triton is built and compiled for sm_80 and newer; on CUDA its backward accumulates shared values
# with float atomics, so auto passes over it under torch.use_deterministic_algorithms(True).
SORTED_COSINE_BACKENDS = declare(OpBackends(
    "sorted_cosine", preference=("cpu", "triton", "torch"), support={"triton": Support(min_capability=(8, 0))},
    nondeterministic={"triton": ("cuda",)}, kernel="softsort_scan_fwd"))
SOFT_SORT_GATHER_BACKENDS = declare(dataclasses.replace(SORTED_COSINE_BACKENDS, op="soft_sort_gather"))


def _check_rows(name: str, s: torch.Tensor) -> None:
    check_tensor(name, s, ndim=2, dtypes=FLOAT_DTYPES)
    if s.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one column to sort, got shape {tuple(s.shape)}")


def soft_sort(s: torch.Tensor, tau: float, descending: bool = True, hard: bool = False) -> torch.Tensor:
    """SoftSort relaxation of the permutation that sorts each row of ``s``.

    Args:
        s: ``[b, n]`` or ``[n]`` floating similarities.
        tau: softmax temperature > 0 (small tau -> closer to the hard permutation).
        descending: sort largest first (the hashing convention).
        hard: straight-through: forward is the exact one-hot permutation, backward the soft one's.
    Returns:
        ``P [b, n, n]`` (or ``[n, n]``), ``P[b, k, j]`` = weight of sample j at rank k.
        This materialises ``P``; use ``soft_sort_gather`` / ``sorted_cosine`` for large n.
    """
    check_tensor("s", s, ndim=(1, 2), dtypes=FLOAT_DTYPES)
    if s.shape[-1] == 0:
        raise ValueError(f"s must have at least one column to sort, got shape {tuple(s.shape)}")
    tau = check_positive("tau", tau)
    check_bool("descending", descending)
    check_bool("hard", hard)
    return soft_sort_reference(s, tau, descending, hard)


def soft_sort_gather(s: torch.Tensor, v: torch.Tensor, tau: float, descending: bool = True,
                     backend: str = "auto") -> torch.Tensor:
    """``E = SoftSort(s) v`` without materialising the ``[b, n, n]`` permutation.

    Args:
        s: ``[b, n]`` similarities, one row per anchor.
        v: ``[n, d]`` values shared by all rows, or ``[b, n, d]`` per row.
        tau: SoftSort temperature > 0.
    Returns:
        ``E [b, n, d]`` in ``v.dtype``; ``E[i, k]`` is the soft ``k``-th sample of row ``i``.
        Differentiable in ``s`` (through the sorted values too) and ``v``; accumulation is fp32
        (fp64 for fp64 inputs). Extra memory O(b n + n d) beyond ``E``.
    """
    _check_rows("s", s)
    check_tensor("v", v, ndim=(2, 3), dtypes=FLOAT_DTYPES)
    device = check_same_device(s=s, v=v)
    b, n = s.shape
    if v.shape[-2] != n or (v.dim() == 3 and v.shape[0] != b):
        want = f"[{n}, d] or [{b}, {n}, d]"
        raise ValueError(f"v must have shape {want} to match s of shape {tuple(s.shape)}, got {tuple(v.shape)}")
    if v.shape[-1] == 0:
        raise ValueError("v must have at least one feature (d >= 1)")
    tau = check_positive("tau", tau)
    check_bool("descending", descending)
    backend = resolve_backend(backend, SOFT_SORT_GATHER_BACKENDS, device)
    return SoftSortGatherFunction.apply(s, v, tau, descending, backend)


def sorted_cosine(s: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, tau: float, descending: bool = True,
                  eps: float = 1e-8, backend: str = "auto") -> torch.Tensor:
    """Cosine of every anchor's latent with the soft-sorted latents of the other view.

    ``c[i, k] = cos(E_i[k], z2[i])`` with ``E_i = SoftSort(s[i]) z1``, computed without ``P``
    (``[n, n, n]``) or ``E`` (``[n, n, d]``): memory O(n^2 + n d), time O(n^2 d).

    Args:
        s: ``[n, n]`` similarities (row i: anchor i against every sample j).
        z1: ``[n, d]`` latents gathered through the soft permutation.
        z2: ``[n, d]`` anchor latents (same dtype as z1).
        tau: SoftSort temperature > 0.
        eps: norm clamp of the cosine (as ``F.normalize``).
    Returns:
        ``c [n, n]`` in float32 (float64 for float64 inputs), differentiable in s, z1 and z2.
    """
    _check_rows("s", s)
    check_tensor("z1", z1, ndim=2, dtypes=FLOAT_DTYPES)
    check_tensor("z2", z2, ndim=2, dtypes=FLOAT_DTYPES)
    device = check_same_device(s=s, z1=z1, z2=z2)
    n = s.shape[0]
    if s.shape[1] != n:
        raise ValueError(f"s must be square [n, n], got shape {tuple(s.shape)}")
    if z1.shape[0] != n or z1.shape[1] == 0:
        raise ValueError(f"z1 must have shape [{n}, d] with d >= 1 to match s, got {tuple(z1.shape)}")
    if z2.shape != z1.shape:
        raise ValueError(f"z2 must have the shape of z1 {tuple(z1.shape)}, got {tuple(z2.shape)}")
    if z2.dtype != z1.dtype:
        raise TypeError(f"z2 must have the dtype of z1 ({z1.dtype}), got {z2.dtype}")
    tau = check_positive("tau", tau)
    eps = check_positive("eps", eps)
    # eps is a scalar of the accumulation dtype: one that rounds to 0 would make a zero vector's cosine
    # 0/0, and one past its largest value overflows; that value clamps every norm just as well.
    acc = torch.finfo(acc_dtype(s, z1, z2))
    eps = min(max(eps, acc.tiny), acc.max)
    check_bool("descending", descending)
    backend = resolve_backend(backend, SORTED_COSINE_BACKENDS, device)
    return SortedCosineFunction.apply(s, z1, z2, tau, descending, eps, backend)
