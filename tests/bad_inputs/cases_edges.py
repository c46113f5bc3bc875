"""Input classes the one-argument-at-a-time cases did not reach (issue 25): special file targets,
numpy scalars, integer label columns, NaN / non-binary multi-hot labels, 0-query metrics,
unpacked uint8 codes, extreme feature scales."""
from __future__ import annotations

import os
import stat
import threading

import numpy as np
import torch
from badinput import Case, np_map, np_pack, np_topk

import hashkern
from hashkern.losses import NTXentLoss
from hashkern.models.shallow import ITQ
from hashkern.ops.search import hamming_radius, hamming_topk
from hashkern.training.checkpoint import load_checkpoint, save_checkpoint
from hashkern.training.evaluate import write_json

RNG = np.random.default_rng(25)
Q_BITS, DB_BITS = RNG.random((6, 12)) < 0.5, RNG.random((20, 12)) < 0.5
Q_LAB, DB_LAB = RNG.integers(0, 4, 6), RNG.integers(0, 4, 20)
FEATURES = RNG.standard_normal((64, 16))


def _pm1(bits):
    return torch.from_numpy(np.where(bits, 1.0, -1.0))


def _metric_args(**override):
    args = dict(q_codes=_pm1(Q_BITS), db_codes=_pm1(DB_BITS), q_labels=torch.from_numpy(Q_LAB),
                db_labels=torch.from_numpy(DB_LAB))
    args.update(override)
    return args


def _index():
    index = hashkern.HammingIndex(12)
    index.add(_pm1(DB_BITS))
    return index


SAVERS = {"index": lambda p: _index().save(p), "checkpoint": lambda p: save_checkpoint(p, {"w": torch.ones(3)}),
          "json": lambda p: write_json(str(p), {"a": 1})}


def _save_into_special(kind: str, saver):
    """Save into a FIFO (or a device node when root) made in ``tmp``: (still that kind, bytes seen)."""
    def call(tmp):
        path = tmp / "special"
        got = []
        if kind == "fifo":
            os.mkfifo(path)
            reader = threading.Thread(target=lambda: got.append(len(open(path, "rb").read())), daemon=True)
            reader.start()
            saver(path)
            reader.join(30)
            return stat.S_ISFIFO(os.lstat(path).st_mode), bool(got and got[0] > 0)
        if os.geteuid() == 0:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        else:  # no device node without root: a FIFO stands in
            return _save_into_special("fifo", saver)(tmp)
        saver(path)
        return stat.S_ISCHR(os.lstat(path).st_mode), True
    return call


def _special_paths() -> list[Case]:
    out = []
    for name, saver in SAVERS.items():
        for kind in ("fifo", "device"):
            out.append(Case(f"special-paths/{name}/{kind}", _save_into_special(kind, saver),
                            reference=lambda tmp: (True, True)))
        out.append(Case(f"special-paths/{name}/trailing-slash", lambda tmp, s=saver: s(str(tmp / "f") + "/"),
                        names=("names a folder",), paths=True))
    for name, load in (("index", hashkern.HammingIndex.load), ("checkpoint", load_checkpoint)):
        def endless(tmp, load=load):
            path = tmp / "zero"
            if os.geteuid() == 0:
                os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 5))  # a /dev/zero of our own
            else:
                path.write_bytes(bytes(1 << 20))
            return load(path)
        out.append(Case(f"special-paths/{name}/load-endless-zeros", endless, names=("not a",)))
        out.append(Case(f"special-paths/{name}/load-trailing-slash", lambda tmp, load=load: load(str(tmp) + "/"),
                        names=("names a folder",), paths=True))
    return out


