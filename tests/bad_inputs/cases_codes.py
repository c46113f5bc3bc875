"""Bad and edge inputs for the codes: sign_ste, pack_bits, unpack_bits, hamming_distance."""
from __future__ import annotations

import numpy as np
import torch
from badinput import Case, backend_cases, int_arg_cases, np_hamming, np_pack, tensor_arg_cases

import hashkern

RNG = np.random.default_rng(16)
BITS = RNG.random((6, 13)) < 0.5                     # [6, 13] bool, 13 bits: a partial last byte
BITS_B = RNG.random((5, 13)) < 0.5
PACKED, PACKED_B = np_pack(BITS), np_pack(BITS_B)   # uint8 [6, 2], [5, 2]

CODE_DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16,
               torch.uint32, torch.uint64, torch.float16, torch.bfloat16, torch.float32, torch.float64,
               torch.float8_e4m3fn, torch.float8_e5m2]


def _pm1(bits, dtype=torch.float32):
    return torch.from_numpy(np.where(bits, 1.0, -1.0)).to(dtype)


def _pack_kwargs():
    return {"__fn__": hashkern.pack_bits, "codes": _pm1(BITS)}


def _unpack_kwargs():
    return {"__fn__": hashkern.unpack_bits, "packed": torch.from_numpy(PACKED.copy()), "nbits": 13}


def _hamming_kwargs():
    return {"__fn__": hashkern.hamming_distance, "a_packed": torch.from_numpy(PACKED.copy()),
            "b_packed": torch.from_numpy(PACKED_B.copy())}


def _overlapping_out(kwargs, arg):
    """An int32 out of the right shape whose first bytes are the input ``arg``'s memory."""
    src = kwargs[arg]
    shape = (kwargs["a_packed"].shape[0], kwargs["b_packed"].shape[0])
    storage = torch.zeros(shape[0] * shape[1] * 4 + src.numel(), dtype=torch.uint8)
    storage[: src.numel()] = src.reshape(-1)
    kwargs[arg] = storage[: src.numel()].view(src.shape)
    return storage[: shape[0] * shape[1] * 4].view(torch.int32).view(shape)


def _valid_pack_cases() -> list[Case]:
    out = []
    want = lambda tmp, b=BITS: np_pack(b)  # noqa: E731
    for dtype in CODE_DTYPES:
        for form in ("pm1", "01"):
            if form == "pm1" and (not dtype.is_signed or dtype == torch.bool):
                continue
            codes = _pm1(BITS, dtype) if form == "pm1" else torch.from_numpy(BITS).to(dtype)
            out.append(Case(f"pack_bits/codes/valid-{form}-{str(dtype)[6:]}",
                            lambda tmp, c=codes: hashkern.pack_bits(c), reference=want))
    strided = _pm1(np.repeat(BITS, 2, axis=1))[:, ::2]  # non-contiguous view of the same codes
    out.append(Case("pack_bits/codes/valid-strided", lambda tmp: hashkern.pack_bits(strided), reference=want))
    out.append(Case("pack_bits/codes/valid-transposed",
                    lambda tmp: hashkern.pack_bits(_pm1(BITS.T.copy()).T), reference=want))
    out.append(Case("pack_bits/codes/valid-3d", lambda tmp: hashkern.pack_bits(_pm1(BITS).view(2, 3, 13)),
                    reference=lambda tmp: np_pack(BITS).reshape(2, 3, 2)))
    out.append(Case("pack_bits/out/valid", lambda tmp: hashkern.pack_bits(_pm1(BITS), out=torch.full(
        (6, 2), 0xA5, dtype=torch.uint8)), reference=want))
    for backend in ("auto", "torch", "cpu"):
        out.append(Case(f"pack_bits/backend/valid-{backend}",
                        lambda tmp, b=backend: hashkern.pack_bits(_pm1(BITS), backend=b), reference=want))
    return out


def _valid_unpack_cases() -> list[Case]:
    out = []
    for dtype in CODE_DTYPES:
        for signed in (True, False):
            if signed and not dtype.is_signed:
                continue
            want = np.where(BITS, 1, -1 if signed else 0)
            out.append(Case(f"unpack_bits/dtype/valid-{str(dtype)[6:]}-signed={signed}",
                            lambda tmp, d=dtype, s=signed: hashkern.unpack_bits(
                                torch.from_numpy(PACKED.copy()), 13, dtype=d, signed=s).to(torch.float64),
                            reference=lambda tmp, w=want: w.astype(np.float64)))
    out.append(Case("unpack_bits/packed/valid-strided", lambda tmp: hashkern.unpack_bits(
        torch.from_numpy(np.repeat(PACKED, 2, axis=1))[:, ::2], 13), reference=lambda tmp: np.where(BITS, 1., -1.)))
    return out


