"""Moved modules: the old import paths of README's "Moved names" still work, with a DeprecationWarning."""
import importlib
import sys

import pytest

from hashkern._deprecated import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_warns_and_gives_the_new_module(old):
    if "triton" in MOVED[old]:
        pytest.importorskip("triton")
    new = importlib.import_module(MOVED[old])
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {MOVED[old]}"):
        module = importlib.import_module(old)
    assert module is new


def test_from_imports_and_monkeypatches_reach_the_new_module(monkeypatch):
    sys.modules.pop("hashkern.ops.softsort.scan_torch", None)
    with pytest.warns(DeprecationWarning):
        from hashkern.ops.softsort.scan_torch import SCRATCH_ELEMS, cosine_grad_coefficients  # noqa: F401
    from hashkern.ops.softsort import torch_impl
    monkeypatch.setattr(sys.modules["hashkern.ops.softsort.scan_torch"], "SCRATCH_ELEMS", 7)
    assert torch_impl.SCRATCH_ELEMS == 7


def test_every_old_path_is_listed_in_the_readme():
    readme = open(__file__.rsplit("/tests/", 1)[0] + "/README.md").read()
    section = readme.split("### Moved names", 1)[1]
    for old, new in MOVED.items():
        assert f"| `{old}` | `{new}`" in section, old
