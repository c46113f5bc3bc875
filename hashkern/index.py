"""HammingIndex: an exact, growable Hamming-distance index over packed binary codes.

Codes are stored packed (``ceil(nbits/8)`` bytes each) in one buffer that grows by doubling,
so ``add`` is amortised O(n) and ids never change: the i-th code ever added has id i.
``search`` and ``radius_search`` run the exact kernels of :mod:`hashkern.ops.search`.

File format (version 1), little-endian::

    magic b"HKINDEX\\0" | version u32 | nbits u32 | count u64 | payload bytes u64
    | payload: count x ceil(nbits/8) packed bytes | SHA-256 of everything before it (32 bytes)

The trailer is :func:`hashkern._io.sealed_write`'s, as for checkpoints. ``save`` writes a
temporary file beside the target and renames it over the target, so the target is either the old
file or the complete new one (a FIFO or device target is written in place: see
:mod:`hashkern._io`). ``load`` reads and checks the header first (magic, version, sizes against
the file's size), then streams the payload through the digest, so a foreign or endless file
(``/dev/zero``) is refused after reading a few bytes; it refuses a file whose size, header,
padding bits or checksum do not match, with an :class:`IndexFileError` naming the file.

Threads: ``add``, ``to`` and ``save`` hold the index's lock, so concurrent ``add`` calls each get
a distinct block of ids holding their own codes, and ``search`` / ``radius_search`` / ``save``
see a consistent snapshot (every code added before the call started). Searches run outside
the lock, concurrently.
"""
from __future__ import annotations

import hashlib
import os
import stat
import struct
import threading

import torch

from hashkern._io import SEAL_SIZE, check_path, read_through, sealed_write
from hashkern._validation import check_int, check_tensor
from hashkern.codes import as_packed
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
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # a lock is not picklable / deep-copyable
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def codes(self) -> torch.Tensor:
        """The stored packed codes, uint8 ``[len(self), ceil(nbits/8)]`` (a view: do not modify)."""
        with self._lock:
            return self._buffer[: self._count]

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"HammingIndex(nbits={self.nbits}, size={self._count}, device={self._device})"

    def _pack(self, name: str, codes) -> torch.Tensor:
        """±1 / {0,1} (not uint8) / bool ``[n, nbits]``, or packed uint8 ``[n, ceil(nbits/8)]`` -> packed
        (:func:`hashkern.codes.as_packed`, the metrics' rule too), on our device."""
        check_tensor(name, codes, ndim=2)
        if codes.device != self._device:
            raise ValueError(f"{name} must be on the index's device {self._device}, got {codes.device}")
        return as_packed(name, codes, self.nbits)[0]

    def add(self, codes) -> torch.Tensor:
        """Append codes; returns their ids, int64 ``[n]`` (``len(self)`` before the call onwards)."""
        packed = self._pack("codes", codes)
        n = packed.shape[0]
        with self._lock:  # reserve ids, grow and copy as one step (see the module's note on threads)
            start = self._count
            if start + n > self._buffer.shape[0]:
                capacity = max(start + n, 2 * self._buffer.shape[0], 1024)
                grown = torch.empty(capacity, self.width, dtype=torch.uint8, device=self._device)
                grown[:start] = self._buffer[:start]
                self._buffer = grown
            self._buffer[start:start + n] = packed
            self._count = start + n
            device = self._device
        return torch.arange(start, start + n, device=device)

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
        codes = self.codes
        self._check_nonempty()
        return hamming_topk(self._pack("queries", queries), codes, k, backend=backend)

    def radius_search(self, queries, r: int, *, backend: str = "auto"):
        """Every stored code within distance r: ``(offsets [nq+1], idx [nnz], dist [nnz])``, CSR style."""
        codes = self.codes
        self._check_nonempty()
        return hamming_radius(self._pack("queries", queries), codes, r, backend=backend)

    def to(self, device: torch.device | str) -> "HammingIndex":
        """Move the codes to ``device`` (in place, like ``nn.Module.to``); returns self."""
        device = _check_device(device)
        with self._lock:
            moved = self._buffer[: self._count].to(device)
            if moved.device != self._device:
                self._buffer, self._device = moved.clone(), moved.device
        return self

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to ``path`` atomically (a temporary file, then a rename).

        An existing file keeps its permissions and a symlink is written through; the folder
        must exist (see :mod:`hashkern._io`).
        """
        codes = self.codes  # a consistent snapshot: adds after this line are not saved
        payload = codes.cpu().contiguous().numpy().tobytes()
        with sealed_write(path, _HEADER.pack(_MAGIC, _VERSION, self.nbits, codes.shape[0], len(payload))) as f:
            f.write(payload)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> "HammingIndex":
        """Read an index written by :meth:`save`; refuses truncated, corrupted or foreign files.

        The header is read and checked before the payload, which is streamed through the
        checksum into the index's buffer (memory: the codes, once).
        """
        path = check_path(path)
        _check_device(device)
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            head = f.read(_HEADER.size)
            nbits, count, payload_len = _check_header(path, head, info.st_size if stat.S_ISREG(info.st_mode) else None)
            digest = hashlib.sha256(head)
            payload = bytearray(payload_len)
            got = read_through(f, digest, payload_len, memoryview(payload))
            seal = f.read(SEAL_SIZE)
            if got < payload_len or len(seal) < SEAL_SIZE:
                announced = _HEADER.size + payload_len + SEAL_SIZE
                raise IndexFileError(f"{path} is truncated: it ends before the {announced} bytes its header announces")
            if f.read(1):
                raise IndexFileError(f"{path} is corrupted: unexpected bytes after the checksum")
        if digest.digest() != seal:
            raise IndexFileError(f"{path} is corrupted: its SHA-256 checksum does not match its contents")
        width = (nbits + 7) // 8
        codes = torch.frombuffer(payload, dtype=torch.uint8) if payload else torch.empty(0, dtype=torch.uint8)
        codes = codes.view(count, width)
        if nbits % 8 and count and bool((codes[:, -1] >> (nbits % 8)).any()):
            raise IndexFileError(f"{path} is corrupted: codes have bits set beyond nbits={nbits} (padding must be 0)")
        index = cls(nbits, device=device)
        index.add(codes.to(index.device))
        return index


def _check_header(path: str, head: bytes, size: int | None) -> tuple[int, int, int]:
    """(nbits, count, payload bytes) of a header that is consistent, and with the file's ``size`` when known."""
    if len(head) < _HEADER.size:
        if not head or not head.startswith(_MAGIC[: len(head)]):
            raise IndexFileError(f"{path} is not a HammingIndex file (no hashkern index header)")
        raise IndexFileError(f"{path} is truncated: {len(head)} bytes, shorter than the header")
    magic, version, nbits, count, payload_len = _HEADER.unpack(head)
    if magic != _MAGIC:
        raise IndexFileError(f"{path} is not a HammingIndex file (bad magic {magic!r})")
    if version != _VERSION:
        raise IndexFileError(f"{path} has index format version {version}; this hashkern reads version {_VERSION}")
    if not 1 <= nbits <= 2**31 - 1 or payload_len != count * ((nbits + 7) // 8):
        raise IndexFileError(f"{path} is corrupted: header says {count} codes of {nbits} bits in "
                             f"{payload_len} bytes")
    expected = _HEADER.size + payload_len + SEAL_SIZE
    if size is not None and size < expected:
        raise IndexFileError(f"{path} is truncated: {size} bytes, the header announces {expected}")
    if size is not None and size > expected:
        raise IndexFileError(f"{path} is corrupted: {size - expected} unexpected bytes after the checksum")
    return nbits, count, payload_len
