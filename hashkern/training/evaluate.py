"""Evaluation of codes: mAP@k, precision within Hamming radius 2, precision-recall curves, JSON and PNG."""
from __future__ import annotations

import json
import os

import torch

from hashkern._io import atomic_write
from hashkern.metrics import mean_average_precision, precision_at_radius, precision_recall_curve

METRICS = ("map", "p@r2", "pr")


@torch.no_grad()
def encode_images(encode, images: torch.Tensor, *, normalize, device, batch_size: int = 1024) -> torch.Tensor:
    """``encode(normalize(chunk))`` over ``images`` uint8 [n, C, H, W] in chunks of ``batch_size`` on ``device``
    -> [n, D] float32 on the CPU (D: what ``encode`` returns per image, e.g. K ±1 codes or features)."""
    return torch.cat([encode(normalize(images[i:i + batch_size].to(device))).float().cpu()
                      for i in range(0, images.shape[0], batch_size)])


def subset_database(database, size: int | None, seed: int = 0):
    """A seeded random subset of ``size`` database images (all of them when ``size`` is None or larger)."""
    if size is None or size >= len(database):
        return database
    if size < 1:
        raise ValueError(f"database_size must be >= 1, got {size}")
    gen = torch.Generator().manual_seed(int(seed) + 77)
    return database.subset(torch.randperm(len(database), generator=gen)[:size].sort().values)


def evaluate_codes(*, q_codes: torch.Tensor, q_labels: torch.Tensor, db_codes: torch.Tensor,
                   db_labels: torch.Tensor, topk: int | None, metrics=METRICS) -> dict:
    """q_codes [nq, K], db_codes [N, K] ±1 -> {"map@k", "p@r2", "pr": {"precision", "recall"}} (as asked).

    Keyword arguments only, like the metrics; ``topk=None`` is the whole database ("map@all");
    "pr" is the curve over Hamming radii."""
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {METRICS}")
    data = dict(q_codes=q_codes, db_codes=db_codes, q_labels=q_labels, db_labels=db_labels)
    out = {}
    if "map" in metrics:
        out[f"map@{'all' if topk is None else topk}"] = mean_average_precision(**data, topk=topk)
    if "p@r2" in metrics:
        out["p@r2"] = precision_at_radius(**data, r=2)
    if "pr" in metrics:
        _, precision, recall = precision_recall_curve(**data)
        out["pr"] = {"precision": precision.tolist(), "recall": recall.tolist()}
    return out


def write_json(path: str, data: dict) -> None:
    """Atomic JSON write (:func:`hashkern._io.atomic_write`); creates the folder, as run outputs go to new folders."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:
        f.write(json.dumps(data, indent=2).encode())


def plot_pr(curves: dict, path: str, title: str = "Precision-recall (Hamming ranking)") -> None:
    """curves: {label: {"precision": [...], "recall": [...]}} -> a PNG at ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=110)
    for label, pr in curves.items():
        ax.plot(pr["recall"], pr["precision"], marker=".", markersize=3, linewidth=1.2, label=label)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
