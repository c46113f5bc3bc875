"""Bad and extreme inputs for the losses (NT-Xent, WCH, bit balance, SortedNCE), CIBHash's KL terms and
mutual_attention, against NumPy float64 transcriptions of their formulas.

Extreme valid inputs: temperatures down to 1e-300, half-precision inputs at temperature 1e-5,
values up to 3e38 (float32) and 1e150 (float64), subnormal values, zero vectors and ties. A loss
is compared relative to its size (tiny temperatures make it ~1/T).
"""
from __future__ import annotations

import numpy as np
import torch
from badinput import Case, backend_cases, int_arg_cases, number_arg_cases, tensor_arg_cases
from cases_softsort import np_sorted_cosine

import hashkern.losses as L
from hashkern.models.cibhash import bernoulli_kl, official_bernoulli_kl
from hashkern.ops.mutual_attention import mutual_attention

RNG = np.random.default_rng(11)
N, D, K = 5, 4, 8
Z1, Z2 = RNG.standard_normal((N, D)), RNG.standard_normal((N, D))
H1, H2 = np.where(RNG.random((N, K)) < 0.5, 1.0, -1.0), np.where(RNG.random((N, K)) < 0.5, 1.0, -1.0)
S = RNG.random((N, N))
S_DIAG = S + 2 * np.eye(N)  # each pair most similar to itself: WCH's weights stay <= 1 at any T_w
TEMPS = (1e-300, 1e-30, 1e-5, 0.3, 1e30)
SCALES = {"unit": (1.0, torch.float32), "1e20": (1e20, torch.float32), "3e37": (3e37, torch.float32),
          "subnormal": (1e-40, torch.float32), "1e150-f64": (1e150, torch.float64), "f16": (1.0, torch.float16)}


def _t(a, dtype=torch.float32):
    return torch.tensor(np.asarray(a), dtype=dtype)


def _seen(a, dtype):
    """The float64 values an op sees after the input is rounded to ``dtype``."""
    return _t(a, dtype).double().numpy()


def _unit(z):
    z = np.asarray(z, dtype=np.float64)
    m = np.abs(z).max(-1, keepdims=True)
    z = z / np.where(m > 0, m, 1)
    n = np.linalg.norm(z, axis=-1, keepdims=True)
    return z / np.where(n > 0, n, 1)


