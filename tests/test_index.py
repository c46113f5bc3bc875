"""HammingIndex: search equals the reference, ids stay stable, files are checked and written atomically."""
import os

import pytest
import torch

from hashkern.codes import pack_bits
from hashkern.index import HammingIndex, IndexFileError
from hashkern.ops.search import hamming_radius_reference, hamming_topk_reference


def codes(n, nbits, device="cpu"):
    return torch.randint(0, 2, (n, nbits), device=device).float() * 2 - 1


@pytest.mark.parametrize("nbits", [1, 12, 64])
def test_add_search_radius_match_reference(device, nbits):
    index = HammingIndex(nbits, device=device)
    first, second = codes(40, nbits, device), codes(25, nbits, device)
    assert index.add(first).tolist() == list(range(40))
    assert index.add(pack_bits(second)).tolist() == list(range(40, 65))  # packed input, ids continue
    assert len(index) == 65 and index.device.type == device.type
    db = pack_bits(torch.cat([first, second]))
    assert torch.equal(index.codes, db)
    q = codes(6, nbits, device)
    for k in (1, 30, 65):
        dist, idx = index.search(q, k)
        rd, ri = hamming_topk_reference(pack_bits(q), db, k)
        assert torch.equal(dist, rd) and torch.equal(idx, ri)
    offsets, idx, dist = index.radius_search(pack_bits(q), nbits // 3)
    ro, ri, rdist = hamming_radius_reference(pack_bits(q), db, nbits // 3)
    assert torch.equal(offsets, ro) and torch.equal(idx, ri) and torch.equal(dist, rdist)


def test_ids_are_stable_across_many_appends():
    index = HammingIndex(16)
    batches = [codes(n, 16) for n in (1, 700, 3, 900, 0, 400)]  # crosses several buffer growths
    for batch in batches:
        index.add(batch)
    everything = torch.cat(batches)
    dist, idx = index.search(everything[::97], 1)
    assert (dist == 0).all()
    assert torch.equal(pack_bits(everything[idx[:, 0]]), pack_bits(everything[::97]))
    assert torch.equal(index.codes, pack_bits(everything))


def test_save_load_roundtrip(tmp_path, device):
    index = HammingIndex(21, device=device)
    index.add(codes(37, 21, device))
    path = tmp_path / "db.hkidx"
    index.save(path)
    loaded = HammingIndex.load(path, device=device)
    assert loaded.nbits == 21 and len(loaded) == 37 and torch.equal(loaded.codes, index.codes)
    q = codes(3, 21, device)
    assert all(torch.equal(a, b) for a, b in zip(loaded.search(q, 5), index.search(q, 5)))
    empty = HammingIndex(9)
    empty.save(tmp_path / "empty.hkidx")
    assert len(HammingIndex.load(tmp_path / "empty.hkidx")) == 0
    assert sorted(os.listdir(tmp_path)) == ["db.hkidx", "empty.hkidx"]  # no temporary files left


@pytest.fixture
def saved(tmp_path):
    index = HammingIndex(40)
    index.add(codes(50, 40))
    path = tmp_path / "index.hkidx"
    index.save(path)
    return path, path.read_bytes()


def test_truncated_file_is_refused(saved):
    path, data = saved
    for size in (len(data) - 1, len(data) - 32, len(data) // 2, 40, 5):
        path.write_bytes(data[:size])
        with pytest.raises(IndexFileError, match="truncated"):
            HammingIndex.load(path)
    path.write_bytes(b"")
    with pytest.raises(IndexFileError, match="not a HammingIndex file"):
        HammingIndex.load(path)


def test_corrupted_file_is_refused(saved):
    path, data = saved
    for position in (40, 32 + 5 * 50 - 1, len(data) - 1):  # a code byte, the last code byte, the checksum
        flipped = bytearray(data)
        flipped[position] ^= 0x10
        path.write_bytes(bytes(flipped))
        with pytest.raises(IndexFileError, match="checksum does not match"):
            HammingIndex.load(path)
    path.write_bytes(data + b"\0")
    with pytest.raises(IndexFileError, match="unexpected bytes after the checksum"):
        HammingIndex.load(path)
    header = bytearray(data)
    header[16] ^= 1  # the code count no longer fits the payload size
    path.write_bytes(bytes(header))
    with pytest.raises(IndexFileError, match="corrupted"):
        HammingIndex.load(path)


def test_foreign_or_newer_file_is_refused(saved):
    path, data = saved
    path.write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(IndexFileError, match="not a HammingIndex file"):
        HammingIndex.load(path)
    newer = bytearray(data)
    newer[8] = 2
    path.write_bytes(bytes(newer))
    with pytest.raises(IndexFileError, match="format version 2"):
        HammingIndex.load(path)


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_save_keeps_the_old_file(saved, monkeypatch, failing):
    path, data = saved
    bigger = HammingIndex(40)
    bigger.add(codes(80, 40))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="disk full"):
        bigger.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == data
    assert os.listdir(path.parent) == [path.name]
    assert len(HammingIndex.load(path)) == 50


def test_to_device_moves_codes(device):
    index = HammingIndex(10)
    index.add(codes(5, 10))
    before = index.codes.clone()
    assert index.to(device) is index
    assert index.device.type == device.type and index.codes.device.type == device.type
    assert torch.equal(index.codes.cpu(), before)
    index.add(codes(2, 10, device))
    assert len(index) == 7


def test_bad_inputs():
    with pytest.raises(ValueError, match="nbits must be >= 1"):
        HammingIndex(0)
    with pytest.raises(TypeError, match="nbits must be an int"):
        HammingIndex(8.0)
    index = HammingIndex(12)
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(codes(1, 12), 0)
    with pytest.raises(ValueError, match="nbits=12 bits per code"):
        index.add(codes(3, 13))
    with pytest.raises(ValueError, match="need 2 bytes per row"):
        index.add(torch.zeros(3, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="bits set beyond nbits=12"):
        index.add(torch.full((1, 2), 0xFF, dtype=torch.uint8))
    with pytest.raises(ValueError, match="codes must be 2-D"):
        index.add(codes(3, 12)[0])
    with pytest.raises(ValueError, match="on the index's device"):
        index.add(codes(3, 12).to("meta"))
    index.add(codes(3, 12))
    with pytest.raises(ValueError, match="r must be >= 0"):
        index.radius_search(codes(1, 12), -2)


def test_concurrent_adds_keep_every_code_under_its_id():
    # 6 threads x 400 adds with a tiny switch interval: without the lock ids collide and codes are lost.
    import sys
    import threading

    index, nbits, per_thread, threads = HammingIndex(24), 24, 400, 6
    results = {}

    def worker(t):
        gen = torch.Generator().manual_seed(t)
        out = []
        for _ in range(per_thread):
            c = torch.randint(0, 2, (1, nbits), generator=gen)
            out.append((index.add(c), pack_bits(c)))
        results[t] = out

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
    finally:
        sys.setswitchinterval(old)
    assert len(index) == threads * per_thread
    ids = torch.cat([ids for out in results.values() for ids, _ in out])
    assert sorted(ids.tolist()) == list(range(threads * per_thread))
    for out in results.values():
        for ids, packed in out:
            assert torch.equal(index.codes[ids], packed)


def test_index_can_be_copied_and_pickled():
    import copy
    import pickle

    index = HammingIndex(16)
    index.add(codes(7, 16))
    for clone in (copy.deepcopy(index), pickle.loads(pickle.dumps(index))):
        clone.add(codes(2, 16))
        assert len(clone) == 9 and len(index) == 7 and torch.equal(clone.codes[:7], index.codes)
