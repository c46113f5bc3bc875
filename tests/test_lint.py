"""`ruff check` (configured in ruff.toml) is clean on the whole repository."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_check_is_clean():
    try:
        import ruff  # noqa: F401  (the make test environment installs it: Makefile DEPS)
    except ImportError:
        raise AssertionError("ruff is not installed: `python -m pip install ruff` (it is in the Makefile's DEPS)")
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stdout + run.stderr
