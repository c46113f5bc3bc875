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
