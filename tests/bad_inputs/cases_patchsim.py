"""Bad and extreme inputs for patch similarity: patch_similarity (torch and triton) and patch_similarity_reference.

The valid cases push the values (1e20 .. 3e38 and subnormal in float32, 1e300 and 1e-310 in
float64), zero vectors, ties, masks and the softmaxmean temperature (1e-300 .. 1e300) to the
ends of what the dtypes hold, at odd sizes (P, Q not multiples of 16; every size 1). The oracle
is the definition written in NumPy float64, ``s[n, m] = mean_i max_j cos(x1[n, i], x2[m, j])``
(softmaxmean: ``agg_j = sum_j softmax_j(cos / T) cos``; masked patches left out; the cosine of
a zero vector is 0), on the values the op sees after rounding to its dtype. Gradients are compared
too (times max |x|), except where they are not finite in float64 (1 / |x| of subnormal x) or not
defined (zero vectors). Triton runs under the interpreter, so its cases stay tiny.
"""
from __future__ import annotations

import numpy as np
import torch
from badinput import Case, backend_cases, number_arg_cases, tensor_arg_cases
from cases_losses import _seen, _t, _unit  # tensor from NumPy, values after rounding, overflow-safe rows

from hashkern.ops.patchsim import patch_similarity, patch_similarity_reference

RNG = np.random.default_rng(16)
B1, B2, P, Q, D = 2, 3, 3, 5, 4
X1, X2 = RNG.standard_normal((B1, P, D)), RNG.standard_normal((B2, Q, D))
MASK1 = np.array([[True, False, True], [False, True, False]])
MASK2 = np.array([[True, True, False, False, True], [False, False, False, True, False], [True] * Q])
BACKENDS = ("torch", "triton")
TEMPS = (5e-324, 1e-300, 1e-40, 1e-6, 0.1, 1, np.float64(2.5), 1e30, 1e300, 1.7976931348623157e308)
BAD_BOOL = {"str": "yes", "int": 1, "None": None}


def _aggregate(sim, reduce, temperature):
    """sim [q] -> (agg, d agg / d sim [q]) of one (x1 patch, x2 image) over the real x2 patches."""
    if reduce == "maxmean":
        return sim.max(), np.eye(len(sim))[np.argmax(sim)]  # ties: the gradient goes to the first j
    # softmax with the max subtracted: exp(-inf) = 0 for T -> 0, ties share; d agg = p (1 + (sim - agg) / T)
    d = sim - sim.max()
    with np.errstate(over="ignore", under="ignore"):
        w = np.exp(d / temperature)
    p = w / w.sum()
    f = (p * d).sum()
    with np.errstate(over="ignore", invalid="ignore"):
        return sim.max() + f, np.where(p > 0, p * (1 + (d - f) / temperature), 0.0)


def np_patch_similarity(x1, x2, reduce="maxmean", temperature=0.1, mask1=None, mask2=None, normalize=True,
                        grad=None):
    """float64 [b1, P, D], [b2, Q, D] -> s [b1, b2], written from the definition; with ``grad`` [b1, b2] the
    gradients (dx1, dx2) of ``sum(grad * s)`` instead (normalize: d(x/|x|) = (I - u u^T) / |x|)."""
    x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
    u1, u2 = (_unit(x1), _unit(x2)) if normalize else (x1, x2)
    (b1, p, _), (b2, q, _) = u1.shape, u2.shape
    m1 = np.ones((b1, p), bool) if mask1 is None else np.asarray(mask1)
    m2 = np.ones((b2, q), bool) if mask2 is None else np.asarray(mask2)
    s, du1, du2 = np.zeros((b1, b2)), np.zeros_like(u1), np.zeros_like(u2)
    for n in range(b1):
        real = np.flatnonzero(m1[n])
        for m in range(b2):
            per_patch = []
            for i in real:
                agg, dagg = _aggregate(u2[m][m2[m]] @ u1[n, i], reduce, temperature)
                per_patch.append(agg)
                if grad is not None:
                    c = grad[n, m] / len(real)
                    du1[n, i] += c * dagg @ u2[m][m2[m]]
                    du2[m][m2[m]] += c * dagg[:, None] * u1[n, i]
            s[n, m] = np.mean(per_patch)
    if grad is None:
        return s
    if not normalize:
        return du1, du2
    return tuple((g - (g * u).sum(-1, keepdims=True) * u) / _norm(x) for g, u, x in ((du1, u1, x1), (du2, u2, x2)))


