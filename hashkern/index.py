"""HammingIndex: an exact, growable Hamming-distance index over packed binary codes.

Codes are stored packed (``ceil(nbits/8)`` bytes each) in one buffer that grows by doubling,
so ``add`` is amortised O(n) and ids never change: the i-th code ever added has id i, unless
``add_with_ids`` gives its own. ``search`` and ``radius_search`` run the exact kernels of
:mod:`hashkern.ops.search`.

For faiss users: the packed layout is faiss's (least significant bit first), and the index
speaks ``IndexBinaryFlat`` / ``IndexBinaryIDMap``'s language: ``ntotal``, ``d``, ``code_size``,
``reset()``, ``add_with_ids``, ``remove_ids``, ``search`` padding with id -1 and distance
2**31 - 1 when k exceeds ``ntotal``, and ``to_faiss()`` / ``from_faiss()``. Codes, ids and
queries may be NumPy arrays (results are tensors). Radius semantics differ::

    hashkern  index.radius_search(q, r)    every code with distance <= r
    faiss     index.range_search(q, r + 1) every code with distance <  r + 1  (the same set)

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

Threads: ``add``, ``add_with_ids``, ``remove_ids``, ``reset``, ``to`` and ``save`` hold the index's
lock, so concurrent ``add`` calls each get a distinct block of ids holding their own codes, and
``search`` / ``radius_search`` / ``save``
see a consistent snapshot (every code added before the call started). Searches run outside
the lock, concurrently.
"""
from __future__ import annotations

import hashlib
import os
import stat
import struct
import threading

import numpy as np
import torch

from hashkern._io import SEAL_SIZE, check_path, read_through, sealed_write
from hashkern._validation import as_tensor, check_int, check_tensor
from hashkern.codes import as_packed
from hashkern.ops.search import hamming_radius, hamming_topk

__all__ = ["HammingIndex", "IndexFileError"]

