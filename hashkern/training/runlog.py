"""A run's metrics log (``metrics.jsonl``) and the plot of its curves (``hashkern plot``).

One JSON object per line: ``{"step", "epoch", "loss", "lr"}`` after each training step (``epoch``
counts finished epochs, fractional mid-epoch), ``{"step", "epoch", "map@k", ...}`` after each
evaluation (with ``"on": "validation"`` when measured on a protocol's validation queries; the last
one of a ``--keep best`` run adds ``"kept_step"`` and ``"kept_epoch"``, the kept model's). A resumed
run first drops the lines logged after its checkpoint's step, so the log of an interrupted and resumed
run is the log of the straight run.
"""
from __future__ import annotations

import json
import math
import os

__all__ = ["MetricsLog", "read_metrics", "plot_metrics"]


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl`` file; a torn last line (a killed run) is skipped."""
    records = []
    with open(path) as f:
        lines = f.read().split("\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if lineno < len(lines) - 1:
                raise ValueError(f"{os.fspath(path)}:{lineno} is not a JSON object") from None
    return records


class MetricsLog:
    """Appends records to ``path``, one JSON line each, flushed per record."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)

    def keep_until(self, step: int) -> None:
        """Drop the records of steps after ``step`` (all of them when ``step`` is 0)."""
        if not os.path.exists(self.path):
            return
        kept = [r for r in read_metrics(self.path) if step and r.get("step", 0) <= step]
        with open(self.path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)

    def append(self, record: dict) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def plot_metrics(runs: dict, path: str | os.PathLike) -> None:
    """runs: {label: records (see :func:`read_metrics`)} -> a PNG with the loss per step and, when
    any run was evaluated, its mAP per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = {label: [r for r in records if any(k.startswith("map@") for k in r)] for label, records in runs.items()}
    panels = 2 if any(maps.values()) else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), dpi=110, squeeze=False)
    for label, records in runs.items():
        steps = [(r["step"], r["loss"]) for r in records if "loss" in r and math.isfinite(r["loss"])]
        axes[0, 0].plot([s for s, _ in steps], [v for _, v in steps], linewidth=1, label=label)
        curves = [r for r in maps[label] if "kept_step" not in r]
        for on in dict.fromkeys(r.get("on", "query") for r in curves):  # validation and query: one curve each
            points = [r for r in curves if r.get("on", "query") == on]
            key = next(k for k in points[0] if k.startswith("map@"))
            axes[0, 1].plot([r["epoch"] for r in points], [r[key] for r in points], marker="o",
                            label=f"{label} ({key}{', validation' if on == 'validation' else ''})")
        for r in (r for r in maps[label] if "kept_step" in r):  # --keep best: the kept model on the queries
            key = next(k for k in r if k.startswith("map@"))
            axes[0, 1].plot([r["kept_epoch"]], [r[key]], marker="*", markersize=12, linestyle="none",
                            label=f"{label} kept ({key})")
    axes[0, 0].set(xlabel="step", ylabel="training loss", title="Loss")
    if panels == 2:
        axes[0, 1].set(xlabel="epoch", ylabel="mAP", title="Retrieval mAP")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
