"""Bad and extreme inputs for the soft sort ops: soft_sort, soft_sort_gather, sorted_cosine (cpu, torch, triton).

The valid cases push the temperature (1e-300 .. 1e300) and the values (1e20 .. 3e38, subnormal,
ties, zero vectors) to the ends of what the dtypes hold; the oracle is SoftSort written in NumPy
float64 (``P[k, j] = softmax_j(-|q_k - s_j| / tau)``, ``q`` the sorted row), not the library's reference.
Triton runs under the interpreter, so its cases stay at n <= 5.
"""
from __future__ import annotations

import numpy as np
import torch
from badinput import NOT_A_TENSOR, Case, backend_cases, number_arg_cases, tensor_arg_cases

from hashkern.ops.softsort import soft_sort, soft_sort_gather, sorted_cosine

RNG = np.random.default_rng(7)
N, D = 5, 3
S = np.round(RNG.random((N, N)) * 8) / 8                       # Hamming-like similarities, with ties
Z1, Z2 = RNG.standard_normal((N, D)), RNG.standard_normal((N, D))
BACKENDS = ("cpu", "torch", "triton")
TAUS = (1e-300, 1e-30, 1e-6, 0.05, 1.0, 1e30, 1e300)
BAD_BOOL = {"str": "yes", "int": 1, "None": None}


