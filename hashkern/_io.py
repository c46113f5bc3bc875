"""Atomic file writes: a crash or an error never leaves a half-written file at the target.

How ``atomic_write(path)`` treats the file system, as a careful text editor does:

- the new content goes to a temporary file ``.<name>.<host>.<pid>.<random>.tmp`` beside the
  target, is fsynced, then renamed over the target: readers see the old file or the new one;
- an existing target keeps its permission bits; a new file gets ``0666 & ~umask`` like ``open``;
- a symlink is written through: its final target is replaced and the link stays a link;
- the folder must exist: a missing folder raises ``FileNotFoundError`` (a mistyped path must not
  quietly create a directory tree); callers that own a run folder create it themselves; a path
  ending in ``/`` names a folder and is refused by saves and loads alike;
- a target that exists and is not a regular file (a FIFO, ``/dev/null``, ``/dev/stdout`` into a
  pipe, any device node) is never renamed over: it is opened and written in place, as ``open(path,
  "wb")`` would (no atomicity: a reader of a FIFO sees what was written before an error);
- a full disk (``ENOSPC``) or another write error is raised as ``OSError`` naming the file, even
  when a writer in between (``torch.save``'s zip writer) would turn it into something else;
- names up to the file system's limit (255 bytes) can be saved: the temporary's name shortens a
  long target name (``temporary_prefix``);
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
import io
import os
import secrets
import socket
import stat
from typing import BinaryIO, Iterator

__all__ = ["atomic_write", "check_path", "resolve_target", "temporary_prefix", "sealed_write", "seal_matches",
           "read_through", "FileWindow", "SEAL_SIZE"]

SEAL_SIZE = 32  # bytes of the SHA-256 trailer of a sealed file
_CHUNK = 1 << 20  # bytes per read when streaming a file through a digest
_NAME_ROOM = 140  # bytes of the target's name kept in a temporary's name (the rest: host, pid, random, ".tmp")


def check_path(path, name: str = "path") -> str:
    """A non-empty str / os.PathLike file path, as a str."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike file path, got {type(path).__name__}")
    path = os.fspath(path)
    if not isinstance(path, str) or path == "":
        raise ValueError(f"{name} must be a non-empty file path, got {path!r}")
    if "\0" in path:
        raise ValueError(f"{name} must not contain a NUL character, got {path!r}")
    if path.endswith(("/", os.sep)):
        raise IsADirectoryError(errno.EISDIR, f"{name} {path!r} ends with '/': it names a folder, not a file", path)
    return path


def _special(path: str) -> bool:
    """Whether ``path`` (symlinks followed) exists and is neither a regular file nor a folder."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


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
    """Names of temporaries for ``target`` start with this (``.<name>.``); tests and tools find them by it.

    A name longer than 140 bytes is cut there and given a digest of the whole name, so the
    temporary's name stays within NAME_MAX (255 bytes) whenever the target's does.
    """
    base = os.path.basename(target)
    raw = os.fsencode(base)
    if len(raw) > _NAME_ROOM:
        base = f"{raw[:_NAME_ROOM - 9].decode('utf-8', 'ignore')}~{hashlib.sha256(raw).hexdigest()[:8]}"
    return f".{base}."


def _host() -> str:
    return (socket.gethostname().replace(".", "_") or "host")[:40]


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
    is the argument name used in error messages. A special target (FIFO, device) is written in
    place instead (see the module's docstring).
    """
    if _special(check_path(path, name)):
        with _named_errors(path), open(path, "wb") as f:
            yield f
            f.flush()
        return
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
        with _named_errors(path), os.fdopen(fd, "wb") as f:
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


@contextlib.contextmanager
def _named_errors(path) -> Iterator[None]:
    """Re-raise an ``OSError`` without a file name (ENOSPC from a write, fsync) as one naming ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, f"cannot save {os.fspath(path)!r}: {exc.strerror or exc}", os.fspath(path)) from exc


class _HashingWriter:
    """A write-only file object that hashes what passes through it (``torch.save`` can stream into it).

    The first ``OSError`` of a write is kept in ``error``: writers in between (torch's zip writer)
    may turn it into a ``RuntimeError``, and :func:`sealed_write` raises the ``OSError`` instead.
    """

    def __init__(self, f, digest):
        self.f, self.digest, self.error = f, digest, None

    def write(self, data) -> int:
        self.digest.update(data)
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.f.flush()


@contextlib.contextmanager
def sealed_write(path: str | os.PathLike, header: bytes, *, name: str = "path") -> Iterator[_HashingWriter]:
    """Atomically write ``header``, then what the caller writes to the yielded file, then the SHA-256 of both."""
    digest = hashlib.sha256()
    with atomic_write(path, name=name) as f:
        writer = _HashingWriter(f, digest)
        try:
            writer.write(header)
            yield writer
            f.write(digest.digest())
        except Exception as exc:
            if writer.error is None or isinstance(exc, OSError):
                raise
            raise writer.error from exc  # e.g. torch's "unexpected pos" RuntimeError hiding an ENOSPC


def seal_matches(data: bytes | memoryview) -> bool:
    """Whether the last :data:`SEAL_SIZE` bytes of ``data`` are the SHA-256 of the bytes before them."""
    body = memoryview(data)
    return len(body) >= SEAL_SIZE and hashlib.sha256(body[:-SEAL_SIZE]).digest() == bytes(body[-SEAL_SIZE:])


def read_through(f, digest, size: int, into: memoryview | None = None) -> int:
    """Read up to ``size`` bytes of ``f`` in chunks, feeding ``digest`` (and filling ``into`` when given).

    Returns the bytes read (fewer at the end of the file); memory stays O(chunk) without ``into``.
    """
    done = 0
    while done < size:
        want = min(_CHUNK, size - done)
        if into is not None:
            got = f.readinto(into[done:done + want]) or 0
            chunk = into[done:done + got]
        else:
            chunk = f.read(want)
            got = len(chunk)
        if not got:
            break
        digest.update(chunk)
        done += got
    return done


class FileWindow(io.RawIOBase):
    """A read-only, seekable view of bytes ``[start, start + size)`` of an open binary file
    (``torch.load`` reads a checkpoint's payload through it without a copy in memory)."""

    def __init__(self, f, start: int, size: int):
        super().__init__()
        self.f, self.start, self.size, self.pos = f, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self.size - self.pos))
        if n == 0:
            return 0
        self.f.seek(self.start + self.pos)
        got = self.f.readinto(memoryview(buffer)[:n]) or 0
        self.pos += got
        return got
