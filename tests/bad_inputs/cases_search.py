"""Bad and edge inputs for exact search: hamming_topk, hamming_radius."""
from __future__ import annotations

import numpy as np
import torch
from badinput import Case, backend_cases, int_arg_cases, np_pack, np_radius, np_topk, tensor_arg_cases

import hashkern

RNG = np.random.default_rng(61)
Q = np_pack(RNG.random((4, 21)) < 0.5)        # uint8 [4, 3]
DB = np_pack(RNG.random((9, 21)) < 0.5)       # uint8 [9, 3]
DB[5], DB[7] = DB[2], DB[2]                   # ties, broken by index

BAD_PACKED = {"float32": torch.zeros(4, 3), "int8": torch.zeros(4, 3, dtype=torch.int8),
              "1-d": torch.zeros(3, dtype=torch.uint8), "3-d": torch.zeros(1, 4, 3, dtype=torch.uint8),
              "other-width": torch.zeros(4, 2, dtype=torch.uint8), "zero-width": torch.zeros(4, 0, dtype=torch.uint8),
              "meta": torch.zeros(4, 3, dtype=torch.uint8, device="meta")}


def _kwargs(fn, **extra):
    def make():
        return {"__fn__": fn, "q_packed": torch.from_numpy(Q.copy()), "db_packed": torch.from_numpy(DB.copy()),
                **extra}
    return make


def _valid() -> list[Case]:
    q, db = torch.from_numpy(Q), torch.from_numpy(DB)
    out = []
    for backend in ("auto", "torch", "cpu"):
        for k in (1, 3, 9):
            out.append(Case(f"hamming_topk/k/valid-{k}-{backend}",
                            lambda tmp, k=k, b=backend: hashkern.hamming_topk(q, db, k, backend=b),
                            reference=lambda tmp, k=k: np_topk(Q, DB, k)))
        for r in (0, 5, 21, 2**31, 2**32 + 1, 2**63 - 1):
            out.append(Case(f"hamming_radius/r/valid-{r}-{backend}",
                            lambda tmp, r=r, b=backend: hashkern.hamming_radius(q, db, r, backend=b),
                            reference=lambda tmp, r=r: np_radius(Q, DB, r)))
    strided_q = torch.from_numpy(np.repeat(Q, 2, axis=0))[::2]
    out.append(Case("hamming_topk/q_packed/valid-strided", lambda tmp: hashkern.hamming_topk(strided_q, db, 4),
                    reference=lambda tmp: np_topk(Q, DB, 4)))
    out.append(Case("hamming_topk/q_packed/valid-no-queries", lambda tmp: hashkern.hamming_topk(q[:0], db, 4),
                    reference=lambda tmp: (np.zeros((0, 4)), np.zeros((0, 4)))))
    out.append(Case("hamming_radius/q_packed/valid-no-queries", lambda tmp: hashkern.hamming_radius(q[:0], db, 4),
                    reference=lambda tmp: np_radius(Q[:0], DB, 4)))
    return out


def cases() -> list[Case]:
    out = []
    for name, fn, extra in (("hamming_topk", hashkern.hamming_topk, {"k": 3}),
                            ("hamming_radius", hashkern.hamming_radius, {"r": 2})):
        make = _kwargs(fn, **extra)
        for arg in ("q_packed", "db_packed"):
            out += tensor_arg_cases(name, make, arg, BAD_PACKED)
        out.append(Case(f"{name}/db_packed/empty", lambda tmp, make=make: _call(make, db_packed=torch.zeros(
            0, 3, dtype=torch.uint8)), names=("db_packed",)))
        out += backend_cases(name, make, invalid=("bogus", None, 3, "triton"))
    out += int_arg_cases("hamming_topk", _kwargs(hashkern.hamming_topk, k=3), "k", low=1, high=9)
    out += int_arg_cases("hamming_radius", _kwargs(hashkern.hamming_radius, r=2), "r", low=0, high=2**63 - 1)
    out.append(Case("hamming_radius/r/2**64", lambda tmp: hashkern.hamming_radius(
        torch.from_numpy(Q), torch.from_numpy(DB), 2**64), names=("r",)))
    return out + _valid()


def _call(make, **override):
    kwargs = make()
    kwargs.update(override)
    return kwargs.pop("__fn__")(**kwargs)