def np_soft_sort(s, tau: float, descending: bool = True) -> np.ndarray:
    """float64 ``[b, n]`` -> ``P [b, n, n]``; the row maximum of the scores is 0 (q_k is in the row)."""
    s = np.asarray(s, dtype=np.float64)
    q = -np.sort(-s, axis=-1) if descending else np.sort(s, axis=-1)
    with np.errstate(over="ignore"):
        scores = -np.abs(q[..., :, None] - s[..., None, :]) / tau
    p = np.exp(scores - scores.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def np_sorted_cosine(s, z1, z2, tau: float, eps: float = 1e-8) -> np.ndarray:
    e = np_soft_sort(s, tau) @ np.asarray(z1, dtype=np.float64)            # [n, n, d]
    z2 = np.asarray(z2, dtype=np.float64)
    u = z2 / np.maximum(np.linalg.norm(z2, axis=-1, keepdims=True), eps)
    return (e * u[:, None, :]).sum(-1) / np.maximum(np.linalg.norm(e, axis=-1), eps)


def _t(a, dtype=torch.float32):
    return torch.tensor(np.asarray(a), dtype=dtype)


def _sort_kwargs():
    return {"__fn__": soft_sort, "s": _t(S), "tau": 0.1}


def _gather_kwargs(backend="torch"):
    return {"__fn__": soft_sort_gather, "s": _t(S), "v": _t(Z1), "tau": 0.1, "backend": backend}


def _cosine_kwargs(backend="torch"):
    return {"__fn__": sorted_cosine, "s": _t(S), "z1": _t(Z1), "z2": _t(Z2), "tau": 0.1, "backend": backend}


def _extreme_inputs():
    """name -> (s, z1, z2, dtype, atol): values that overflow a naive float32 computation, or underflow it."""
    big = RNG.uniform(1e37, 3e38, (N, D)) * RNG.choice([-1, 1], (N, D))
    return {
        "s-ties": (np.full((N, N), 0.5), Z1, Z2, torch.float32, 2e-6),
        "s-1e20": (S * 1e20, Z1, Z2, torch.float32, 2e-6),
        "s-3e38": (np.round(RNG.random((N, N)) * 6 - 3) * 1e38, Z1, Z2, torch.float32, 2e-6),
        "s-subnormal-f32": (S * 1e-40, Z1, Z2, torch.float32, 2e-6),
        "s-subnormal-f64": (S * 1e-310, Z1, Z2, torch.float64, 1e-12),
        "z-1e20": (S, Z1 * 1e20, Z2 * 1e20, torch.float32, 2e-6),
        "z-3e38": (S, big, big[::-1].copy(), torch.float32, 2e-6),
        "z-subnormal": (S, Z1 * 1e-40, Z2 * 1e-40, torch.float32, 2e-6),
        "z1-zero": (S, np.zeros((N, D)), Z2, torch.float32, 2e-6),
        "z2-zero": (S, Z1, np.zeros((N, D)), torch.float32, 2e-6),
        "one-sample": (S[:1, :1], Z1[:1], Z2[:1], torch.float32, 2e-6),
        "f64": (S, Z1, Z2, torch.float64, 1e-12),
        "f16": (S, Z1, Z2, torch.float16, 3e-3),
    }


def _valid() -> list[Case]:
    out = []
    for tau in TAUS:
        for dtype, atol in ((torch.float32, 2e-6), (torch.float64, 1e-12)):
            name = str(dtype)[6:]
            out.append(Case(f"soft_sort/tau/valid-{tau:g}-{name}", lambda tmp, t=tau, d=dtype: soft_sort(_t(S, d), t),
                            reference=lambda tmp, t=tau: np_soft_sort(S, t), atol=atol))
        for backend in BACKENDS:
            out.append(Case(f"sorted_cosine/tau/valid-{tau:g}-{backend}", lambda tmp, t=tau, b=backend: sorted_cosine(
                _t(S), _t(Z1), _t(Z2), t, backend=b), reference=lambda tmp, t=tau: np_sorted_cosine(S, Z1, Z2, t),
                atol=2e-6))
            out.append(Case(f"soft_sort_gather/tau/valid-{tau:g}-{backend}", lambda tmp, t=tau, b=backend:
                            soft_sort_gather(_t(S), _t(Z1), t, backend=b),
                            reference=lambda tmp, t=tau: np_soft_sort(S, t) @ Z1, atol=4e-6))
    for name, (s, z1, z2, dtype, atol) in _extreme_inputs().items():
        s32 = np.asarray(_t(s, dtype).double())  # the oracle sees the values the op sees
        z1_, z2_ = np.asarray(_t(z1, dtype).double()), np.asarray(_t(z2, dtype).double())
        out.append(Case(f"soft_sort/s/valid-{name}", lambda tmp, s=s, d=dtype: soft_sort(_t(s, d), 1e-3),
                        reference=lambda tmp, s=s32: np_soft_sort(s, 1e-3), atol=atol))
        for backend in BACKENDS:
            for tau in (1e-300, 0.05):
                out.append(Case(f"sorted_cosine/s/valid-{name}-tau={tau:g}-{backend}",
                                lambda tmp, s=s, z1=z1, z2=z2, d=dtype, b=backend, t=tau: sorted_cosine(
                                    _t(s, d), _t(z1, d), _t(z2, d), t, backend=b),
                                reference=lambda tmp, s=s32, z1=z1_, z2=z2_, t=tau: np_sorted_cosine(s, z1, z2, t),
                                atol=atol))
                scale = max(1.0, float(np.abs(z1_).max()))
                out.append(Case(f"soft_sort_gather/s/valid-{name}-tau={tau:g}-{backend}",
                                lambda tmp, s=s, z1=z1, d=dtype, b=backend, t=tau, c=scale: soft_sort_gather(
                                    _t(s, d), _t(z1, d), t, backend=b).double() / c,
                                reference=lambda tmp, s=s32, z1=z1_, t=tau, c=scale: np_soft_sort(s, t) @ z1 / c,
                                atol=2 * atol))
    for eps in (1e-300, 1e-8, 1.0, 1e30, 1e39, 1e308):
        for backend in BACKENDS:
            out.append(Case(f"sorted_cosine/eps/valid-{eps:g}-{backend}", lambda tmp, e=eps, b=backend: sorted_cosine(
                _t(S), _t(Z1 * 8), _t(Z2), 0.1, eps=e, backend=b),
                reference=lambda tmp, e=eps: np_sorted_cosine(S, Z1 * 8, Z2, 0.1, e), atol=2e-6))
            out.append(Case(f"sorted_cosine/eps/valid-{eps:g}-zero-z-{backend}", lambda tmp, e=eps, b=backend:
                            sorted_cosine(_t(S), torch.zeros(N, D), torch.zeros(N, D), 0.1, eps=e, backend=b),
                            reference=lambda tmp: np.zeros((N, N)), atol=0.0))
    out.append(Case("soft_sort_gather/v/valid-batched-f64-s-f32-v", lambda tmp: soft_sort_gather(
        _t(S), _t(np.stack([Z1] * N), torch.float64), 0.1, backend="torch"),
        reference=lambda tmp: np_soft_sort(np.asarray(_t(S).double()), 0.1) @ Z1, atol=1e-6))
    out.append(Case("soft_sort/descending/valid-False", lambda tmp: soft_sort(_t(S, torch.float64), 0.1, False),
                    reference=lambda tmp: np_soft_sort(S, 0.1, False), atol=1e-12))
    return out


def _bad_s(n=N):
    return {"int64": torch.ones(n, n, dtype=torch.int64), "bool": torch.ones(n, n, dtype=torch.bool),
            "complex": torch.ones(n, n, dtype=torch.complex64), "3-d": torch.ones(1, n, n), "0-d": torch.tensor(1.0),
            "no-columns": torch.ones(n, 0), "float8": torch.ones(n, n).to(torch.float8_e4m3fn)}


def cases() -> list[Case]:
    out = []
    out += tensor_arg_cases("soft_sort", _sort_kwargs, "s", {k: v for k, v in _bad_s().items() if k != "3-d"})
    out += number_arg_cases("soft_sort", _sort_kwargs, "tau")
    for arg in ("descending", "hard"):
        out += tensor_arg_cases("soft_sort", _sort_kwargs, arg, BAD_BOOL)[len(NOT_A_TENSOR):]

    out += tensor_arg_cases("soft_sort_gather", _gather_kwargs, "s", _bad_s())
    out += tensor_arg_cases("soft_sort_gather", _gather_kwargs, "v", {
        "int64": torch.ones(N, D, dtype=torch.int64), "complex": torch.ones(N, D, dtype=torch.complex64),
        "1-d": torch.ones(N), "4-d": torch.ones(1, N, N, D), "wrong-n": torch.ones(N + 1, D),
        "wrong-b": torch.ones(N + 1, N, D), "d=0": torch.ones(N, 0), "meta": torch.ones(N, D, device="meta")})
    out += number_arg_cases("soft_sort_gather", _gather_kwargs, "tau")
    out += tensor_arg_cases("soft_sort_gather", _gather_kwargs, "descending", BAD_BOOL)[len(NOT_A_TENSOR):]
    out += backend_cases("soft_sort_gather", _gather_kwargs)

    out += tensor_arg_cases("sorted_cosine", _cosine_kwargs, "s", {**_bad_s(), "not-square": torch.ones(N, N + 1),
                                                                   "meta": torch.ones(N, N, device="meta")})
    for arg in ("z1", "z2"):
        out += tensor_arg_cases("sorted_cosine", _cosine_kwargs, arg, {
            "int64": torch.ones(N, D, dtype=torch.int64), "3-d": torch.ones(1, N, D), "wrong-n": torch.ones(N + 1, D),
            "d=0": torch.ones(N, 0), "f64": torch.ones(N, D, dtype=torch.float64),
            "meta": torch.ones(N, D, device="meta")}, names=(arg,))
    out += tensor_arg_cases("sorted_cosine", _cosine_kwargs, "z2", {"wider": torch.ones(N, D + 1)})[-1:]
    for arg in ("tau", "eps"):
        out += number_arg_cases("sorted_cosine", _cosine_kwargs, arg)
    out += tensor_arg_cases("sorted_cosine", _cosine_kwargs, "descending", BAD_BOOL)[len(NOT_A_TENSOR):]
    out += backend_cases("sorted_cosine", _cosine_kwargs)
    return out + _valid()
