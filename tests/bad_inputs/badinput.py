"""The generated bad-input suite's vocabulary: cases, how an outcome is judged, shared generators and NumPy oracles.

A :class:`Case` calls one public function once. A *bad* case (``names`` given) must raise
``ValueError``/``TypeError`` (``OSError`` too where ``paths=True``) whose message names the
argument (any of ``names``); a *valid* case (``reference`` given) must return what an
independent NumPy / float64 oracle returns. Anything else is a defect, sorted into the
classes of :data:`DEFECTS`.

To add cases for another part of the API, add ``tests/bad_inputs/cases_<area>.py`` with a
function ``cases() -> list[Case]``; ``test_bad_inputs.py`` and ``report.py`` find it by its name.
The generators here (:func:`tensor_arg_cases`, :func:`int_arg_cases`, :func:`number_arg_cases`,
:func:`backend_cases`) build the usual bad values of one argument from a valid call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

GOOD = ("refused: clear error naming the argument", "accepted: equal to the NumPy/float64 reference")
DEFECTS = ("silently wrong result", "NaN/inf from finite input", "unclear error", "bad input accepted",
           "valid input refused")


@dataclass(frozen=True)
class Case:
    """One call: ``call(tmp)`` with ``tmp`` a fresh folder (``pathlib.Path``)."""
    id: str
    call: Callable[[Any], Any]
    names: tuple[str, ...] = ()          # bad input: the error message must contain one of these
    reference: Callable[[Any], Any] | None = None  # valid input: the oracle, same ``tmp``
    paths: bool = False                  # OSError is a right answer too (files)
    atol: float = 0.0                    # for float results

    def __post_init__(self):
        if bool(self.names) == (self.reference is not None):
            raise ValueError(f"case {self.id}: give names (bad input) or reference (valid input), not both")


@dataclass
class Outcome:
    kind: str
    detail: str = ""
    ok: bool = field(init=False)

    def __post_init__(self):
        self.ok = self.kind in GOOD


def _to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64 if x.is_floating_point() else x.dtype).numpy()
    if isinstance(x, (tuple, list)):
        return type(x)(_to_numpy(v) for v in x)
    return x


def _nonfinite(x) -> bool:
    if isinstance(x, (tuple, list)):
        return any(_nonfinite(v) for v in x)
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        return not np.isfinite(x).all()
    return isinstance(x, float) and not math.isfinite(x)


def _equal(got, want, atol: float) -> bool:
    if isinstance(want, (tuple, list)):
        return isinstance(got, (tuple, list)) and len(got) == len(want) and all(
            _equal(g, w, atol) for g, w in zip(got, want))
    if isinstance(want, np.ndarray) or isinstance(got, np.ndarray):
        got, want = np.asarray(got), np.asarray(want)
        if got.shape != want.shape:
            return False
        if want.dtype.kind == "f" or got.dtype.kind == "f":
            return bool(np.allclose(got.astype(np.float64), want.astype(np.float64), rtol=0, atol=atol))
        return bool((got.astype(np.int64) == want.astype(np.int64)).all())
    if isinstance(want, float) or isinstance(got, float):
        return isinstance(got, (int, float)) and abs(got - want) <= atol
    return got == want


def judge(case: Case, tmp) -> Outcome:
    """Run ``case`` and classify what happened."""
    allowed = (ValueError, TypeError) + ((OSError,) if case.paths else ())
    try:
        got = case.call(tmp)
    except Exception as exc:  # noqa: BLE001 - classifying every failure is the point
        message = f"{type(exc).__name__}: {exc}"
        if case.reference is not None:
            return Outcome("valid input refused", message)
        if isinstance(exc, allowed) and any(name in str(exc) for name in case.names):
            return Outcome(GOOD[0], message)
        return Outcome("unclear error", f"{message} (expected {[e.__name__ for e in allowed]} naming "
                                        f"{' or '.join(case.names)})")
    if case.reference is None:
        return Outcome("bad input accepted", f"returned {type(got).__name__}")
    got, want = _to_numpy(got), _to_numpy(case.reference(tmp))
    if _nonfinite(got) and not _nonfinite(want):
        return Outcome("NaN/inf from finite input", f"got {got!r}")
    if not _equal(got, want, case.atol):
        return Outcome("silently wrong result", f"got {got!r}, expected {want!r}")
    return Outcome(GOOD[1])


# ---- generators: the usual bad values of one argument, from a valid call ----

NOT_A_TENSOR = {"list": [[1, 0], [0, 1]], "None": None, "ndarray": np.ones((2, 2)), "str": "x", "int": 3}


def _with(kwargs_fn, arg, value):
    def call(tmp, kwargs_fn=kwargs_fn):
        kwargs = kwargs_fn()
        kwargs[arg] = value(kwargs) if callable(value) else value
        return kwargs.pop("__fn__")(**kwargs)
    return call


def tensor_arg_cases(prefix: str, kwargs_fn: Callable[[], dict], arg: str, bad: dict,
                     names: tuple[str, ...] | None = None, optional: bool = False) -> list[Case]:
    """``kwargs_fn()`` gives a valid call ``{"__fn__": f, arg: ..., ...}``; each of ``bad`` (name -> value,
    or ``kwargs -> value``) replaces ``arg``, plus the values in :data:`NOT_A_TENSOR` (but None when
    the argument is ``optional``)."""
    not_tensor = {k: v for k, v in NOT_A_TENSOR.items() if not (optional and v is None)}
    bad = {**{f"not-a-tensor-{k}": v for k, v in not_tensor.items()}, **bad}
    return [Case(f"{prefix}/{arg}/{what}", _with(kwargs_fn, arg, value), names=names or (arg,))
            for what, value in bad.items()]


def int_arg_cases(prefix: str, kwargs_fn, arg: str, low: int | None, high: int | None = None,
                  optional: bool = False) -> list[Case]:
    """Non-ints (float, bool, str, tensor, and None unless ``optional``), ints just outside ``[low, high]``, far out."""
    bad = {"float": 2.0, "bool": True, "str": "3", "tensor": torch.tensor(2), **({} if optional else {"None": None})}
    if low is not None:
        bad.update({"below-low": low - 1, "very-negative": -2**63 - 1})
    if high is not None:
        bad.update({"above-high": high + 1})
    return [Case(f"{prefix}/{arg}/{what}", _with(kwargs_fn, arg, value), names=(arg,)) for what, value in bad.items()]


def number_arg_cases(prefix: str, kwargs_fn, arg: str, positive: bool = True) -> list[Case]:
    """Temperatures, scales, weights: non-numbers, NaN, ±inf, and (``positive``) 0 and negatives."""
    bad = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "str": "0.5", "None": None,
           "tensor": torch.tensor(0.5), "complex": 0.5 + 1j}
    if positive:
        bad.update({"zero": 0.0, "negative": -0.5})
    return [Case(f"{prefix}/{arg}/{what}", _with(kwargs_fn, arg, value), names=(arg,)) for what, value in bad.items()]


def backend_cases(prefix: str, kwargs_fn, invalid=("bogus", "CPU", None, 3)) -> list[Case]:
    return [Case(f"{prefix}/backend/{v!r}", _with(kwargs_fn, "backend", v), names=("backend",)) for v in invalid]


# ---- NumPy oracles ----

def np_pack(bits: np.ndarray) -> np.ndarray:
    """bool ``[..., K]`` -> uint8 ``[..., ceil(K/8)]``, bit j in byte j // 8, bit j % 8."""
    return np.packbits(np.asarray(bits, dtype=bool), axis=-1, bitorder="little")


