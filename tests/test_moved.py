"""Names that moved to hashkern.training keep working from their old paths for one release, with a warning."""
import os
import subprocess
import sys
import warnings

import pytest

import hashkern
from hashkern._moved import MOVED
from hashkern.training import checkpoint, checkpoint_eval, cli, train
from hashkern.training.data import augment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_old_paths_warn_and_give_the_moved_objects():
    import importlib

    with pytest.warns(DeprecationWarning) as record:  # the module's warning, then the name's
        from hashkern.train import Trainer
    assert any("hashkern.train.Trainer moved to hashkern.training.train" in str(w.message) for w in record)
    assert Trainer is train.Trainer
    with pytest.warns(DeprecationWarning, match="moved to hashkern.training.checkpoint_eval"):
        from hashkern.train import evaluate_checkpoint
    assert evaluate_checkpoint is checkpoint_eval.evaluate_checkpoint
    with pytest.warns(DeprecationWarning):
        from hashkern.train import load_checkpoint
    assert load_checkpoint is checkpoint.load_checkpoint
    with pytest.warns(DeprecationWarning):
        from hashkern.data.augment import make_transforms
    assert make_transforms is augment.make_transforms
    with pytest.warns(DeprecationWarning):
        assert importlib.import_module("hashkern.cli").main is cli.main
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for old in MOVED:
            assert importlib.import_module(old).__name__ == old  # every listed path imports
    with pytest.raises(AttributeError, match="moved to"):
        importlib.import_module("hashkern.train").no_such_name


def test_the_library_does_not_import_the_application():
    code = "import sys, hashkern, hashkern.models, hashkern.losses; print(sorted(m for m in sys.modules " \
           "if m.startswith('hashkern.training')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
    assert "training" not in hashkern.__all__


def test_the_command_runs_as_python_m_hashkern_and_from_its_old_path():
    for module in ("hashkern", "hashkern.cli"):
        out = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", "-m", module, "--help"],
                             capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0 and "train" in out.stdout and "pretrain" in out.stdout, out.stderr
