"""The one-page summary of `make gpu-check` (see benchmarks/gpu_check.py)."""
from __future__ import annotations

import datetime
import json
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAILED_TAIL_LINES = 12


def junit_counts(path: Path) -> dict[str, int] | None:
    """{passed, failed, skipped} of a pytest junit XML file, or None when there is none."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    failed = total["failures"] + total["errors"]
    return {"passed": total["tests"] - failed - total["skipped"], "failed": failed, "skipped": total["skipped"]}


def read_targets(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git checkout)"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_summary(path: Path, steps, *, mode: str, elapsed: float, deadline: float, targets: Path,
                  tables: list[Path], note: str = "") -> None:
    """summary.md: verdict, environment, one row per step, benchmark targets (measured against target and the
    cost model's prediction), tables, failures' log tails; ``note``: why the run stopped early, if it did."""
    failed = [s for s in steps if s.status not in ("pass", "skipped")]
    verdict = "PASS" if not failed and not note else f"FAIL ({', '.join([s.name for s in failed] or ['stopped'])})"
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [f"# make gpu-check ({mode} run): {verdict}", "",
             f"Commit {_commit()}, {now:%Y-%m-%d %H:%M} UTC; {elapsed:.0f} s of the {deadline:.0f} s deadline.", ""]
    if note:
        lines += [f"**The run stopped early: {_cell(note)}.**", ""]
    gpu = next((s for s in steps if s.name == "gpu"), None)
    if gpu is not None and gpu.log is not None and gpu.log.exists():
        lines += ["nvidia-smi: " + _cell(" ".join(line for line in gpu.log.read_text(errors="replace").splitlines()
                                                 if not line.startswith("$"))), ""]
    environment = next((s for s in steps if s.name == "environment"), None)
    if environment is not None and environment.log is not None and environment.log.exists():
        body = [line for line in environment.log.read_text(errors="replace").splitlines() if not line.startswith("$")]
        lines += ["```", *body[:12], "```", ""]
    lines += ["| step | result | seconds | budget s | note |", "|---|---|---:|---:|---|"]
    for s in steps:
        seconds = f"{s.seconds:.1f}" if s.seconds else "—"
        lines.append(f"| {s.name} | {_cell(s.status)} | {seconds} | {s.budget_s:.0f} | {_cell(s.note)} |")
    records = read_targets(targets)
    lines += ["", "## Benchmark targets", ""]
    if records:
        lines += ["| benchmark | what | target | measured | predicted | met |", "|---|---|---|---|---|---|"]
        for r in records:
            met = "—" if r["met"] is None else ("yes" if r["met"] else "**no**")
            lines.append(f"| {_cell(r['benchmark'])} | {_cell(r['what'])} | {_cell(r['target'])} | "
                         f"{_cell(r['measured'])} | {_cell(r.get('predicted') or '—')} | "
                         f"{met}{' (tiny)' if r.get('tiny') else ''} |")
    else:
        lines.append("No benchmark reported a target (they do so through benchmarks._runner.report_target).")
    lines += ["", "## Tables", ""]
    lines += [f"- results/{t.name}" for t in tables] or ["none written"]
    for s in failed:
        if s.log is not None and s.log.exists():
            tail = s.log.read_text(errors="replace").splitlines()[-FAILED_TAIL_LINES:]
            heading = f"## {s.name}: {s.status} (last lines; all.log in gpu_check.tar.gz has everything)"
            lines += ["", heading, "", "```", *tail, "```"]
    path.write_text("\n".join(lines) + "\n")
