"""Atomic file writes: a crash or an error never leaves a half-written file at the target.

How ``atomic_write(path)`` treats the file system, as a careful text editor does:

- the new content goes to a temporary file ``.<name>.<host>.<pid>.<random>.tmp`` beside the
  target, is fsynced, then renamed over the target: readers see the old file or the new one;
- an existing target keeps its permission bits; a new file gets ``0666 & ~umask`` like ``open``;
- a symlink is written through: its final target is replaced and the link stays a link;
- the folder must exist: a missing folder raises ``FileNotFoundError`` (a mistyped path must not
  quietly create a directory tree); callers that own a run folder create it themselves;
- temporaries left by a save that was killed (``kill -9``, power loss) are removed by the next
  save to the same target: their name records host and process id, and a temporary whose
  process is gone on this host is stale. Temporaries of live processes (concurrent saves) and
  of other hosts (a shared file system) are left alone.

Sealed files (checkpoints, ``HammingIndex`` files) are ``header | payload | SHA-256 of header and
payload`` (32 bytes), written by :func:`sealed_write` and checked by :func:`seal_matches`; each
format's header starts with its own magic bytes and version.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import socket
import stat
from typing import BinaryIO, Iterator

__all__ = ["atomic_write", "check_path", "resolve_target", "temporary_prefix", "sealed_write", "seal_matches",
           "SEAL_SIZE"]

SEAL_SIZE = 32  # bytes of the SHA-256 trailer of a sealed file


def check_path(path, name: str = "path") -> str:
    """A non-empty str / os.PathLike file path, as a str."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike file path, got {type(path).__name__}")
    path = os.fspath(path)
    if not isinstance(path, str) or path == "":
        raise ValueError(f"{name} must be a non-empty file path, got {path!r}")
    if "\0" in path:
        raise ValueError(f"{name} must not contain a NUL character, got {path!r}")
    return path


def resolve_target(path, name: str = "path") -> str:
    """The file a save to ``path`` writes: symlinks followed; refuses empty paths and folders."""
    path = check_path(path, name)
    target = os.path.realpath(path)  # write through symlinks, as editors do
    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, f"{name} {path!r} is a directory, not a file", path)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"cannot save {path!r}: its folder {folder!r} does not exist "
                                              "(create it first)", path)
    return target


def temporary_prefix(target: str) -> str:
    """Names of temporaries for ``target`` start with this (``.<name>.``); tests and tools find them by it."""
    return f".{os.path.basename(target)}."


def _host() -> str:
    return socket.gethostname().replace(".", "_") or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OverflowError:
        return False
    return True


def _remove_stale_temporaries(target: str) -> None:
    """Delete ``.<name>.<host>.<pid>.<rand>.tmp`` beside ``target`` whose process on this host is gone."""
    folder, prefix, host = os.path.dirname(target), temporary_prefix(target), _host()
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for entry in names:
        if not (entry.startswith(prefix) and entry.endswith(".tmp")):
            continue
        parts = entry[len(prefix):-len(".tmp")].rsplit(".", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue  # another host's, or not one of ours: not ours to judge
        if int(parts[1]) != os.getpid() and not _pid_alive(int(parts[1])):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, entry))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, name: str = "path") -> Iterator[BinaryIO]:
    """Yield a binary file beside ``path``'s target; on success it is fsynced and renamed over it.

    On any error the temporary file is removed and the target keeps its old content. ``name``
    is the argument name used in error messages.
    """
    target = resolve_target(path, name)
    _remove_stale_temporaries(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    folder = os.path.dirname(target)
    tmp = os.path.join(folder, f"{temporary_prefix(target)}{_host()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)  # umask applies
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class _HashingWriter:
    """A write-only file object that hashes what passes through it (``torch.save`` can stream into it)."""

    def __init__(self, f, digest):
        self.f, self.digest = f, digest

    def write(self, data) -> int:
        self.digest.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


@contextlib.contextmanager
def sealed_write(path: str | os.PathLike, header: bytes, *, name: str = "path") -> Iterator[_HashingWriter]:
    """Atomically write ``header``, then what the caller writes to the yielded file, then the SHA-256 of both."""
    digest = hashlib.sha256()
    with atomic_write(path, name=name) as f:
        writer = _HashingWriter(f, digest)
        writer.write(header)
        yield writer
        f.write(digest.digest())


def seal_matches(data: bytes | memoryview) -> bool:
    """Whether the last :data:`SEAL_SIZE` bytes of ``data`` are the SHA-256 of the bytes before them."""
    body = memoryview(data)
    return len(body) >= SEAL_SIZE and hashlib.sha256(body[:-SEAL_SIZE]).digest() == bytes(body[-SEAL_SIZE:])
