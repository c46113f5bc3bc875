"""HammingIndex: an exact, growable Hamming-distance index over packed binary codes.

Codes are stored packed (``ceil(nbits/8)`` bytes each) in one buffer that grows by doubling,
so ``add`` is amortised O(n) and ids never change: the i-th code ever added has id i.
``search`` and ``radius_search`` run the exact kernels of :mod:`hashkern.ops.search`.

File format (version 1), little-endian::

    magic b"HKINDEX\\0" | version u32 | nbits u32 | count u64 | payload bytes u64
    | payload: count x ceil(nbits/8) packed bytes | SHA-256 of everything before it (32 bytes)

The trailer is :func:`hashkern._io.sealed_write`'s, as for checkpoints. ``save`` writes a
temporary file beside the target and renames it over the target, so the target is either the old
file or the complete new one. ``load`` refuses a file whose size,
header or checksum do not match, with an :class:`IndexFileError` that says which.
"""
from __future__ import annotations

import os
import struct

import torch

from hashkern._io import SEAL_SIZE, check_path, seal_matches, sealed_write
from hashkern._validation import check_int, check_tensor
from hashkern.ops.packbits import pack_codes
from hashkern.ops.search import hamming_radius, hamming_topk

__all__ = ["HammingIndex", "IndexFileError"]

_MAGIC = b"HKINDEX\0"
_VERSION = 1
_HEADER = struct.Struct("<8sIIQQ")


class IndexFileError(ValueError):
    """A HammingIndex file that is truncated, corrupted, of another format or of a newer version."""


def _check_device(device) -> torch.device:
    """A real device this process can allocate on (not ``meta``), as a ``torch.device``."""
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise TypeError(f"device must be a torch.device, a str such as 'cpu' or 'cuda:0', or a CUDA ordinal, got "
                        f"{type(device).__name__}")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must name a torch device such as 'cpu' or 'cuda:0', got {device!r}") from None
    if device.type == "meta":
        raise ValueError("device='meta' holds no data: a HammingIndex needs a device such as 'cpu' or 'cuda'")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as exc:
        raise ValueError(f"device {str(device)!r} is not available here: {exc}") from None
    return device