def _norm(x):
    """|x| along the last axis, keepdims, without overflow (x ~ 1e300)."""
    m = np.abs(x).max(-1, keepdims=True)
    return m * np.linalg.norm(x / np.where(m > 0, m, 1), axis=-1, keepdims=True)


def _extreme_inputs():
    """name -> (x1, x2, dtype, atol): values a naive float32 normalisation overflows or underflows on."""
    big1 = RNG.uniform(1e37, 3e38, (B1, P, D)) * RNG.choice([-1, 1], (B1, P, D))
    big2 = RNG.uniform(1e37, 3e38, (B2, Q, D)) * RNG.choice([-1, 1], (B2, Q, D))
    zero_rows1, zero_rows2 = X1.copy(), X2.copy()
    zero_rows1[0, 1], zero_rows2[1, :2] = 0, 0
    ties2 = np.repeat(X2[:, :1], Q, axis=1)               # every x2 patch the same: a Q-way tie
    same = np.concatenate([X1, X1[:1]], 0)                 # x2 = x1: cosines of exactly 1
    return {
        "unit": (X1, X2, torch.float32, 2e-6),
        "1e20": (X1 * 1e20, X2 * 1e20, torch.float32, 2e-6),
        "3e38": (big1, big2, torch.float32, 2e-6),
        "1e20-vs-1e-20": (X1 * 1e20, X2 * 1e-20, torch.float32, 2e-6),
        "subnormal-f32": (X1 * 1e-40, X2 * 1e-40, torch.float32, 2e-6),
        "1e300-f64": (X1 * 1e300, X2 * 1e300, torch.float64, 1e-12),
        "subnormal-f64": (X1 * 1e-310, X2 * 1e-310, torch.float64, 1e-12),
        "zero-rows": (zero_rows1, zero_rows2, torch.float32, 2e-6),
        "x2-all-zero": (X1, np.zeros((B2, Q, D)), torch.float32, 0.0),
        "ties": (X1, ties2, torch.float32, 2e-6),
        "x2-is-x1": (X1, same, torch.float32, 2e-6),
        "size-1": (X1[:1, :1, :1], X2[:1, :1, :1], torch.float32, 2e-6),
        "P=17-Q=19": (RNG.standard_normal((1, 17, 5)), RNG.standard_normal((2, 19, 5)), torch.float32, 2e-6),
        "f64": (X1, X2, torch.float64, 1e-12),
        "f16": (X1, X2, torch.float16, 2e-3),
        "bf16": (X1, X2, torch.bfloat16, 1.6e-2),
        "f16-6e4": (X1 * 6e4 / np.abs(X1).max(), X2 * 6e4 / np.abs(X2).max(), torch.float16, 2e-3),
        "f16-subnormal": (X1 * 1e-6, X2 * 1e-6, torch.float16, 2e-3),
        "bf16-3e38": (big1, big2, torch.bfloat16, 1.6e-2),
    }


def _case(cid, x1, x2, dtype, atol, backend, reduce="maxmean", temperature=0.1, mask1=None, mask2=None,
          normalize=True):
    call = lambda tmp: patch_similarity(  # noqa: E731
        _t(x1, dtype), _t(x2, dtype), normalize, reduce, None if mask1 is None else torch.tensor(mask1),
        None if mask2 is None else torch.tensor(mask2), temperature, backend)
    seen1, seen2 = _seen(x1, dtype), _seen(x2, dtype)
    return Case(cid, call, reference=lambda tmp: np_patch_similarity(seen1, seen2, reduce, temperature, mask1,
                                                                      mask2, normalize), atol=atol)


def _grad_case(cid, x1, x2, dtype, atol, backend, reduce, temperature, mask1=None, mask2=None, tied=False):
    """Gradients of sum(G * s) w.r.t. x1 and x2, each times max |x| so that they are O(1) at any scale.

    Where every patch of an x2 image is the same (``tied``) the split of dx2 among the copies is any
    subgradient (Triton's interpreter multiplies with NumPy's BLAS, whose rounding differs by an ulp
    between equal columns, so the first copy is not always the max): dx2 is compared summed over patches."""
    seen1, seen2 = _seen(x1, dtype), _seen(x2, dtype)
    c1, c2 = np.abs(seen1).max(), np.abs(seen2).max()
    weights = RNG.standard_normal((seen1.shape[0], seen2.shape[0]))

    def call(tmp):
        a1, a2 = _t(x1, dtype).requires_grad_(), _t(x2, dtype).requires_grad_()
        s = patch_similarity(a1, a2, True, reduce, None if mask1 is None else torch.tensor(mask1),
                             None if mask2 is None else torch.tensor(mask2), temperature, backend)
        g1, g2 = torch.autograd.grad((s * _t(weights, s.dtype)).sum(), (a1, a2))
        return g1.double() * c1, (g2.double().sum(1) if tied else g2.double()) * c2

    def reference(tmp):
        g1, g2 = np_patch_similarity(seen1, seen2, reduce, temperature, mask1, mask2, grad=weights)
        return g1 * c1, (g2.sum(1) if tied else g2) * c2
    return Case(cid, call, reference=reference, atol=atol)


