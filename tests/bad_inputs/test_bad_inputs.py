"""The generated bad-input suite: every case is refused with an error naming its argument, or equals its oracle.

Cases live in ``cases_<area>.py`` beside this file (see ``badinput.py``); ``python
tests/bad_inputs/report.py`` prints the count of every outcome class.
"""
import pytest

from badinput import judge
from collect import all_cases

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case, tmp_path):
    outcome = judge(case, tmp_path)
    assert outcome.ok, f"{outcome.kind}: {outcome.detail}"