_MAGIC = b"HKINDEX\0"
_VERSION = 1
_HEADER = struct.Struct("<8sIIQQ")
_PAD_DISTANCE = 2**31 - 1  # faiss's distance for the slots beyond ntotal (with id -1)


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
        self._id_buffer: torch.Tensor | None = None  # None: each code's id is its position
        self._next_id = 0  # one past the largest id given so far: add() continues from here
        self._lock = threading.Lock()  # not re-entrant: taken once, by the public methods

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

    @property
    def ids(self) -> torch.Tensor:
        """The id of each stored code, int64 ``[len(self)]``, in storage order."""
        with self._lock:
            return self._stored_ids()

    def _stored_ids(self) -> torch.Tensor:
        """``ids`` for a caller that holds the lock."""
        if self._id_buffer is None:
            return torch.arange(self._count, device=self._device)
        return self._id_buffer[: self._count]

    def _snapshot(self):
        """(codes ``[n, width]``, positions -> ids) as of now, for work done outside the lock.

        Appends write past ``n`` and removals replace the buffers, so the views stay valid."""
        with self._lock:
            codes, id_buffer = self._buffer[: self._count], self._id_buffer
        if id_buffer is None:
            return codes, lambda positions: positions
        return codes, lambda positions: id_buffer[positions]

    @property
    def ntotal(self) -> int:
        """faiss's name for ``len(self)``."""
        return self._count

    @property
    def d(self) -> int:
        """Bits per code (faiss's ``IndexBinary.d``): ``nbits``."""
        return self.nbits

    @property
    def code_size(self) -> int:
        """Bytes per packed code (faiss's ``code_size``): ``ceil(nbits / 8)``."""
        return self.width

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"HammingIndex(nbits={self.nbits}, size={self._count}, device={self._device})"

    def _pack(self, name: str, codes) -> torch.Tensor:
        """±1 / {0,1} (not uint8) / bool ``[n, nbits]``, or packed uint8 ``[n, ceil(nbits/8)]`` -> packed
        (:func:`hashkern.codes.as_packed`, the metrics' rule too), on our device.

        A NumPy array is host memory by nature: it is taken to the index's device."""
        if isinstance(codes, np.ndarray):
            codes = as_tensor(codes).to(self._device)
        check_tensor(name, codes, ndim=2)
        if codes.device != self._device:
            raise ValueError(f"{name} must be on the index's device {self._device}, got {codes.device}")
        return as_packed(name, codes, self.nbits)[0]

    def _append(self, packed: torch.Tensor, ids: torch.Tensor | None) -> None:
        """Stores packed codes with their ids (None: ids equal to their positions)."""
        n = packed.shape[0]
        start = self._count  # the caller holds self._lock (see the module's note on threads)
        if ids is not None and self._id_buffer is None and torch.equal(ids.cpu(), torch.arange(start, start + n)):
            ids = None  # still positional
        if ids is not None and self._id_buffer is None:
            self._id_buffer = torch.arange(self._buffer.shape[0], device=self._device)
        if start + n > self._buffer.shape[0]:
            capacity = max(start + n, 2 * self._buffer.shape[0], 1024)
            grown = torch.empty(capacity, self.width, dtype=torch.uint8, device=self._device)
            grown[:start] = self._buffer[:start]
            self._buffer = grown
            if self._id_buffer is not None:
                grown_ids = torch.empty(capacity, dtype=torch.int64, device=self._device)
                grown_ids[:start] = self._id_buffer[:start]
                self._id_buffer = grown_ids
        self._buffer[start:start + n] = packed
        if self._id_buffer is not None:
            positions = torch.arange(start, start + n, device=self._device)
            self._id_buffer[start:start + n] = positions if ids is None else ids
        self._count = start + n

    def add(self, codes) -> torch.Tensor:
        """Append codes; returns their ids, int64 ``[n]``: one past the largest id given so far
        onwards (``len(self)`` before the call, unless ``add_with_ids`` gave larger ones)."""
        packed = self._pack("codes", codes)
        with self._lock:  # reserve ids, grow and copy as one step (see the module's note on threads)
            ids = torch.arange(self._next_id, self._next_id + packed.shape[0], device=self._device)
            self._append(packed, None if self._next_id == self._count else ids)
            self._next_id += packed.shape[0]
        return ids

    def _id_tensor(self, name: str, ids) -> torch.Tensor:
        """ids as int64 ``[n]`` on our device: a 1-D integer tensor or array, a sequence or one int."""
        if isinstance(ids, (list, tuple)) or not hasattr(ids, "__len__"):
            ids = torch.tensor([check_int(name, i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])],
                               dtype=torch.int64)
        ids = as_tensor(ids)
        check_tensor(name, ids, ndim=1)
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"{name} must hold integers, got dtype {str(ids.dtype).replace('torch.', '')}")
        return ids.to(device=self._device, dtype=torch.int64)

    def add_with_ids(self, codes, ids) -> None:
        """Append codes with the caller's ids (int64 ``[n]``, each >= 0: -1 marks padding in ``search``).

        Ids need not be unique or ordered; ``search`` reports them in place of positions, and
        ties are still broken by storage order."""
        packed = self._pack("codes", codes)
        ids = self._id_tensor("ids", ids)
        if ids.shape[0] != packed.shape[0]:
            raise ValueError(f"ids must have one entry per code ({packed.shape[0]}), got {ids.shape[0]}")
        if ids.numel() and int(ids.min()) < 0:
            raise ValueError(f"ids must be >= 0 (-1 marks the padding of search), got {int(ids.min())}")
        largest = int(ids.max()) if ids.numel() else -1
        with self._lock:
            self._append(packed, ids)
            self._next_id = max(self._next_id, largest + 1)

    def remove_ids(self, ids) -> int:
        """Removes every stored code whose id is in ``ids``; returns how many were removed.

        The other codes keep their ids and their order."""
        ids = self._id_tensor("ids", ids)
        with self._lock:
            current = self._stored_ids()
            keep = ~torch.isin(current, ids)
            kept = int(keep.sum())
            removed = self._count - kept
            if removed:  # new buffers: searches running on a snapshot keep the old ones
                codes, kept_ids = self._buffer[: self._count][keep].clone(), current[keep].clone()
                self._buffer, self._count = codes, kept
                self._id_buffer = None if torch.equal(kept_ids.cpu(), torch.arange(kept)) else kept_ids
        return removed

    def reset(self) -> None:
        """Removes every code; ids start from 0 again."""
        with self._lock:
            self._buffer = torch.empty(0, self.width, dtype=torch.uint8, device=self._device)
            self._count, self._id_buffer, self._next_id = 0, None, 0

    def search(self, queries, k: int, *, backend: str = "auto"):
        """The k nearest stored codes of each query.

        Args:
            queries: ``[nq, nbits]`` ±1 / {0,1} / bool, or packed uint8 ``[nq, ceil(nbits/8)]``
                (tensor or NumPy array).
            k: ``k >= 1``; beyond ``len(self)`` the slots are padded as faiss does: id -1,
                distance ``2**31 - 1``.
        Returns:
            ``(dist int32 [nq, k], idx int64 [nq, k])`` ordered by (distance, storage order);
            ``idx`` holds ids (positions unless ``add_with_ids`` / ``remove_ids`` changed them).
        """
        k = check_int("k", k, low=1)
        packed = self._pack("queries", queries)
        codes, id_of = self._snapshot()
        found = min(k, codes.shape[0])
        if found == k:
            dist, idx = hamming_topk(packed, codes, k, backend=backend)
            return dist, id_of(idx)
        dist = torch.full((packed.shape[0], k), _PAD_DISTANCE, dtype=torch.int32, device=packed.device)
        idx = torch.full((packed.shape[0], k), -1, dtype=torch.int64, device=packed.device)
        if found:
            dist[:, :found], positions = hamming_topk(packed, codes, found, backend=backend)
            idx[:, :found] = id_of(positions)
        return dist, idx

    def radius_search(self, queries, r: int, *, backend: str = "auto"):
        """Every stored code within distance ``r`` inclusive (faiss's ``range_search`` excludes
        ``r``: its radius ``r + 1`` gives the same set): ``(offsets [nq+1], idx [nnz], dist [nnz])``,
        CSR style, ``idx`` holding ids."""
        packed = self._pack("queries", queries)
        codes, id_of = self._snapshot()
        if codes.shape[0] == 0:
            check_int("r", r, low=0)
            return (torch.zeros(packed.shape[0] + 1, dtype=torch.int64, device=packed.device),
                    torch.empty(0, dtype=torch.int64, device=packed.device),
                    torch.empty(0, dtype=torch.int32, device=packed.device))
        offsets, idx, dist = hamming_radius(packed, codes, r, backend=backend)
        return offsets, id_of(idx), dist

    def to(self, device: torch.device | str) -> "HammingIndex":
        """Move the codes to ``device`` (in place, like ``nn.Module.to``); returns self."""
        device = _check_device(device)
        with self._lock:
            moved = self._buffer[: self._count].to(device)
            if moved.device != self._device:
                self._buffer, self._device = moved.clone(), moved.device
                if self._id_buffer is not None:
                    self._id_buffer = self._id_buffer[: self._count].to(moved.device)
        return self

    def to_faiss(self):
        """This index as a faiss ``IndexBinaryFlat`` (an ``IndexBinaryIDMap`` over one when ids are
        not positions), with a copy of the codes on the CPU. Needs ``faiss`` and nbits % 8 == 0."""
        faiss = _import_faiss()
        if self.nbits % 8:
            raise ValueError(f"faiss binary indexes take whole bytes per code; this index has nbits={self.nbits}")
        flat = faiss.IndexBinaryFlat(self.nbits)
        with self._lock:
            codes, positional = self._buffer[: self._count], self._id_buffer is None
            ids = self._stored_ids()
        codes = codes.cpu().contiguous().numpy()
        if positional:
            flat.add(codes)
            return flat
        index = faiss.IndexBinaryIDMap(flat)
        index.add_with_ids(codes, ids.cpu().numpy())
        return index

    @classmethod
    def from_faiss(cls, index, device: torch.device | str = "cpu") -> "HammingIndex":
        """A HammingIndex with the codes (and ids) of a faiss ``IndexBinaryFlat`` or an
        ``IndexBinaryIDMap`` over one; the codes are copied."""
        faiss = _import_faiss()
        ids = None
        if isinstance(index, faiss.IndexBinaryIDMap):
            ids = faiss.vector_to_array(index.id_map).astype("int64")
            index = faiss.downcast_IndexBinary(index.index)
        if not isinstance(index, faiss.IndexBinaryFlat):
            raise TypeError("from_faiss takes a faiss.IndexBinaryFlat or an IndexBinaryIDMap over one, got "
                            f"{type(index).__name__}")
        codes = faiss.vector_to_array(index.xb).reshape(index.ntotal, index.code_size)
        out = cls(index.d, device=device)
        if ids is None:
            out.add(codes)
        else:
            out.add_with_ids(codes, ids)
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to ``path`` atomically (a temporary file, then a rename).

        An existing file keeps its permissions and a symlink is written through; the folder
        must exist (see :mod:`hashkern._io`).
        """
        with self._lock:  # a consistent snapshot: adds after this line are not saved
            if self._id_buffer is not None:
                raise ValueError("save writes format version 1, whose ids are the codes' positions; this index "
                                 "has ids from add_with_ids or remove_ids, which it cannot keep")
            codes = self._buffer[: self._count]
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


def _import_faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError("to_faiss / from_faiss need faiss: pip install faiss-cpu") from None
    return faiss
