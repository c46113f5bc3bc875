"""Saving files like a careful editor: modes kept, symlinks written through, killed saves cleaned up, no new folders."""
import os
import signal
import socket
import stat
import subprocess
import sys

import pytest
import torch

from hashkern import HammingIndex
from hashkern._io import atomic_write, temporary_prefix
from hashkern.training.checkpoint import save_checkpoint

IO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hashkern", "_io.py")


def _index_save(path):
    index = HammingIndex(16)
    index.add(torch.randint(0, 2, (5, 16)))
    index.save(path)


def _checkpoint_save(path):
    save_checkpoint(path, {"format": "x"})


SAVERS = [_index_save, _checkpoint_save]


def _temporaries(folder):
    return [f for f in os.listdir(folder) if f.endswith(".tmp")]


@pytest.mark.parametrize("save", SAVERS)
def test_existing_mode_is_kept_and_new_files_follow_umask(tmp_path, save):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    os.chmod(path, 0o640)
    save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    old = os.umask(0o027)
    try:
        save(tmp_path / "new.bin")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.bin").st_mode) == 0o640  # 0666 & ~0027, as open() would


@pytest.mark.parametrize("save", SAVERS)
def test_symlink_is_written_through(tmp_path, save):
    target = tmp_path / "real" / "data.bin"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() != b"old" and link.read_bytes() == target.read_bytes()
    assert _temporaries(tmp_path) == [] and _temporaries(target.parent) == []
    dangling = tmp_path / "dangling.bin"
    dangling.symlink_to(tmp_path / "real" / "later.bin")
    save(dangling)
    assert dangling.is_symlink() and (tmp_path / "real" / "later.bin").exists()


@pytest.mark.parametrize("save", SAVERS)
def test_missing_folder_empty_path_and_directory_are_refused(tmp_path, save):
    with pytest.raises(FileNotFoundError, match="folder .*missing.* does not exist"):
        save(tmp_path / "missing" / "f.bin")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(ValueError, match="path must be a non-empty file path"):
        save("")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        save(tmp_path)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        save(None)


# Loads hashkern/_io.py alone (no torch import), starts a save and is killed in the middle of it.
_KILLED_SAVE = """
import importlib.util, os, signal
spec = importlib.util.spec_from_file_location("hk_io", {io!r})
io = importlib.util.module_from_spec(spec)
spec.loader.exec_module(io)
with io.atomic_write({path!r}) as f:
    f.write(b"x" * 100000)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_temporaries_of_killed_saves_are_removed_by_the_next_save(tmp_path):
    path = tmp_path / "db.hidx"
    _index_save(path)
    before = path.read_bytes()
    seen = []
    for _ in range(2):  # the second killed save already removes the first one's temporary
        proc = subprocess.run([sys.executable, "-c", _KILLED_SAVE.format(io=IO, path=str(path))])
        assert proc.returncode == -signal.SIGKILL
        leftovers = _temporaries(tmp_path)
        assert len(leftovers) == 1 and leftovers[0].startswith(temporary_prefix(str(path))) and leftovers[0] not in seen
        assert os.path.getsize(tmp_path / leftovers[0]) == 100000
        seen += leftovers
    assert path.read_bytes() == before  # the kill never touched the target
    # Temporaries that are not stale stay: a live process's (a concurrent save) and another host's.
    live = tmp_path / f"{temporary_prefix(str(path))}{socket.gethostname().replace('.', '_')}.{os.getppid()}.ab.tmp"
    other_host = tmp_path / f"{temporary_prefix(str(path))}otherhost.1.cd.tmp"
    unrelated = tmp_path / ".notes.txt.tmp"
    for f in (live, other_host, unrelated):
        f.write_bytes(b"in progress")
    _index_save(path)
    assert sorted(_temporaries(tmp_path)) == sorted(f.name for f in (live, other_host, unrelated))
    assert HammingIndex.load(path).nbits == 16


def test_failed_write_leaves_no_temporary_and_the_old_file(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"a": 1})
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path) as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert path.read_bytes() == before and _temporaries(tmp_path) == []


_RACING_SAVES = """
import importlib.util
spec = importlib.util.spec_from_file_location("hk_io", {io!r})
io = importlib.util.module_from_spec(spec)
spec.loader.exec_module(io)
for _ in range(40):
    with io.atomic_write({path!r}) as f:
        f.write({content!r} * 20000)
"""


def test_concurrent_saves_from_processes(tmp_path):
    """Processes racing on one file never delete each other's live temporaries; the survivor is one whole write."""
    path = tmp_path / "shared.bin"
    scripts = [_RACING_SAVES.format(io=IO, path=str(path), content=bytes([65 + i])) for i in range(3)]
    procs = [subprocess.Popen([sys.executable, "-c", script]) for script in scripts]
    assert [p.wait() for p in procs] == [0, 0, 0]
    data = path.read_bytes()
    assert len(data) == 20000 and data in {bytes([65 + i]) * 20000 for i in range(3)}
    assert _temporaries(tmp_path) == []


def test_concurrent_saves_from_threads(tmp_path):
    """Threads racing on one index file: each save is atomic, none removes another's temporary."""
    import threading

    from hashkern import HammingIndex as Index

    path = tmp_path / "db.hidx"
    errors = []

    def saver(seed):
        try:
            for _ in range(10):
                index = Index(64)
                index.add(torch.randint(0, 2, (50 + seed, 64), generator=torch.Generator().manual_seed(seed)))
                index.save(path)
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=saver, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(Index.load(path)) in {50, 51, 52, 53} and _temporaries(tmp_path) == []


def test_sealed_files_keep_the_byte_format_both_writers_had(tmp_path):
    # The layouts checkpoints and index files had before they shared _io.sealed_write, spelled out here:
    # header | payload | SHA-256 of header and payload. Files written so must load, and saves must write them.
    import hashlib
    import io
    import struct

    from hashkern._io import seal_matches
    from hashkern.training.checkpoint import load_checkpoint

    codes = torch.tensor([[0x12, 0x34], [0xAB, 0xCD], [0xFF, 0x00]], dtype=torch.uint8)
    body = struct.pack("<8sIIQQ", b"HKINDEX\0", 1, 16, 3, 6) + codes.numpy().tobytes()
    (tmp_path / "old.idx").write_bytes(body + hashlib.sha256(body).digest())
    assert torch.equal(HammingIndex.load(tmp_path / "old.idx").codes, codes)
    HammingIndex.load(tmp_path / "old.idx").save(tmp_path / "new.idx")
    assert (tmp_path / "new.idx").read_bytes() == (tmp_path / "old.idx").read_bytes()

    state = {"format": "hashkern-checkpoint", "version": 2, "train_config": {}, "model_config": {},
             "model": {"w": torch.arange(4.0)}, "optimizer": {}, "scheduler": {}, "step": 0,
             "history": {"loss": []}}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    body = struct.pack("<8sI", b"HKCKPT\r\n", 2) + buffer.getvalue()
    (tmp_path / "old.pt").write_bytes(body + hashlib.sha256(body).digest())
    assert torch.equal(load_checkpoint(tmp_path / "old.pt")["model"]["w"], torch.arange(4.0))
    save_checkpoint(tmp_path / "new.pt", state)
    written = (tmp_path / "new.pt").read_bytes()
    assert written.startswith(struct.pack("<8sI", b"HKCKPT\r\n", 2)) and seal_matches(written)
    assert not seal_matches(written[:-1] + bytes([written[-1] ^ 1])) and not seal_matches(b"short")