def _valid_hamming_cases() -> list[Case]:
    want = lambda tmp: np_hamming(PACKED, PACKED_B)  # noqa: E731
    a, b = torch.from_numpy(PACKED), torch.from_numpy(PACKED_B)
    out = [Case("hamming_distance/a_packed/valid-strided", lambda tmp: hashkern.hamming_distance(
        torch.from_numpy(np.repeat(PACKED, 2, axis=1))[:, ::2], b), reference=want),
        Case("hamming_distance/a_packed/valid-one-row", lambda tmp: hashkern.hamming_distance(a[:1], b),
             reference=lambda tmp: np_hamming(PACKED[:1], PACKED_B)),
        Case("hamming_distance/a_packed/valid-no-rows", lambda tmp: hashkern.hamming_distance(a[:0], b),
             reference=lambda tmp: np.zeros((0, 5), dtype=np.int64)),
        Case("hamming_distance/out/valid", lambda tmp: hashkern.hamming_distance(
            a, b, out=torch.full((6, 5), -1, dtype=torch.int32)), reference=want)]
    for backend in ("auto", "torch", "cpu"):
        out.append(Case(f"hamming_distance/backend/valid-{backend}",
                        lambda tmp, be=backend: hashkern.hamming_distance(a, b, backend=be), reference=want))
    return out


def _sign_cases() -> list[Case]:
    x = torch.tensor([[-2.0, -0.0, 0.0, 1e-45, 3e38, -3e38]])
    out = [Case("sign_ste/x/valid-float32", lambda tmp: hashkern.sign_ste(x),
                reference=lambda tmp: np.where(x.numpy() >= 0, 1.0, -1.0))]
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        out.append(Case(f"sign_ste/x/valid-{str(dtype)[6:]}", lambda tmp, d=dtype: hashkern.sign_ste(x[:, :4].to(d)),
                        reference=lambda tmp: np.where(x[:, :4].numpy() >= 0, 1.0, -1.0)))
    kwargs = lambda: {"__fn__": hashkern.sign_ste, "x": x.clone()}  # noqa: E731
    return out + tensor_arg_cases("sign_ste", kwargs, "x", {
        "int64": torch.ones(2, 3, dtype=torch.int64), "bool": torch.ones(2, 3, dtype=torch.bool),
        "complex": torch.ones(2, 3, dtype=torch.complex64)})


