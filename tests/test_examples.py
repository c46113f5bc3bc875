"""The python/ examples run on tiny data: drop-in losses in a plain loop, HammingIndex + mAP."""
import importlib.util
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("loss", ["nsh", "wch"])
def test_drop_in_losses(loss, capsys):
    losses = _load("drop_in_losses").main(["--loss", loss, "--steps", "3", "--batch-size", "6", "--images", "24",
                                           "--bits", "8"])
    assert len(losses) == 3 and all(x == x for x in losses)  # finite, not NaN
    assert f"{loss} loss" in capsys.readouterr().out


def test_index_and_map(capsys):
    m = _load("index_and_map").main(["--bits", "16", "--topk", "50"])
    out = capsys.readouterr().out
    assert "mAP@50" in out and "HammingIndex(nbits=16, size=500" in out
    assert m > 0.9  # well-separated synthetic clusters: ITQ codes retrieve their own class
