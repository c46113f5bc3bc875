"""Saves and loads at the edges of the file system (issue 25): special targets, full disks, endless
files, long names, trailing slashes. Special files are made in the test's own folder, never /dev."""
import errno
import os
import stat
import subprocess
import sys
import threading

import pytest
import torch
from faults import fill_disk_after

from hashkern import HammingIndex
from hashkern._io import atomic_write
from hashkern.index import IndexFileError
from hashkern.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from hashkern.training.evaluate import write_json


def _index(n=5):
    index = HammingIndex(16)
    index.add(torch.randint(0, 2, (n, 16)))
    return index


def _state():
    return {"format": "hashkern-checkpoint", "w": torch.arange(10.0)}


SAVERS = {"index": lambda p: _index().save(p), "checkpoint": lambda p: save_checkpoint(p, _state()),
          "json": lambda p: write_json(str(p), {"a": 1})}


def _read_fifo(path, sink):
    with open(path, "rb") as f:
        sink.append(f.read())


@pytest.mark.parametrize("kind", sorted(SAVERS))
def test_save_to_a_fifo_writes_into_it_and_keeps_it_a_fifo(tmp_path, kind):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=_read_fifo, args=(fifo, got), daemon=True)
    reader.start()
    SAVERS[kind](fifo)
    reader.join(timeout=30)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced by a regular file"
    assert got and len(got[0]) > 0
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


@pytest.mark.parametrize("kind", sorted(SAVERS))
def test_save_to_a_device_node_keeps_the_node(tmp_path, kind):
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null's numbers, in our own folder
    link = tmp_path / "link-to-null"
    link.symlink_to(null)
    SAVERS[kind](null)
    SAVERS[kind](link)
    info = os.lstat(null)
    assert stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(1, 3), "the device node was replaced"
    assert os.path.islink(link)


def test_save_to_dev_stdout_into_a_pipe():
    code = ("import torch, sys; from hashkern import HammingIndex; i = HammingIndex(16); "
            "i.add(torch.ones(3, 16)); i.save('/dev/stdout')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.startswith(b"HKINDEX\0") and len(out.stdout) == 32 + 6 + 32


@pytest.mark.parametrize("load", [HammingIndex.load, load_checkpoint])
def test_loaders_read_the_header_first(tmp_path, load):
    # A zero device never ends: a loader that reads the whole file first never returns.
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    zero = tmp_path / "zero"
    os.mknod(zero, stat.S_IFCHR | 0o666, os.makedev(1, 5))
    with pytest.raises((IndexFileError, CheckpointError), match="not a"):
        load(zero)


@pytest.mark.parametrize("load", [HammingIndex.load, load_checkpoint])
def test_loaders_do_not_read_a_large_foreign_file_whole(tmp_path, load, monkeypatch):
    path = tmp_path / "big"
    path.write_bytes(b"HK" + bytes(1 << 22))
    reads = []
    real_open = open

    class Counting:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            reads.append(n)
            return self.f.read(n)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr("builtins.open", lambda p, *a, **k: Counting(real_open(p, *a, **k)))
    with pytest.raises((IndexFileError, CheckpointError)):
        load(path)
    assert reads and all(0 <= n <= 1 << 20 for n in reads), reads


def test_index_load_streams_through_the_digest(tmp_path):
    index = _index(3000)
    index.save(tmp_path / "i.hk")
    data = bytearray((tmp_path / "i.hk").read_bytes())
    loaded = HammingIndex.load(tmp_path / "i.hk")
    assert torch.equal(loaded.codes, index.codes)
    data[40] ^= 1
    (tmp_path / "bad.hk").write_bytes(data)
    with pytest.raises(IndexFileError, match="checksum"):
        HammingIndex.load(tmp_path / "bad.hk")


def _big_state():
    return {"format": "hashkern-checkpoint", "w": torch.randn(1 << 19)}  # 2 MiB


def _assert_full_disk_error(excinfo, path):
    assert isinstance(excinfo.value, OSError) and excinfo.value.errno == errno.ENOSPC
    assert str(path) in str(excinfo.value)


def test_checkpoint_save_on_a_full_disk_raises_oserror_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state())
    before = path.read_bytes()
    fill_disk_after(monkeypatch, 1 << 16)
    with pytest.raises(OSError) as excinfo:
        save_checkpoint(path, _big_state())
    _assert_full_disk_error(excinfo, path)
    assert path.read_bytes() == before and [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


@pytest.fixture
def small_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_checkpoint_save_on_a_full_tmpfs(small_tmpfs):
    path = small_tmpfs / "last.pt"
    save_checkpoint(path, _state())
    before = path.read_bytes()
    with pytest.raises(OSError) as excinfo:
        save_checkpoint(path, _big_state())
    _assert_full_disk_error(excinfo, path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("kind", sorted(SAVERS))
def test_names_up_to_name_max_can_be_saved(tmp_path, kind):
    for length in (233, 255):
        path = tmp_path / ("n" * length)
        SAVERS[kind](path)
        assert path.exists()
    with atomic_write(tmp_path / ("é" * 127)) as f:  # 254 bytes of UTF-8
        f.write(b"x")
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def test_trailing_slash_is_refused_by_save_and_load_alike(tmp_path):
    path = str(tmp_path / "index.hk") + "/"
    with pytest.raises(IsADirectoryError, match="names a folder"):
        _index().save(path)
    assert not os.path.exists(path.rstrip("/"))
    with pytest.raises(IsADirectoryError, match="names a folder"):
        HammingIndex.load(path)
    with pytest.raises(IsADirectoryError, match="names a folder"):
        save_checkpoint(path, _state())
    with pytest.raises(IsADirectoryError, match="names a folder"):
        load_checkpoint(path)
