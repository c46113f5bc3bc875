"""``python tests/bad_inputs/report.py [-v]``: run every bad-input case, print the count of each outcome class.

Exit status 1 when any case is a defect (silently wrong, NaN/inf from finite input, unclear
error, bad input accepted, valid input refused); ``-v`` lists those cases.
"""
from __future__ import annotations

import collections
import os
import pathlib
import sys
import tempfile
import time

if not os.environ.get("CUDA_VISIBLE_DEVICES"):
    os.environ.setdefault("TRITON_INTERPRET", "1")  # as tests/conftest.py, before any kernel is imported
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE), os.path.dirname(os.path.dirname(HERE))]  # cases, tests/, the repo

from badinput import DEFECTS, GOOD, judge  # noqa: E402
from collect import all_cases  # noqa: E402


def main(verbose: bool) -> int:
    start = time.time()
    counts, by_area, bad = collections.Counter(), collections.defaultdict(collections.Counter), []
    cases = all_cases()
    with tempfile.TemporaryDirectory() as root:
        for i, case in enumerate(cases):
            tmp = pathlib.Path(root) / str(i)
            tmp.mkdir()
            outcome = judge(case, tmp)
            counts[outcome.kind] += 1
            by_area[case.id.split("/")[0]][outcome.kind] += 1
            if not outcome.ok:
                bad.append((case.id, outcome))
    print(f"{len(cases)} cases in {time.time() - start:.1f} s\n")
    print("| outcome | count |\n|---|---:|")
    for kind in GOOD + DEFECTS:
        print(f"| {kind} | {counts[kind]} |")
    print("\n| function | cases | refused clearly | accepted and exact | defects |\n|---|---:|---:|---:|---:|")
    for area, c in sorted(by_area.items()):
        print(f"| {area} | {sum(c.values())} | {c[GOOD[0]]} | {c[GOOD[1]]} | {sum(c[k] for k in DEFECTS)} |")
    if verbose:
        for case_id, outcome in bad:
            detail = " ".join(outcome.detail.split())
            print(f"{case_id}: {outcome.kind}: {detail[:300]}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main("-v" in sys.argv))
