"""Bad and edge inputs for the metrics: mean_average_precision, precision_at_radius, precision_recall_curve."""
from __future__ import annotations

import numpy as np
import torch
from badinput import Case, int_arg_cases, np_map, np_pack, tensor_arg_cases

import hashkern

RNG = np.random.default_rng(3)
Q_BITS, DB_BITS = RNG.random((5, 10)) < 0.5, RNG.random((14, 10)) < 0.5
DB_BITS[9] = Q_BITS[0]                             # an exact hit, and ties below
Q_LAB, DB_LAB = RNG.integers(0, 3, 5), RNG.integers(0, 3, 14)
Q_HOT, DB_HOT = RNG.random((5, 4)) < 0.4, RNG.random((14, 4)) < 0.4


def _pm1(bits):
    return torch.from_numpy(np.where(bits, 1.0, -1.0))


def _kwargs(fn, **extra):
    required = {"topk": 4} if fn is hashkern.mean_average_precision else {}  # topk has no default (None: all)
    def make():
        return {"__fn__": fn, "q_codes": _pm1(Q_BITS), "db_codes": _pm1(DB_BITS), "q_labels": torch.from_numpy(Q_LAB),
                "db_labels": torch.from_numpy(DB_LAB), **required, **extra}
    return make


def np_precision_at_radius(r: int) -> float:
    dist = (Q_BITS[:, None] != DB_BITS[None]).sum(-1)
    rel = Q_LAB[:, None] == DB_LAB[None]
    within = dist <= r
    return float(np.mean([rel[i][within[i]].mean() if within[i].any() else 0.0 for i in range(len(dist))]))


def np_precision_recall() -> tuple:
    """Radii 0..K; mean precision (0 where nothing is retrieved), mean recall over queries with a relevant item."""
    dist = (Q_BITS[:, None] != DB_BITS[None]).sum(-1)
    rel = Q_LAB[:, None] == DB_LAB[None]
    radii = np.arange(Q_BITS.shape[1] + 1)
    precision = [np.mean([rel[i][dist[i] <= r].mean() if (dist[i] <= r).any() else 0.0 for i in range(len(dist))])
                 for r in radii]
    has = rel.any(1)
    recall = [np.mean([(rel[i] & (dist[i] <= r)).sum() / rel[i].sum() for i in np.flatnonzero(has)]) for r in radii]
    return radii, np.array(precision), np.array(recall)


def _valid() -> list[Case]:
    out = []
    for topk in (1, 4, 14, 100, None):
        out.append(Case(f"mean_average_precision/topk/valid-{topk}", lambda tmp, k=topk: _call(
            _kwargs(hashkern.mean_average_precision), topk=k),
            reference=lambda tmp, k=topk: np_map(Q_BITS, DB_BITS, Q_LAB, DB_LAB, min(k or 14, 14)), atol=1e-12))
    for form, convert in (("bool", torch.from_numpy), ("int8-01", lambda b: torch.from_numpy(b).to(torch.int8)),
                          ("packed", lambda b: torch.from_numpy(np_pack(b)))):
        extra = {"nbits": 10} if form == "packed" else {}
        out.append(Case(f"mean_average_precision/q_codes/valid-{form}", lambda tmp, c=convert, e=extra:
                        hashkern.mean_average_precision(q_codes=c(Q_BITS), db_codes=c(DB_BITS),
                                                        q_labels=torch.from_numpy(Q_LAB),
                                                        db_labels=torch.from_numpy(DB_LAB), topk=6, **e),
                        reference=lambda tmp: np_map(Q_BITS, DB_BITS, Q_LAB, DB_LAB, 6), atol=1e-12))
    out.append(Case("mean_average_precision/q_labels/valid-multi-hot", lambda tmp: hashkern.mean_average_precision(
        q_codes=_pm1(Q_BITS), db_codes=_pm1(DB_BITS), q_labels=torch.from_numpy(Q_HOT).long(),
        db_labels=torch.from_numpy(DB_HOT).long(), topk=7),
        reference=lambda tmp: np_map(Q_BITS, DB_BITS, Q_HOT, DB_HOT, 7), atol=1e-12))
    for r in (0, 2, 10, 2**40):
        out.append(Case(f"precision_at_radius/r/valid-{r}", lambda tmp, r=r: hashkern.precision_at_radius(
            q_codes=_pm1(Q_BITS), db_codes=_pm1(DB_BITS), q_labels=torch.from_numpy(Q_LAB),
            db_labels=torch.from_numpy(DB_LAB), r=r),
            reference=lambda tmp, r=r: np_precision_at_radius(r), atol=1e-12))
    out.append(Case("precision_recall_curve/q_codes/valid", lambda tmp: hashkern.precision_recall_curve(
        q_codes=_pm1(Q_BITS), db_codes=_pm1(DB_BITS), q_labels=torch.from_numpy(Q_LAB),
        db_labels=torch.from_numpy(DB_LAB)),
        reference=lambda tmp: np_precision_recall(), atol=1e-12))
    return out


