"""``python -m benchmarks [--only NAME ...] [-- ARGS]``: every ``benchmarks/bench_*.py``, one after another.

Run from a clone of the repository (the benchmarks are not part of the installed package).
``ARGS`` are passed on to each benchmark, e.g. ``python -m benchmarks --only hamming -- --quick``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def benchmark_names() -> list[str]:
    """The module names of the benchmarks, ``bench_*``, sorted."""
    return sorted(p.stem for p in ROOT.glob("bench_*.py"))


def select(only: list[str] | None) -> list[str]:
    """The benchmarks ``--only`` names (``hamming`` or ``bench_hamming``); all when it is empty."""
    names = benchmark_names()
    if not only:
        return names
    chosen = [n for n in names if n in {f"bench_{o}" for o in only} | set(only)]
    if not chosen:
        raise ValueError(f"no benchmark named {only}; there are {[n.removeprefix('bench_') for n in names]}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names, e.g. hamming")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="arguments passed on to each benchmark (after --)")
    args = parser.parse_args(argv)
    try:
        names = select(args.only)
    except ValueError as exc:
        print(f"python -m benchmarks: error: {exc}", file=sys.stderr)
        return 2
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    status = 0
    for name in names:
        print(f"== {name}", flush=True)
        status |= subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *extra], cwd=ROOT.parent)
    return status


if __name__ == "__main__":
    sys.exit(main())