def cases() -> list[Case]:
    bad_codes = {
        "half": torch.full((2, 8), 0.5), "two": torch.full((2, 8), 2.0), "nan": torch.full((2, 8), float("nan")),
        "inf": torch.full((2, 8), float("inf")), "mixed-pm1-and-0": torch.tensor([[1.0, -1.0, 0.0]]),
        "int-3": torch.full((2, 8), 3), "uint64-huge": torch.full((2, 8), 2**63, dtype=torch.uint64),
        "uint16-two": torch.full((2, 8), 2, dtype=torch.uint16), "float8-half": torch.full((2, 8), 0.5).to(
            torch.float8_e4m3fn), "complex": torch.ones(2, 8, dtype=torch.complex64),
        "0-d": torch.tensor(1.0), "K=0": torch.ones(3, 0), "meta": torch.ones(2, 8, device="meta"),
    }
    bad_packed = {
        "float32": torch.zeros(6, 2), "int8": torch.zeros(6, 2, dtype=torch.int8), "bool": torch.zeros(
            6, 2, dtype=torch.bool), "int64": torch.zeros(6, 2, dtype=torch.int64), "0-d": torch.tensor(
            3, dtype=torch.uint8), "too-wide": torch.zeros(6, 3, dtype=torch.uint8), "too-narrow": torch.zeros(
            6, 1, dtype=torch.uint8), "meta": torch.zeros(6, 2, dtype=torch.uint8, device="meta")}
    bad_pair = {"float32": torch.zeros(6, 2), "int8": torch.zeros(6, 2, dtype=torch.int8), "1-d": torch.zeros(
        2, dtype=torch.uint8), "3-d": torch.zeros(1, 6, 2, dtype=torch.uint8), "other-width": torch.zeros(
        6, 3, dtype=torch.uint8), "zero-width": torch.zeros(6, 0, dtype=torch.uint8)}
    bad_out_pack = {"shape": torch.zeros(6, 3, dtype=torch.uint8), "dtype": torch.zeros(6, 2, dtype=torch.int8),
                    "strided": torch.zeros(6, 4, dtype=torch.uint8)[:, ::2], "list": [[0, 0]] * 6,
                    "meta": torch.zeros(6, 2, dtype=torch.uint8, device="meta")}
    bad_out_unpack = {"shape": torch.zeros(6, 12), "dtype": torch.zeros(6, 13, dtype=torch.float64),
                      "strided": torch.zeros(6, 26)[:, ::2], "list": [[0.0] * 13] * 6}
    bad_out_hamming = {"shape": torch.zeros(5, 6, dtype=torch.int32), "dtype": torch.zeros(6, 5, dtype=torch.int64),
                       "strided": torch.zeros(6, 10, dtype=torch.int32)[:, ::2], "list": [[0] * 5] * 6}
    out = []
    out += tensor_arg_cases("pack_bits", _pack_kwargs, "codes", bad_codes)
    out += tensor_arg_cases("pack_bits", _pack_kwargs, "out", {**bad_out_pack, "overlaps-codes": lambda kw: kw[
        "codes"].view(torch.uint8).reshape(-1)[:12].view(6, 2)}, optional=True)
    out += backend_cases("pack_bits", _pack_kwargs, invalid=("bogus", "CPU", None, 3, "triton"))
    out += tensor_arg_cases("unpack_bits", _unpack_kwargs, "packed", bad_packed)
    out += int_arg_cases("unpack_bits", _unpack_kwargs, "nbits", low=1)
    out += [Case(f"unpack_bits/nbits/mismatch-{n}", lambda tmp, n=n: hashkern.unpack_bits(
        torch.from_numpy(PACKED.copy()), n), names=("packed", "nbits")) for n in (8, 17, 2**40)]
    out += [Case(f"unpack_bits/signed/{v!r}", lambda tmp, v=v: hashkern.unpack_bits(
        torch.from_numpy(PACKED.copy()), 13, signed=v), names=("signed",)) for v in ("False", 0, None, 1.0)]
    out += [Case(f"unpack_bits/dtype/{d!r}", lambda tmp, d=d: hashkern.unpack_bits(
        torch.from_numpy(PACKED.copy()), 13, dtype=d, signed=False), names=("dtype",))
        for d in ("float32", None, np.float32, torch.complex64, torch.quint8, torch.uint1)]
    out += [Case(f"unpack_bits/signed/unsigned-{str(d)[6:]}", lambda tmp, d=d: hashkern.unpack_bits(
        torch.from_numpy(PACKED.copy()), 13, dtype=d), names=("signed",)) for d in (torch.uint8, torch.uint32)]
    out += tensor_arg_cases("unpack_bits", _unpack_kwargs, "out", {
        **bad_out_unpack, "overlaps-packed": lambda kw: _aliased_unpack_out(kw)}, optional=True)
    out += backend_cases("unpack_bits", _unpack_kwargs)
    for arg in ("a_packed", "b_packed"):
        out += tensor_arg_cases("hamming_distance", _hamming_kwargs, arg, bad_pair, names=(arg,))
        out.append(Case(f"hamming_distance/out/overlaps-{arg}", _overlap_call(arg), names=("out",)))
    out += tensor_arg_cases("hamming_distance", _hamming_kwargs, "out", bad_out_hamming, optional=True)
    out += backend_cases("hamming_distance", _hamming_kwargs, invalid=("bogus", None, "triton"))
    return out + _valid_pack_cases() + _valid_unpack_cases() + _valid_hamming_cases() + _sign_cases()


def _aliased_unpack_out(kwargs):
    """A float32 [6, 13] out whose first bytes are ``packed``'s memory (the kernel would read what it wrote)."""
    storage = torch.zeros(6 * 13, dtype=torch.float32)
    raw = storage.view(torch.uint8)
    raw[: kwargs["packed"].numel()] = kwargs["packed"].reshape(-1)
    kwargs["packed"] = raw[: kwargs["packed"].numel()].view(6, 2)
    return storage.view(6, 13)


def _overlap_call(arg):
    def call(tmp):
        kwargs = _hamming_kwargs()
        out = _overlapping_out(kwargs, arg)
        return kwargs.pop("__fn__")(**kwargs, out=out)
    return call
