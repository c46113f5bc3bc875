"""Bad and extreme inputs for MaxSim: maxsim and maxsim_paired (cpu, torch and triton backends).

Bad tensors, masks (a row with no real token), offsets that do not describe the token rows (not int64,
not starting at 0 or ending at T, empty or negative-length documents), mismatched D or dtype, unknown
reductions and backends must be refused naming the argument. The valid cases (huge and tiny values,
ties, Lq = 1, one token, padded/masked/packed) are checked against the definition written in NumPy
float64, ``score[n, j] = sum_{i real} max_{t real} q[n, i] . d_j[t]``, on the values after rounding.
"""
from __future__ import annotations

import numpy as np
import torch
from badinput import Case, backend_cases, tensor_arg_cases
from cases_losses import _seen, _t
from cases_patchsim import BAD_BOOL, _bad_mask, _bad_x

from hashkern.ops.maxsim import maxsim, maxsim_paired

RNG = np.random.default_rng(23)
NQ, LQ, ND, LD, D = 2, 3, 3, 5, 4
Q, DOCS = RNG.standard_normal((NQ, LQ, D)), RNG.standard_normal((ND, LD, D))
LENGTHS = [2, 5, 1]
TOKENS = RNG.standard_normal((sum(LENGTHS), D))
OFFSETS = np.concatenate([[0], np.cumsum(LENGTHS)])
BACKENDS = ("cpu", "torch", "triton")


def np_maxsim(q, docs, q_mask=None, doc_masks=None):
    """float64: q [nq, Lq, D], docs a list of [L_j, D] (with masks [L_j]) -> [nq, nd]."""
    q = np.asarray(q, np.float64)
    out = np.zeros((q.shape[0], len(docs)))
    for n in range(q.shape[0]):
        rows = q[n] if q_mask is None else q[n][np.asarray(q_mask[n])]
        for j, doc in enumerate(docs):
            doc = np.asarray(doc, np.float64)
            if doc_masks is not None:
                doc = doc[np.asarray(doc_masks[j])]
            out[n, j] = (rows @ doc.T).max(axis=1).sum()
    return out


def _kwargs(backend="cpu"):
    return {"__fn__": maxsim, "q": _t(Q), "d": _t(DOCS), "backend": backend}


def _packed_kwargs(backend="cpu"):
    return {"__fn__": maxsim, "q": _t(Q), "d": _t(TOKENS), "offsets": torch.tensor(OFFSETS), "backend": backend}


def _paired_kwargs(backend="cpu"):
    return {"__fn__": maxsim_paired, "q": _t(Q), "d": _t(np.stack([DOCS[:2], DOCS[1:]])), "backend": backend}


def _bad_offsets():
    good = torch.tensor(OFFSETS)
    return {"int32": good.int(), "float": good.float(), "2-d": good[None], "one-entry": good[:1],
            "empty": good[:0], "not-from-0": good + 1, "short-of-T": good[:-1],
            "empty-document": torch.tensor([0, 2, 2, 8]), "decreasing": torch.tensor([0, 5, 2, 8]),
            "past-T": torch.tensor([0, 2, 7, 9]), "meta": good.to("meta")}


def _valid() -> list[Case]:
    out = []
    q_mask = np.array([[True, False, True], [False, True, False]])
    d_mask = np.array([[True, True, False, False, True], [False, False, False, True, False], [True] * LD])
    tied = DOCS.copy()
    tied[:, 3] = tied[:, 1]
    for backend in BACKENDS:
        for scale, dtype, atol in ((1e15, torch.float32, 1e26), (1e-18, torch.float32, 1e-40),
                                   (1e150, torch.float64, 1e288), (1.0, torch.float64, 1e-12)):
            q, d = Q * scale, DOCS * scale
            out.append(Case(f"maxsim[{backend}]/valid-scale={scale:g}-{str(dtype)[6:]}",
                            lambda tmp, q=q, d=d, b=backend, dt=dtype: maxsim(_t(q, dt), _t(d, dt), backend=b),
                            reference=lambda tmp, q=q, d=d, dt=dtype: np_maxsim(_seen(q, dt), list(_seen(d, dt))),
                            atol=atol))
        out.append(Case(f"maxsim[{backend}]/valid-masked-ties",
                        lambda tmp, b=backend: maxsim(_t(Q), _t(tied), torch.tensor(q_mask), torch.tensor(d_mask),
                                                      backend=b),
                        reference=lambda tmp: np_maxsim(_seen(Q, torch.float32), list(_seen(tied, torch.float32)),
                                                        q_mask, d_mask), atol=1e-5))
        out.append(Case(f"maxsim[{backend}]/valid-packed",
                        lambda tmp, b=backend: maxsim(_t(Q), _t(TOKENS), offsets=torch.tensor(OFFSETS), backend=b),
                        reference=lambda tmp: np_maxsim(_seen(Q, torch.float32), np.split(
                            _seen(TOKENS, torch.float32), OFFSETS[1:-1])), atol=1e-5))
        out.append(Case(f"maxsim[{backend}]/valid-one-token",
                        lambda tmp, b=backend: maxsim(_t(Q[:1, :1]), _t(DOCS[:1, :1]), backend=b),
                        reference=lambda tmp: np_maxsim(_seen(Q[:1, :1], torch.float32),
                                                        [_seen(DOCS[0, :1], torch.float32)]), atol=1e-6))
    return out


def cases() -> list[Case]:
    out = []
    for backend in BACKENDS:
        prefix = f"maxsim[{backend}]"
        kwargs = lambda b=backend: _kwargs(b)  # noqa: E731
        out += tensor_arg_cases(prefix, kwargs, "q", _bad_x(NQ, LQ), names=("q",))
        out += tensor_arg_cases(prefix, kwargs, "d", _bad_x(ND, LD), names=("d",))
        out += tensor_arg_cases(prefix, kwargs, "q_mask", _bad_mask(NQ, LQ), optional=True)
        out += tensor_arg_cases(prefix, kwargs, "d_mask", _bad_mask(ND, LD), optional=True)
        out += tensor_arg_cases(prefix, kwargs, "normalize", BAD_BOOL)[-len(BAD_BOOL):]
        out += tensor_arg_cases(prefix, kwargs, "reduce", {
            "unknown": "max", "upper-case": "SUM", "None": None, "int": 3, "patchsim's": "maxmean"})[-5:]
        packed = lambda b=backend: _packed_kwargs(b)  # noqa: E731
        out += tensor_arg_cases(f"{prefix}-packed", packed, "offsets", _bad_offsets(), optional=True)
        out += tensor_arg_cases(f"{prefix}-packed", packed, "d_mask", {"given": torch.ones(8, dtype=torch.bool)},
                                optional=True)
        out += tensor_arg_cases(f"{prefix}-packed", packed, "d", {"3-d": _t(DOCS)})
        paired = lambda b=backend: _paired_kwargs(b)  # noqa: E731
        out += tensor_arg_cases(f"maxsim_paired[{backend}]", paired, "d", {
            "wrong-nq": torch.ones(NQ + 1, 2, LD, D), "3-d": torch.ones(NQ, LD, D)}, optional=True)
        out.append(Case(f"maxsim_paired[{backend}]/offsets/not-a-multiple-of-nq", lambda tmp, b=backend: maxsim_paired(
            _t(Q), _t(TOKENS), offsets=torch.tensor(OFFSETS), backend=b), names=("offsets",)))
    out += backend_cases("maxsim", _kwargs, invalid=("bogus", "CPU", None, 3, "cuda"))
    return out + _valid()