def _lse(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    return (m + np.log(np.exp(x - m).sum(axis, keepdims=True))).squeeze(axis)


def np_nt_xent(z1, z2, t):
    z = _unit(np.concatenate([z1, z2]))
    logits = z @ z.T / t
    np.fill_diagonal(logits, -np.inf)
    n = len(z1)
    target = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    return float(np.mean(_lse(logits, 1) - logits[np.arange(2 * n), target]))


def np_log_weights(s, tw, norm="column"):
    x = (s - s.max(1, keepdims=True)) / tw
    log_p = x - _lse(x, 1)[:, None]
    d = np.diag(log_p)
    return log_p - (d[None, :] if norm == "column" else d[:, None])


def np_wch_weights(s, tw, clamp=False, norm="column"):
    lw = np_log_weights(np.asarray(s, dtype=np.float64), tw, norm)
    with np.errstate(over="ignore"):  # weights beyond float64 are inf, and such cases are left out
        return np.exp(np.minimum(lw, 0) if clamp else lw)


def np_wch_loss(h1, h2, s, t, tw, clamp=False, norm="column"):
    logits = h1 @ h2.T / (h1.shape[1] * t)
    log_sm = logits - _lse(logits, 1)[:, None]
    return float(-(np_wch_weights(s, tw, clamp, norm) * log_sm).sum(1).mean())


def np_sorted_nce(s, z1, z2, m, t, ts):
    logits = np_sorted_cosine(s, z1, z2, ts) / t
    pos, neg = logits[:, :m], _lse(logits[:, m:], 1)[:, None]
    return float((np.logaddexp(pos, neg) - pos).mean(1).mean())


def np_mutual_attention(x1, x2, t):
    cos = np.einsum("bqd,bpd->bqp", _unit(x2), _unit(x1)) / t  # [b, Q, P]

    def softmax(a):
        return np.exp(a - _lse(a, -1)[..., None])
    return softmax(cos) @ x1, softmax(cos.transpose(0, 2, 1)) @ x2


def _rel(value, tol=1e-6):
    """An atol of ``tol`` relative to the size of a float result (losses grow like 1/T)."""
    return tol * max(1.0, float(np.max(np.abs(value))))


def _loss_case(case_id, call, ref, tol):
    want = ref()
    return Case(case_id, call, reference=lambda tmp: want, atol=_rel(want, tol))


def _valid() -> list[Case]:
    out = []
    for t in TEMPS:
        out.append(_loss_case(f"nt_xent/temperature/valid-{t:g}", lambda tmp, t=t: L.nt_xent(_t(Z1), _t(Z2), t),
                              lambda t=t: np_nt_xent(_seen(Z1, torch.float32), _seen(Z2, torch.float32), t), 1e-6))
        out.append(_loss_case(f"wch_loss/temperature/valid-{t:g}", lambda tmp, t=t: L.wch_loss(
            _t(H1), _t(H2), _t(S_DIAG), t, t), lambda t=t: np_wch_loss(H1, H2, _seen(S_DIAG, torch.float32), t, t),
            1e-6))
        for s in (S, S_DIAG):
            want = np_wch_weights(_seen(s, torch.float32), t)
            if np.isfinite(want).all():  # off-diagonal maxima at tiny T_w: weights beyond float64, exactly
                out.append(Case(f"wch_weights/weight_temperature/valid-{t:g}-diag={s is S_DIAG}", lambda tmp, t=t, s=s:
                                L.wch_weights(_t(s), t), reference=lambda tmp, w=want: w, atol=_rel(want)))
        s_codes = (H1 @ H2.T + K) / (2 * K)
        out.append(_loss_case(f"sorted_nce_loss/temperature/valid-{t:g}", lambda tmp, t=t: L.sorted_nce_loss(
            _t(H1), _t(H2), _t(Z1), _t(Z2), num_positives=2, temperature=t, sort_temperature=t),
            lambda t=t: np_sorted_nce(s_codes, _seen(Z1, torch.float32), _seen(Z2, torch.float32), 2, t, t), 1e-5))
        for tmax in (1e-300, 1.0):
            out.append(Case(f"mutual_attention/temperature/valid-{t:g}-{tmax:g}", lambda tmp, t=t, a=tmax:
                            mutual_attention(_t(Z1[None] * a), _t(Z2[None, :3]), t), reference=lambda tmp, t=t,
                            a=tmax: np_mutual_attention(_seen(Z1[None] * a, torch.float32),
                                                        _seen(Z2[None, :3], torch.float32), t), atol=2e-6))
    out.append(_loss_case("nt_xent/z1/valid-f16-temperature-1e-5", lambda tmp: L.nt_xent(
        _t(Z1, torch.float16), _t(Z2, torch.float16), 1e-5),
        lambda: np_nt_xent(_seen(Z1, torch.float16), _seen(Z2, torch.float16), 1e-5), 1e-6))
    for name, (scale, dtype) in SCALES.items():
        z1, z2 = _seen(Z1 * scale, dtype), _seen(Z2 * scale, dtype)
        tol = 3e-3 if dtype == torch.float16 else 1e-6
        out.append(_loss_case(f"nt_xent/z1/valid-{name}", lambda tmp, a=z1, b=z2, d=dtype: L.nt_xent(
            _t(a, d), _t(b, d), 0.3), lambda a=z1, b=z2: np_nt_xent(a, b, 0.3), tol))
        h1, h2, s = _seen(H1 * scale, dtype), _seen(H2 * scale, dtype), _seen(S * scale, dtype)
        want = np_wch_weights(s, 0.2)
        if np.isfinite(want).all():
            out.append(Case(f"wch_weights/s/valid-{name}", lambda tmp, a=s, d=dtype: L.wch_weights(_t(a, d), 0.2),
                            reference=lambda tmp, w=want: w, atol=_rel(want, tol)))
        if scale ** 2 < torch.finfo(dtype).max:  # the exact loss ~ h1 h2 / (K T) fits the result's dtype
            out.append(_loss_case(f"wch_loss/h1/valid-{name}", lambda tmp, a=h1, b=h2, d=dtype: L.wch_loss(
                _t(a, d), _t(b, d), _t(S, d)), lambda a=h1, b=h2, d=dtype: np_wch_loss(a, b, _seen(S, d), 0.3, 0.2),
                tol))
            out.append(_loss_case(f"bit_balance_loss/h/valid-{name}", lambda tmp, a=h1, d=dtype: L.bit_balance_loss(
                _t(a, d)), lambda a=h1: float((a.mean(0) ** 2).mean() - (a ** 2).mean()), tol))
        out.append(_loss_case(f"sorted_nce_loss/z1/valid-{name}", lambda tmp, a=z1, b=z2, d=dtype: L.sorted_nce_loss(
            z1=_t(a, d), z2=_t(b, d), s=_t(S, d), num_positives=2, sort_temperature=0.05),
            lambda a=z1, b=z2, d=dtype: np_sorted_nce(_seen(S, d), a, b, 2, 0.2, 0.05), max(tol, 1e-5)))
        x1, x2 = z1[None], z2[None, :3]
        out.append(Case(f"mutual_attention/x1/valid-{name}", lambda tmp, a=x1, b=x2, d=dtype, c=scale: tuple(
            o.double() / c for o in mutual_attention(_t(a, d), _t(b, d))), reference=lambda tmp, a=x1, b=x2, c=scale:
            tuple(o / c for o in np_mutual_attention(a, b, 1.0)), atol=1e-4 if name == "subnormal" else tol * 4))
    for norm in ("column", "row"):
        for clamp in (False, True):
            out.append(_loss_case(f"WCHLoss/weight_norm/valid-{norm}-clamp={clamp}", lambda tmp, n=norm, c=clamp:
                                  L.WCHLoss(clamp_weights=c, weight_norm=n)(_t(H1), _t(H2), _t(S)),
                                  lambda n=norm, c=clamp: np_wch_loss(H1, H2, _seen(S, torch.float32), 0.3, 0.2, c, n),
                                  1e-6))
    zeros = np.zeros((N, D))
    out.append(_loss_case("nt_xent/z1/valid-zero-rows", lambda tmp: L.nt_xent(_t(zeros), _t(Z2), 0.3),
                          lambda: np_nt_xent(zeros, _seen(Z2, torch.float32), 0.3), 1e-6))
    out.append(_loss_case("wch_loss/s/valid-ties", lambda tmp: L.wch_loss(_t(H1), _t(H1), torch.full((N, N), 0.5)),
                          lambda: np_wch_loss(H1, H1, np.full((N, N), 0.5), 0.3, 0.2), 1e-6))
    p = np.array([[0.0, 1.0, 0.5, 1e-30], [1.0, 0.0, 0.5, 0.25]])
    for fn, ref in ((bernoulli_kl, lambda a, b: _np_kl(np.clip(a, 1e-7, 1 - 1e-7), np.clip(b, 1e-7, 1 - 1e-7), 0)),
                    (official_bernoulli_kl, lambda a, b: _np_kl(a, b, 1e-8))):
        out.append(_loss_case(f"{fn.__name__}/p/valid-saturated", lambda tmp, f=fn: f(_t(p, torch.float64), _t(
            p[::-1].copy(), torch.float64)), lambda r=ref: r(p, p[::-1]), 1e-12))
    return out


def _np_kl(p, q, add):
    return float((p * (np.log(p + add) - np.log(q + add)) + (1 - p) * (np.log(1 - p + add) - np.log(
        1 - q + add))).sum(1).mean())


BAD_2D = {"int64": torch.ones(N, D, dtype=torch.int64), "complex": torch.ones(N, D, dtype=torch.complex64),
          "1-d": torch.ones(D), "3-d": torch.ones(1, N, D), "meta": torch.ones(N, D, device="meta")}
BAD_BOOL = {"str": "no", "int": 1, "None": None}


def _kw(fn, **kwargs):
    return lambda: {"__fn__": fn, **{k: (v() if callable(v) else v) for k, v in kwargs.items()}}


def _bad() -> list[Case]:
    out = []
    nt = _kw(L.nt_xent, z1=lambda: _t(Z1), z2=lambda: _t(Z2))
    for arg in ("z1", "z2"):
        out += tensor_arg_cases("nt_xent", nt, arg, {**BAD_2D, "other-shape": torch.ones(N, D + 1),
                                                     "one-pair": torch.ones(1, D)}, names=(arg, "z1 and z2", "batch"))
    out += number_arg_cases("nt_xent", nt, "temperature")
    out += [Case(f"nt_xent/temperature/{t:g}", lambda tmp, t=t: L.nt_xent(_t(Z1), _t(Z2), t), names=("temperature",))
            for t in (1e-320, 5e-324)]
    out += [Case(f"nt_xent/reduction/{r!r}", lambda tmp, r=r: L.nt_xent(_t(Z1), _t(Z2), reduction=r),
                 names=("reduction",)) for r in ("sum", None, 1)]
    out += number_arg_cases("NTXentLoss", _kw(L.NTXentLoss), "temperature")

    wl = _kw(L.wch_loss, h1=lambda: _t(H1), h2=lambda: _t(H2), s=lambda: _t(S))
    for arg in ("h1", "h2"):
        out += tensor_arg_cases("wch_loss", wl, arg, {**BAD_2D, "other-K": torch.ones(N, K + 1),
                                                      "empty": torch.ones(0, K)}, names=(arg, "h1 and h2"))
    out += tensor_arg_cases("wch_loss", wl, "s", {**BAD_2D, "not-square": torch.ones(N, N + 1),
                                                   "other-b": torch.ones(N + 1, N + 1)})
    for arg in ("temperature", "weight_temperature"):
        out += number_arg_cases("wch_loss", wl, arg)
        out += number_arg_cases("WCHLoss", _kw(L.WCHLoss), arg)
    for arg in ("detach_weights", "clamp_weights"):
        out += tensor_arg_cases("wch_loss", wl, arg, BAD_BOOL)[5:]
        out += tensor_arg_cases("WCHLoss", _kw(L.WCHLoss), arg, BAD_BOOL)[5:]
    out += tensor_arg_cases("wch_loss", wl, "weight_norm", {"bogus": "rows", "None": None})[5:]

    ww = _kw(L.wch_weights, s=lambda: _t(S))
    out += tensor_arg_cases("wch_weights", ww, "s", {**BAD_2D, "not-square": torch.ones(N, N + 1),
                                                      "empty": torch.ones(0, 0),
                                                      "int-matrix": torch.ones(N, N, dtype=torch.int32)})
    out += number_arg_cases("wch_weights", ww, "weight_temperature")
    out += tensor_arg_cases("wch_weights", ww, "clamp", BAD_BOOL)[5:]
    out += tensor_arg_cases("wch_weights", ww, "weight_norm", {"bogus": "rows", "None": None})[5:]

    bb = _kw(L.bit_balance_loss, h=lambda: _t(H1))
    out += tensor_arg_cases("bit_balance_loss", bb, "h", {**{k: v for k, v in BAD_2D.items() if k != "meta"},
                                                          "empty": torch.ones(0, K),
                                                          "no-bits": torch.ones(N, 0)})

    sn = _kw(L.sorted_nce_loss, b1=lambda: _t(H1), b2=lambda: _t(H2), z1=lambda: _t(Z1), z2=lambda: _t(Z2),
             num_positives=2)
    for arg in ("b1", "b2", "z1", "z2"):
        out += tensor_arg_cases("sorted_nce_loss", sn, arg, {**BAD_2D, "other-rows": torch.ones(N + 1, K)}, names=(
            arg, "b1 and b2", "z1 and z2"))
    out += int_arg_cases("sorted_nce_loss", sn, "num_positives", low=1, high=N - 1)
    for arg in ("temperature", "sort_temperature"):
        out += [c for c in number_arg_cases("sorted_nce_loss", sn, arg) if not c.id.endswith("/None")
                or arg == "temperature"]
    out += [Case(f"sorted_nce_loss/reduction/{r!r}", lambda tmp, r=r: _call(sn, reduction=r), names=("reduction",))
            for r in ("avg", None)]
    out += backend_cases("sorted_nce_loss", sn)
    out += [Case("sorted_nce_loss/s/with-codes", lambda tmp: _call(sn, s=_t(S)), names=("s",)),
            Case("sorted_nce_loss/s/without-sort-temperature", lambda tmp: _call(sn, b1=None, b2=None, s=_t(S)),
                 names=("sort_temperature",)),
            Case("sorted_nce_loss/s/wrong-shape", lambda tmp: _call(sn, b1=None, b2=None, s=torch.ones(N, N + 1),
                                                                    sort_temperature=0.1), names=("s",)),
            Case("sorted_nce_loss/z1/one-sample", lambda tmp: _call(sn, b1=_t(H1[:1]), b2=_t(H2[:1]), z1=_t(Z1[:1]),
                                                                    z2=_t(Z2[:1]), num_positives=1), names=("batch",))]
    sl = _kw(L.SortedNCELoss, num_positives=2)
    out += int_arg_cases("SortedNCELoss", sl, "num_positives", low=1)
    out += number_arg_cases("SortedNCELoss", sl, "temperature")
    out += backend_cases("SortedNCELoss", sl)

    ma = _kw(mutual_attention, x1=lambda: _t(Z1[None]), x2=lambda: _t(Z2[None]))
    bad_3d = {"int64": torch.ones(1, N, D, dtype=torch.int64), "2-d": torch.ones(N, D),
              "other-D": torch.ones(1, N, D + 1), "other-b": torch.ones(2, N, D), "no-tokens": torch.ones(1, 0, D),
              "f64": torch.ones(1, N, D, dtype=torch.float64),
              "meta": torch.ones(1, N, D, device="meta")}
    for arg in ("x1", "x2"):
        out += tensor_arg_cases("mutual_attention", ma, arg, bad_3d, names=(arg, "x1 and x2"))
    out += number_arg_cases("mutual_attention", ma, "temperature")
    return out


def _call(make, **override):
    kwargs = make()
    kwargs.update(override)
    return kwargs.pop("__fn__")(**kwargs)


def cases() -> list[Case]:
    return _bad() + _valid()
