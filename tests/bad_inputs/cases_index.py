"""Bad and edge inputs for HammingIndex: construction, add, search, radius_search, save, load."""
from __future__ import annotations

import os

import numpy as np
import torch
from badinput import Case, int_arg_cases, np_pack, np_radius, np_topk, tensor_arg_cases

from hashkern import HammingIndex

RNG = np.random.default_rng(7)
BITS = RNG.random((11, 12)) < 0.5
Q_BITS = RNG.random((3, 12)) < 0.5


def _index(device="cpu") -> HammingIndex:
    index = HammingIndex(12, device=device)
    index.add(torch.from_numpy(np.where(BITS, 1.0, -1.0)))
    return index


def _method(name, **kwargs):
    def make():
        index = _index()
        return {"__fn__": getattr(index, name), **kwargs}
    return make


def _saved(tmp) -> str:
    path = os.path.join(tmp, "db.hidx")
    _index().save(path)
    return path


def _corrupt(tmp, how) -> str:
    path = _saved(tmp)
    data = bytearray(open(path, "rb").read())
    if how == "truncated":
        data = data[:-5]
    elif how == "flipped":
        data[40] ^= 0x04
    elif how == "appended":
        data += b"\0"
    elif how == "empty":
        data = bytearray()
    elif how == "foreign":
        data = bytearray(b"PK\x03\x04 not an index")
    with open(path, "wb") as f:
        f.write(data)
    return path


def _path_cases() -> list[Case]:
    out = []
    for what, path in (("empty", ""), ("None", None), ("int", 3), ("bytes", b"db.hidx"), ("nul", "a\0b")):
        out.append(Case(f"HammingIndex.save/path/{what}", lambda tmp, p=path: _index().save(p), names=("path",),
                        paths=True))
        out.append(Case(f"HammingIndex.load/path/{what}", lambda tmp, p=path: HammingIndex.load(p),
                        names=("path",), paths=True))
    out.append(Case("HammingIndex.save/path/missing-folder", lambda tmp: _index().save(
        os.path.join(tmp, "nope", "db.hidx")), names=("nope",), paths=True))
    out.append(Case("HammingIndex.save/path/a-folder", lambda tmp: _index().save(tmp), names=("is a directory",),
                    paths=True))
    out.append(Case("HammingIndex.load/path/missing", lambda tmp: HammingIndex.load(os.path.join(tmp, "none.hidx")),
                    names=("none.hidx",), paths=True))
    out.append(Case("HammingIndex.load/path/a-folder", lambda tmp: HammingIndex.load(tmp), names=("s a directory",),
                    paths=True))
    for how in ("truncated", "flipped", "appended", "empty", "foreign"):
        out.append(Case(f"HammingIndex.load/path/{how}-file", lambda tmp, h=how: HammingIndex.load(_corrupt(tmp, h)),
                        names=("db.hidx",), paths=True))
    out.append(Case("HammingIndex.load/device/bogus", lambda tmp: HammingIndex.load(_saved(tmp), device="bogus"),
                    names=("device",)))
    out.append(Case("HammingIndex.load/path/valid-round-trip", lambda tmp: HammingIndex.load(_saved(tmp)).codes,
                    reference=lambda tmp: np_pack(BITS)))
    out.append(Case("HammingIndex.save/path/valid-pathlike", lambda tmp: (_index().save(tmp / "p.hidx"),
                    HammingIndex.load(tmp / "p.hidx").codes)[1], reference=lambda tmp: np_pack(BITS)))
    return out


def cases() -> list[Case]:
    out = int_arg_cases("HammingIndex", lambda: {"__fn__": HammingIndex, "nbits": 8}, "nbits", low=1, high=2**31 - 1)
    for what, device in (("bogus", "bogus"), ("meta", "meta"), ("float", 1.5), ("None", None),
                         ("list", ["cpu"]), ("meta-device", torch.device("meta"))):
        out.append(Case(f"HammingIndex/device/{what}", lambda tmp, d=device: HammingIndex(8, device=d),
                        names=("device",)))
        out.append(Case(f"HammingIndex.to/device/{what}", lambda tmp, d=device: _index().to(d), names=("device",)))
    bad_codes = {"half": torch.full((2, 12), 0.5), "nan": torch.full((2, 12), float("nan")),
                 "wrong-K": torch.ones(2, 13), "1-d": torch.ones(12),
                 "complex": torch.ones(2, 12, dtype=torch.complex64),
                 "packed-too-wide": torch.zeros(2, 3, dtype=torch.uint8),
                 "packed-padding-bits": torch.full((2, 2), 0xFF, dtype=torch.uint8),
                 "meta": torch.ones(2, 12, device="meta")}
    out += tensor_arg_cases("HammingIndex.add", _method("add"), "codes", bad_codes)
    out += tensor_arg_cases("HammingIndex.search", _method("search", k=2), "queries", bad_codes)
    out += tensor_arg_cases("HammingIndex.radius_search", _method("radius_search", r=2), "queries", bad_codes)
    queries = lambda: torch.from_numpy(Q_BITS)  # noqa: E731  (bool codes)
    # No upper limit: k beyond ntotal pads as faiss does (valid cases below).
    out += int_arg_cases("HammingIndex.search", lambda: {**_method("search")(), "queries": queries()}, "k",
                         low=1)
    out += int_arg_cases("HammingIndex.radius_search", lambda: {**_method("radius_search")(), "queries": queries()},
                         "r", low=0, high=2**63 - 1)
    out.append(Case("HammingIndex.search/index/valid-empty", lambda tmp: HammingIndex(12).search(queries(), 2),
                    reference=lambda tmp: _padded(np.zeros((3, 0), np.int64), np.zeros((3, 0), np.int64), 2)))
    out.append(Case("HammingIndex.search/k/valid-above-ntotal", lambda tmp: _index().search(queries(), 13),
                    reference=lambda tmp: _padded(*np_topk(np_pack(Q_BITS), np_pack(BITS), 11), 13)))
    for k in (1, 5, 11):
        out.append(Case(f"HammingIndex.search/k/valid-{k}", lambda tmp, k=k: _index().search(queries(), k),
                        reference=lambda tmp, k=k: np_topk(np_pack(Q_BITS), np_pack(BITS), k)))
    for r in (0, 4, 12, 2**31, 2**32 + 1, 2**63 - 1):
        out.append(Case(f"HammingIndex.radius_search/r/valid-{r}",
                        lambda tmp, r=r: _index().radius_search(queries(), r),
                        reference=lambda tmp, r=r: np_radius(np_pack(Q_BITS), np_pack(BITS), r)))
    out.append(Case("HammingIndex.add/codes/valid-packed", lambda tmp: _add_packed(),
                    reference=lambda tmp: np_topk(np_pack(Q_BITS), np_pack(BITS), 3)))
    return out + _path_cases()


def _padded(dist, idx, k):
    """faiss's padding of a search for k > ntotal: id -1 at distance 2**31 - 1."""
    pad = k - dist.shape[1]
    return (np.pad(dist, ((0, 0), (0, pad)), constant_values=2**31 - 1),
            np.pad(idx, ((0, 0), (0, pad)), constant_values=-1))


def _add_packed():
    index = HammingIndex(12)
    index.add(torch.from_numpy(np_pack(BITS)))
    return index.search(torch.from_numpy(np_pack(Q_BITS)), 3)
