"""Every case of every ``cases_<area>.py`` module in this folder (the hook for adding an area)."""
from __future__ import annotations

import glob
import importlib
import os

from badinput import Case

HERE = os.path.dirname(os.path.abspath(__file__))


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for path in sorted(glob.glob(os.path.join(HERE, "cases_*.py"))):
        cases += importlib.import_module(os.path.basename(path)[:-3]).cases()
    ids = [c.id for c in cases]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ValueError(f"duplicated bad-input case ids: {duplicated[:5]}")
    return cases