GRAD_INPUTS = ("unit", "1e20", "3e38", "1e20-vs-1e-20", "1e300-f64", "ties", "x2-is-x1", "P=17-Q=19", "f64")


def _valid() -> list[Case]:
    out = []
    extremes = _extreme_inputs()
    for name in GRAD_INPUTS:
        x1, x2, dtype, atol = extremes[name]
        for backend in BACKENDS:
            out.append(_grad_case(f"patch_similarity/x/valid-grad-{name}-maxmean-{backend}", x1, x2, dtype,
                                  4 * atol, backend, "maxmean", 0.1, tied=name == "ties"))
            for t in (1e-300, 0.1, 1e300):
                out.append(_grad_case(f"patch_similarity/x/valid-grad-{name}-softmaxmean-T={t:g}-{backend}", x1, x2,
                                      dtype, 4 * atol, backend, "softmaxmean", t, tied=name == "ties"))
    for backend in BACKENDS:
        for reduce, t in (("maxmean", 0.1), ("softmaxmean", 1e-300), ("softmaxmean", 0.1), ("softmaxmean", 1e300)):
            out.append(_grad_case(f"patch_similarity/mask/valid-grad-{reduce}-T={t:g}-{backend}", X1, X2,
                                  torch.float32, 8e-6, backend, reduce, t, MASK1, MASK2))
    for name, (x1, x2, dtype, atol) in extremes.items():
        for backend in BACKENDS:
            out.append(_case(f"patch_similarity/x/valid-{name}-maxmean-{backend}", x1, x2, dtype, atol, backend))
            for t in (1e-300, 0.1):
                out.append(_case(f"patch_similarity/x/valid-{name}-softmaxmean-T={t:g}-{backend}", x1, x2, dtype,
                                 atol, backend, "softmaxmean", t))
    for backend in BACKENDS:
        for t in TEMPS:
            out.append(_case(f"patch_similarity/temperature/valid-{t:g}-{backend}", X1, X2, torch.float32, 2e-6,
                             backend, "softmaxmean", t))
            out.append(_case(f"patch_similarity/temperature/valid-{t:g}-masked-{backend}", X1, X2, torch.float32,
                             2e-6, backend, "softmaxmean", t, MASK1, MASK2))
            out.append(_case(f"patch_similarity/temperature/valid-{t:g}-f64-{backend}", X1, X2, torch.float64,
                             1e-12, backend, "softmaxmean", t))
        for reduce in ("maxmean", "softmaxmean"):
            out.append(_case(f"patch_similarity/mask/valid-{reduce}-{backend}", X1, X2, torch.float32, 2e-6, backend,
                             reduce, 0.1, MASK1, MASK2))
            out.append(_case(f"patch_similarity/mask/valid-all-true-{reduce}-{backend}", X1, X2, torch.float32, 2e-6,
                             backend, reduce, 0.1, np.ones((B1, P), bool), np.ones((B2, Q), bool)))
            out.append(_case(f"patch_similarity/normalize/valid-False-{reduce}-{backend}", X1, X2 * 3, torch.float32,
                             1e-5, backend, reduce, 0.5, MASK1, MASK2, normalize=False))
    out.append(_case("patch_similarity/backend/valid-auto", X1, X2, torch.float32, 2e-6, "auto", "softmaxmean"))
    for backend in BACKENDS:  # views: x1 transposed, x2 expanded (stride 0), mask1 every other column
        for reduce in ("maxmean", "softmaxmean"):
            out.append(Case(f"patch_similarity/x/valid-strided-{reduce}-{backend}", lambda tmp, b=backend, r=reduce:
                            patch_similarity(_t(X1.transpose(0, 2, 1).copy()).transpose(1, 2),
                                             _t(X2[:1, :1]).expand(B2, Q, D), True, r,
                                             torch.tensor(np.repeat(MASK1, 2, 1))[:, ::2], None, 0.1, b),
                            reference=lambda tmp, r=reduce: np_patch_similarity(
                                _seen(X1, torch.float32), np.broadcast_to(_seen(X2[:1, :1], torch.float32), X2.shape),
                                r, 0.1, MASK1), atol=2e-6))
    for reduce in ("maxmean", "softmaxmean"):
        for t in (1e-300, 0.1):
            out.append(Case(f"patch_similarity_reference/valid-{reduce}-T={t:g}", lambda tmp, r=reduce, t=t:
                            patch_similarity_reference(_t(X1, torch.float64), _t(X2, torch.float64), True, r,
                                                       torch.tensor(MASK1), torch.tensor(MASK2), t),
                            reference=lambda tmp, r=reduce, t=t: np_patch_similarity(X1, X2, r, t, MASK1, MASK2),
                            atol=1e-12))
    return out