def cases() -> list[Case]:
    bad_codes = {"half": torch.full((5, 10), 0.5), "nan": torch.full((5, 10), float("nan")),
                 "1-d": torch.ones(10), "complex": torch.ones(5, 10, dtype=torch.complex64),
                 "meta": torch.ones(5, 10, device="meta"), "wrong-K": torch.ones(5, 11)}
    bad_labels = {"float-ids": torch.zeros(5), "bool-ids": torch.zeros(5, dtype=torch.bool), "3-d": torch.zeros(
        5, 1, 1, dtype=torch.long), "wrong-length": torch.zeros(4, dtype=torch.long), "0-classes": torch.zeros(
        5, 0), "complex": torch.zeros(5, 2, dtype=torch.complex64), "0-d": torch.tensor(1)}
    out = []
    for name, fn, extra in (("mean_average_precision", hashkern.mean_average_precision, {"topk": 4}),
                            ("precision_at_radius", hashkern.precision_at_radius, {"r": 2}),
                            ("precision_recall_curve", hashkern.precision_recall_curve, {})):
        make = _kwargs(fn, **extra)
        out += tensor_arg_cases(name, make, "q_codes", bad_codes)
        out += tensor_arg_cases(name, make, "db_codes", {**bad_codes, "wrong-K": torch.ones(14, 11)})
        out += tensor_arg_cases(name, make, "q_labels", bad_labels)
        out += tensor_arg_cases(name, make, "db_labels", {k: (torch.cat([v] * 3) if k == "0-classes" else v)
                                                          for k, v in bad_labels.items()})
        out.append(Case(f"{name}/db_labels/multi-hot-vs-ids", lambda tmp, m=make: _call(
            m, db_labels=torch.zeros(14, 3, dtype=torch.long)), names=("db_labels",)))
        out.append(Case(f"{name}/db_codes/empty", lambda tmp, m=make: _call(
            m, db_codes=torch.ones(0, 10), db_labels=torch.zeros(0, dtype=torch.long)), names=("db_codes",)))
        out.append(Case(f"{name}/q_codes/packed-without-nbits-mismatch", lambda tmp, m=make: _call(
            m, q_codes=torch.from_numpy(np_pack(Q_BITS))), names=("q_codes", "db_codes")))
        out += int_arg_cases(name, lambda m=make: {**m(), "q_codes": torch.from_numpy(np_pack(Q_BITS)),
                                                   "db_codes": torch.from_numpy(np_pack(DB_BITS))}, "nbits", low=9,
                             high=16, optional=True)
        out += int_arg_cases(name, lambda m=make: {**m(), "batch_size": 2}, "batch_size", low=1, optional=True)
    out += int_arg_cases("mean_average_precision", _kwargs(hashkern.mean_average_precision), "topk", low=1,
                         optional=True)
    out += int_arg_cases("precision_at_radius", _kwargs(hashkern.precision_at_radius), "r", low=0)
    for fn_name, fn, arg, values in (("mean_average_precision", hashkern.mean_average_precision, "ties",
                                      ("random", None, 1)),
                                     ("precision_recall_curve", hashkern.precision_recall_curve, "empty",
                                      ("nan", None))):
        out += [Case(f"{fn_name}/{arg}/{v!r}", lambda tmp, f=fn, a=arg, v=v: _call(_kwargs(f), **{a: v}),
                     names=(arg,)) for v in values]
    out.append(Case("mean_average_precision/q_codes/no-queries", lambda tmp: _call(
        _kwargs(hashkern.mean_average_precision), q_codes=torch.ones(0, 10), q_labels=torch.zeros(0, dtype=torch.long)),
        names=("q_codes",)))
    return out + _valid()


def _call(make, **override):
    kwargs = make()
    kwargs.update(override)
    return kwargs.pop("__fn__")(**kwargs)