def _numpy_scalars() -> list[Case]:
    qp, dbp = np_pack(Q_BITS), np_pack(DB_BITS)
    tq, tdb = torch.from_numpy(qp), torch.from_numpy(dbp)
    out = []
    for t in (np.int64, np.int32, np.uint16):
        out.append(Case(f"numpy-scalars/hamming_topk/k-{t.__name__}", lambda tmp, t=t: hamming_topk(tq, tdb, t(5)),
                        reference=lambda tmp: np_topk(qp, dbp, 5)))
        out.append(Case(f"numpy-scalars/HammingIndex/nbits-and-k-{t.__name__}",
                        lambda tmp, t=t: _index_of(t(12)).search(_pm1(Q_BITS), t(4)),
                        reference=lambda tmp: np_topk(qp, dbp, 4)))
        out.append(Case(f"numpy-scalars/mean_average_precision/topk-{t.__name__}",
                        lambda tmp, t=t: hashkern.mean_average_precision(**_metric_args(), topk=t(7),
                                                                         batch_size=t(2)),
                        reference=lambda tmp: np_map(Q_BITS, DB_BITS, Q_LAB, DB_LAB, 7), atol=1e-12))
    out.append(Case("numpy-scalars/hamming_radius/r-int64", lambda tmp: hamming_radius(tq, tdb, np.int64(3))[0],
                    reference=lambda tmp: hamming_radius(tq, tdb, 3)[0]))
    for t in (np.float32, np.float64):
        out.append(Case(f"numpy-scalars/NTXentLoss/temperature-{t.__name__}",
                        lambda tmp, t=t: NTXentLoss(t(0.5))(_pm1(Q_BITS).float(), _pm1(Q_BITS[::-1].copy()).float()),
                        reference=lambda tmp, t=t: NTXentLoss(float(t(0.5)))(_pm1(Q_BITS).float(),
                                                                             _pm1(Q_BITS[::-1].copy()).float()),
                        atol=1e-6))
    for what, value in (("float64", np.float64(3.0)), ("bool", np.bool_(True)), ("complex", np.complex64(3))):
        out.append(Case(f"numpy-scalars/hamming_topk/k-{what}", lambda tmp, v=value: hamming_topk(tq, tdb, v),
                        names=("k",)))
        out.append(Case(f"numpy-scalars/NTXentLoss/temperature-{what}", lambda tmp, v=value: NTXentLoss(v),
                        names=("temperature",)) if what != "float64" else
                   Case(f"numpy-scalars/NTXentLoss/temperature-nan-{what}", lambda tmp: NTXentLoss(np.float64("nan")),
                        names=("temperature",)))
    return out


def _index_of(nbits):
    index = hashkern.HammingIndex(nbits)
    index.add(_pm1(DB_BITS))
    return index


def _labels() -> list[Case]:
    out = []
    metrics = (("mean_average_precision", lambda **a: hashkern.mean_average_precision(**a, topk=8)),
               ("precision_at_radius", hashkern.precision_at_radius),
               ("precision_recall_curve", hashkern.precision_recall_curve),
               ("precision_recall_at_ranks", hashkern.precision_recall_at_ranks))
    for name, fn in metrics:
        out.append(Case(f"column-labels/{name}/int-column-is-class-ids",
                        lambda tmp, fn=fn: fn(**_metric_args(q_labels=torch.from_numpy(Q_LAB)[:, None],
                                                             db_labels=torch.from_numpy(DB_LAB)[:, None])),
                        reference=lambda tmp, fn=fn: fn(**_metric_args()), atol=0.0))
        hot = torch.from_numpy((DB_LAB[:, None] == np.arange(4)).astype(np.float64))
        q_hot = torch.from_numpy((Q_LAB[:, None] == np.arange(4)).astype(np.float64))
        for what, value in (("nan", float("nan")), ("two", 2.0), ("minus-one", -1.0), ("half", 0.5)):
            bad = hot.clone()
            bad[3, 1] = value
            out.append(Case(f"nan-labels/{name}/multi-hot-{what}",
                            lambda tmp, fn=fn, b=bad: fn(**_metric_args(q_labels=q_hot, db_labels=b)),
                            names=("db_labels",)))
            out.append(Case(f"nan-labels/{name}/query-multi-hot-{what}",
                            lambda tmp, fn=fn, b=bad: fn(**_metric_args(q_labels=b[:6], db_labels=hot)),
                            names=("q_labels",)))
        out.append(Case(f"0-query-metrics/{name}/no-queries",
                        lambda tmp, fn=fn: fn(**_metric_args(q_codes=torch.ones(0, 12),
                                                             q_labels=torch.zeros(0, dtype=torch.long))),
                        names=("q_codes",)))
        out.append(Case(f"unpacked-uint8/{name}/without-nbits",
                        lambda tmp, fn=fn: fn(**_metric_args(q_codes=torch.from_numpy(Q_BITS.astype(np.uint8)),
                                                             db_codes=torch.from_numpy(DB_BITS.astype(np.uint8)))),
                        names=("q_codes",)))
    return out


def _feature_scales() -> list[Case]:
    x = torch.from_numpy(FEATURES)
    want = lambda tmp: ITQ(8).fit(x).encode(x)  # noqa: E731 - sign codes do not depend on the scale
    return [Case(f"feature-scales/ITQ/x{scale:g}", lambda tmp, s=scale: ITQ(8).fit(x * s).encode(x * s), reference=want)
            for scale in (1e160, 1e300, 1e-150, 1e-300)]


def cases() -> list[Case]:
    return _special_paths() + _numpy_scalars() + _labels() + _feature_scales()
