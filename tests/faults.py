"""Injected file-system faults shared by the tests: a disk that fills up."""
import errno
import os


class FullDisk:
    """Wraps a file object; its writes fail with ENOSPC once ``room`` bytes are used, as a full disk's do."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.f.__exit__(*exc)


def fill_disk_after(monkeypatch, room: int) -> None:
    """Every file ``hashkern._io`` writes from now on holds at most ``room`` bytes."""
    real_fdopen = os.fdopen
    monkeypatch.setattr("hashkern._io.os.fdopen", lambda *a, **k: FullDisk(real_fdopen(*a, **k), room))