def _kwargs(backend="torch", reduce="maxmean"):
    return {"__fn__": patch_similarity, "x1": _t(X1), "x2": _t(X2), "reduce": reduce, "backend": backend}


def _bad_x(batch, patches, other_dim=D):
    return {"int64": torch.ones(batch, patches, other_dim, dtype=torch.int64),
            "bool": torch.ones(batch, patches, other_dim, dtype=torch.bool),
            "complex": torch.ones(batch, patches, other_dim, dtype=torch.complex64),
            "float8": torch.ones(batch, patches, other_dim).to(torch.float8_e4m3fn),
            "f64-vs-f32": torch.ones(batch, patches, other_dim, dtype=torch.float64),
            "2-d": torch.ones(patches, other_dim), "4-d": torch.ones(1, batch, patches, other_dim),
            "0-d": torch.tensor(1.0), "no-images": torch.ones(0, patches, other_dim),
            "no-patches": torch.ones(batch, 0, other_dim), "wrong-D": torch.ones(batch, patches, other_dim + 1),
            "D=0": torch.ones(batch, patches, 0), "meta": torch.ones(batch, patches, other_dim, device="meta")}


def _bad_mask(batch, patches):
    no_real_patch = torch.ones(batch, patches, dtype=torch.bool)
    no_real_patch[-1] = False
    return {"uint8": torch.ones(batch, patches, dtype=torch.uint8), "float": torch.ones(batch, patches),
            "int64": torch.ones(batch, patches, dtype=torch.int64), "1-d": torch.ones(patches, dtype=torch.bool),
            "3-d": torch.ones(1, batch, patches, dtype=torch.bool),
            "transposed": torch.ones(patches, batch, dtype=torch.bool),
            "wrong-batch": torch.ones(batch + 1, patches, dtype=torch.bool),
            "wrong-patches": torch.ones(batch, patches + 1, dtype=torch.bool),
            "row-all-false": no_real_patch, "meta": torch.ones(batch, patches, dtype=torch.bool, device="meta")}


def cases() -> list[Case]:
    out = []
    for backend in BACKENDS:
        prefix = f"patch_similarity[{backend}]"
        kwargs = lambda b=backend: _kwargs(b)  # noqa: E731
        out += tensor_arg_cases(prefix, kwargs, "x1", _bad_x(B1, P))
        out += tensor_arg_cases(prefix, kwargs, "x2", _bad_x(B2, Q))
        out += tensor_arg_cases(prefix, kwargs, "mask1", _bad_mask(B1, P), optional=True)
        out += tensor_arg_cases(prefix, kwargs, "mask2", _bad_mask(B2, Q), optional=True)
        out += tensor_arg_cases(prefix, kwargs, "normalize", BAD_BOOL)[-len(BAD_BOOL):]
        out += tensor_arg_cases(prefix, kwargs, "reduce", {
            "unknown": "max", "upper-case": "MAXMEAN", "None": None, "int": 3, "empty": ""})[-5:]
        for reduce in ("maxmean", "softmaxmean"):  # the temperature is checked whichever the reduction
            out += number_arg_cases(f"{prefix}[{reduce}]", lambda b=backend, r=reduce: _kwargs(b, r), "temperature")
    out += backend_cases("patch_similarity", _kwargs, invalid=("bogus", "CPU", None, 3, "cpu", "cuda"))
    return out + _valid()