def np_hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Packed uint8 ``[na, W]``, ``[nb, W]`` -> int ``[na, nb]``."""
    return np.unpackbits(np.bitwise_xor(a[:, None, :], b[None, :, :]), axis=-1).sum(-1).astype(np.int64)


def np_topk(a: np.ndarray, b: np.ndarray, k: int):
    dist = np_hamming(a, b)
    order = np.stack([np.lexsort((np.arange(b.shape[0]), row)) for row in dist])[:, :k]
    return np.take_along_axis(dist, order, 1), order


def np_radius(a: np.ndarray, b: np.ndarray, r: int):
    dist = np_hamming(a, b)
    offsets, idx, dd = [0], [], []
    for row in dist:
        order = np.lexsort((np.arange(b.shape[0]), row))
        hits = order[row[order] <= r]
        idx += hits.tolist()
        dd += row[hits].tolist()
        offsets.append(len(idx))
    return np.array(offsets), np.array(idx, dtype=np.int64), np.array(dd, dtype=np.int64)


def np_map(q_bits, db_bits, q_labels, db_labels, topk: int) -> float:
    """mAP@topk with (distance, index) order; relevance: equal class id, or a shared multi-hot label."""
    dist = (np.asarray(q_bits)[:, None, :] != np.asarray(db_bits)[None, :, :]).sum(-1)
    q_labels, db_labels = np.asarray(q_labels), np.asarray(db_labels)
    aps = []
    for i, row in enumerate(dist):
        order = np.lexsort((np.arange(len(row)), row))[:topk]
        if q_labels.ndim == 1:
            rel = db_labels[order] == q_labels[i]
        else:
            rel = ((db_labels[order] != 0) & (q_labels[i] != 0)).any(-1)
        hits = np.cumsum(rel)
        aps.append(float((hits / np.arange(1, len(order) + 1))[rel].sum() / hits[-1]) if hits[-1] else 0.0)
    return float(np.mean(aps))