class HammingIndex:
    """Exact Hamming search over binary codes of ``nbits`` bits.

    Args:
        nbits: bits per code (K >= 1).
        device: where the codes live and searches run.

    Example::

        index = HammingIndex(64)
        index.add(db_codes)                  # ±1 [N, 64] or packed uint8 [N, 8]
        dist, idx = index.search(q_codes, k=100)
    """

    def __init__(self, nbits: int, device: torch.device | str = "cpu"):
        self.nbits = check_int("nbits", nbits, low=1, high=2**31 - 1)
        self.width = (self.nbits + 7) // 8
        self._buffer = torch.empty(0, self.width, dtype=torch.uint8, device=_check_device(device))
        self._device = self._buffer.device  # "cuda" resolved to "cuda:<current>"
        self._count = 0

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def codes(self) -> torch.Tensor:
        """The stored packed codes, uint8 ``[len(self), ceil(nbits/8)]`` (a view: do not modify)."""
        return self._buffer[: self._count]

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"HammingIndex(nbits={self.nbits}, size={self._count}, device={self._device})"

    def _pack(self, name: str, codes) -> torch.Tensor:
        """±1 / {0,1} / bool ``[n, nbits]``, or packed uint8 ``[n, ceil(nbits/8)]`` -> packed, on our device."""
        check_tensor(name, codes, ndim=2)
        if codes.device != self._device:
            raise ValueError(f"{name} must be on the index's device {self._device}, got {codes.device}")
        if codes.dtype == torch.uint8:  # uint8 is always taken as packed bytes
            if codes.shape[1] != self.width:
                raise ValueError(
                    f"{name} is uint8, so it is taken as packed codes, which need {self.width} bytes per row "
                    f"for nbits={self.nbits}; got {codes.shape[1]}"
                )
            packed = codes
            if self.nbits % 8 and bool((packed[:, -1] >> (self.nbits % 8)).any()):
                raise ValueError(f"{name} has bits set beyond nbits={self.nbits} in its last byte (padding must be 0)")
        else:
            if codes.shape[1] != self.nbits:
                raise ValueError(f"{name} must have nbits={self.nbits} bits per code, got shape {tuple(codes.shape)}")
            packed = pack_codes(name, codes)
        return packed.contiguous()

    def add(self, codes) -> torch.Tensor:
        """Append codes; returns their ids, int64 ``[n]`` (``len(self)`` before the call onwards)."""
        packed = self._pack("codes", codes)
        n = packed.shape[0]
        start = self._count
        if start + n > self._buffer.shape[0]:
            capacity = max(start + n, 2 * self._buffer.shape[0], 1024)
            grown = torch.empty(capacity, self.width, dtype=torch.uint8, device=self._device)
            grown[:start] = self._buffer[:start]
            self._buffer = grown
        self._buffer[start:start + n] = packed
        self._count = start + n
        return torch.arange(start, start + n, device=self._device)

    def _check_nonempty(self) -> None:
        if self._count == 0:
            raise ValueError("the index is empty: add codes before searching")

    def search(self, queries, k: int, *, backend: str = "auto"):
        """The k nearest stored codes of each query.

        Args:
            queries: ``[nq, nbits]`` ±1 / {0,1} / bool, or packed uint8 ``[nq, ceil(nbits/8)]``.
            k: ``1 <= k <= len(self)``.
        Returns:
            ``(dist int32 [nq, k], idx int64 [nq, k])`` ordered by (distance, id).
        """
        self._check_nonempty()
        return hamming_topk(self._pack("queries", queries), self.codes, k, backend=backend)

    def radius_search(self, queries, r: int, *, backend: str = "auto"):
        """Every stored code within distance r: ``(offsets [nq+1], idx [nnz], dist [nnz])``, CSR style."""
        self._check_nonempty()
        return hamming_radius(self._pack("queries", queries), self.codes, r, backend=backend)

    def to(self, device: torch.device | str) -> "HammingIndex":
        """Move the codes to ``device`` (in place, like ``nn.Module.to``); returns self."""
        moved = self.codes.to(_check_device(device))
        if moved.device != self._device:
            self._buffer, self._device = moved.clone(), moved.device
        return self

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to ``path`` atomically (a temporary file, then a rename).

        An existing file keeps its permissions and a symlink is written through; the folder
        must exist (see :mod:`hashkern._io`).
        """
        payload = self.codes.cpu().contiguous().numpy().tobytes()
        with sealed_write(path, _HEADER.pack(_MAGIC, _VERSION, self.nbits, self._count, len(payload))) as f:
            f.write(payload)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> "HammingIndex":
        """Read an index written by :meth:`save`; refuses truncated, corrupted or foreign files."""
        path = check_path(path)
        _check_device(device)
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < _HEADER.size + SEAL_SIZE:
            if not data.startswith(_MAGIC[: len(data)]) or not data:
                raise IndexFileError(f"{path} is not a HammingIndex file (no hashkern index header)")
            raise IndexFileError(f"{path} is truncated: {len(data)} bytes, shorter than the header")
        magic, version, nbits, count, payload_len = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise IndexFileError(f"{path} is not a HammingIndex file (bad magic {magic!r})")
        if version != _VERSION:
            raise IndexFileError(
                f"{path} has index format version {version}; this hashkern reads version {_VERSION}"
            )
        width = (nbits + 7) // 8
        expected = _HEADER.size + payload_len + SEAL_SIZE
        if nbits < 1 or payload_len != count * width:
            raise IndexFileError(f"{path} is corrupted: header says {count} codes of {nbits} bits in "
                                 f"{payload_len} bytes")
        if len(data) < expected:
            raise IndexFileError(f"{path} is truncated: {len(data)} bytes, the header announces {expected}")
        if len(data) > expected:
            raise IndexFileError(f"{path} is corrupted: {len(data) - expected} unexpected bytes after the checksum")
        if not seal_matches(data):
            raise IndexFileError(f"{path} is corrupted: its SHA-256 checksum does not match its contents")
        index = cls(nbits, device=device)
        payload = bytearray(data[_HEADER.size:expected - SEAL_SIZE])
        codes = torch.frombuffer(payload, dtype=torch.uint8) if payload else torch.empty(0, dtype=torch.uint8)
        index.add(codes.view(count, width).to(index.device))
        return index
