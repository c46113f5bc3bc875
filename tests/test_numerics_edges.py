"""Extreme feature scales for ITQ, NT-Xent under autocast, an atomic PR plot, clear errors at 0
sizes and for a truncated dataset (issue 25, items 9 and 12)."""
import gzip
import os

import pytest
import torch

from hashkern.losses import nt_xent
from hashkern.models.shallow import ITQ


@pytest.mark.parametrize("scale", [1e160, 1e-300, 1e300, 5e-324 * 2**40])
def test_itq_codes_do_not_depend_on_the_feature_scale(scale):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 24, generator=gen, dtype=torch.float64)
    want = ITQ(8).fit(x).encode(x)
    got = ITQ(8).fit(x * scale).encode(x * scale)
    assert torch.equal(got, want)


def test_nt_xent_similarities_are_float32_under_autocast():
    seen = []
    real_mm = torch.Tensor.__matmul__

    def spy(a, b):
        out = real_mm(a, b)
        seen.append(out.dtype)
        return out

    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    want = nt_xent(z1, z2, 0.3)
    torch.Tensor.__matmul__ = spy
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = nt_xent(z1, z2, 0.3)
    finally:
        torch.Tensor.__matmul__ = real_mm
    assert seen and all(d == torch.float32 for d in seen), seen
    assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-6)


def test_nt_xent_with_zero_features_is_refused_clearly():
    with pytest.raises(ValueError, match="at least one feature"):
        nt_xent(torch.zeros(4, 0), torch.zeros(4, 0))


def test_plot_pr_is_written_atomically(tmp_path, monkeypatch):
    from hashkern.training.evaluate import plot_pr

    path = tmp_path / "pr.png"
    path.write_bytes(b"old plot")
    import matplotlib.figure

    def fails(self, target, *a, **k):  # writes a part of the PNG, then dies
        if hasattr(target, "write"):
            target.write(b"\x89PNG partial")
        else:
            with open(target, "wb") as f:
                f.write(b"\x89PNG partial")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fails)
    with pytest.raises(RuntimeError):
        plot_pr({"a": {"precision": [1, 0.5], "recall": [0, 1]}}, str(path))
    assert path.read_bytes() == b"old plot" and [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []
    monkeypatch.undo()
    plot_pr({"a": {"precision": [1, 0.5], "recall": [0, 1]}}, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_soft_sort_gather_with_zero_rows_and_per_row_values():
    from hashkern.ops.softsort import soft_sort_gather

    out = soft_sort_gather(torch.randn(0, 5), torch.randn(0, 5, 3), 0.5)
    assert out.shape == (0, 5, 3)
    assert soft_sort_gather(torch.randn(0, 5), torch.randn(5, 3), 0.5).shape == (0, 5, 3)


def test_truncated_dataset_gz_names_the_file(tmp_path):
    from hashkern.training.data.datasets import _read_idx

    whole = gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 200]) + bytes(200))
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz is truncated"):
        _read_idx(str(path))


def test_inconsistent_index_headers_name_the_file(tmp_path):
    import hashlib
    import struct

    from hashkern.index import HammingIndex, IndexFileError

    def sealed(nbits, count, payload):
        body = struct.pack("<8sIIQQ", b"HKINDEX\0", 1, nbits, count, len(payload)) + payload
        return body + hashlib.sha256(body).digest()

    (tmp_path / "padding.hk").write_bytes(sealed(12, 1, bytes([0xFF, 0xFF])))
    with pytest.raises(IndexFileError, match="padding.hk is corrupted.*beyond nbits=12"):
        HammingIndex.load(tmp_path / "padding.hk")
    (tmp_path / "huge.hk").write_bytes(sealed(2**31, 0, b""))
    with pytest.raises(IndexFileError, match="huge.hk is corrupted"):
        HammingIndex.load(tmp_path / "huge.hk")
