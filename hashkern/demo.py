"""``hashkern demo``: NSH, WCH and CIBHash with a small ViT against LSH and ITQ on Fashion-MNIST.

Short schedule on a CPU (minutes), a longer and larger one on a GPU. Prints a Markdown table of
mAP@1000 per method and code length, and writes ``results.json``, ``table.md`` and ``pr.png``.
"""
from __future__ import annotations

import os
import time

import torch

from hashkern.data import load_split
from hashkern.evaluate import evaluate_codes, plot_pr, subset_database, write_json
from hashkern.models import ITQ, LSH
from hashkern.train import TrainConfig, Trainer

DEEP = ("nsh", "wch", "cibhash")
SHALLOW = {"lsh": LSH, "itq": ITQ}
NAMES = {"nsh": "NSH", "wch": "WCH", "cibhash": "CIBHash", "lsh": "LSH", "itq": "ITQ"}

# (epochs, batch, database size, small-ViT, head width, lr) per device kind.
SCHEDULES = {
    "cpu": dict(epochs=8, batch_size=64, database_size=10_000, lr=1e-3, hidden=256,
                backbone=dict(patch_size=7, embed_dim=64, depth=3, num_heads=4)),
    "cuda": dict(epochs=40, batch_size=128, database_size=None, lr=5e-4, hidden=1024,
                 backbone=dict(patch_size=4, embed_dim=192, depth=6, num_heads=6)),
}


def _epoch_means(losses: list[float], steps_per_epoch: int) -> list[float]:
    return [sum(losses[i:i + steps_per_epoch]) / len(losses[i:i + steps_per_epoch])
            for i in range(0, len(losses), steps_per_epoch)]


def format_table(results: dict, bits: list[int], topk: int) -> str:
    lines = [f"| method | " + " | ".join(f"mAP@{topk} {b} bits" for b in bits) + f" | P@H≤2 {bits[-1]} bits |",
             "|---|" + "---:|" * (len(bits) + 1)]
    for key in ("lsh", "itq", *DEEP):
        if key not in results:
            continue
        row = results[key]
        cells = [f"{row[str(b)]['map']:.3f}" for b in bits]
        lines.append(f"| {NAMES[key]} | " + " | ".join(cells) + f" | {row[str(bits[-1])]['p@r2']:.3f} |")
    return "\n".join(lines)


def verdict(results: dict, bits: list[int]) -> list[str]:
    """Plain sentences on what beats what (the README quotes them)."""
    out = []
    for b in bits:
        scores = {k: results[k][str(b)]["map"] for k in results}
        best = max(scores, key=scores.get)
        out.append(f"{b} bits: best is {NAMES[best]} ({scores[best]:.3f}); " + ", ".join(
            f"{NAMES[k]} {'beats' if scores[k] > scores['lsh'] else 'does NOT beat'} LSH and "
            f"{'beats' if scores[k] > scores['itq'] else 'does NOT beat'} ITQ" for k in DEEP if k in scores))
    return out


def run_demo(out: str = "runs/demo", bits=(16, 32, 64), epochs: int | None = None, data_dir: str | None = None,
             device: str | None = None, methods=DEEP, progress: bool = True, split=None, log=print,
             schedule: dict | None = None, model_kwargs: dict | None = None) -> dict:
    """Train and evaluate everything; ``schedule`` overrides entries of SCHEDULES, ``model_kwargs`` per method."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sched = {**SCHEDULES["cuda" if dev.type == "cuda" else "cpu"], **(schedule or {})}
    if epochs is not None:
        sched["epochs"] = epochs
    bits = sorted(bits)
    start = time.time()
    split = split or load_split("fashion-mnist", data_dir, seed=0)
    db = subset_database(split.database, sched["database_size"], 0)
    topk = min(1000, len(db))
    log(f"hashkern demo on {dev}: Fashion-MNIST, {len(split.query)} queries, {len(split.train)} training images, "
        f"{len(db)} database images; {sched['epochs']} epochs of batch {sched['batch_size']}, small ViT "
        f"{sched['backbone']}")
    results: dict = {}
    curves = {}
    for b in bits:
        for key, cls in SHALLOW.items():
            t = time.time()
            coder = cls(b).fit(split.train.images)
            r = evaluate_codes(coder.encode(split.query.images), split.query.labels, coder.encode(db.images),
                               db.labels, topk=topk)
            results.setdefault(key, {})[str(b)] = {"map": r[f"map@{topk}"], "p@r2": r["p@r2"],
                                                   "seconds": time.time() - t}
            if b == bits[-1]:
                curves[NAMES[key]] = r["pr"]
        for key in methods:
            cfg = TrainConfig(method=key, bits=b, epochs=sched["epochs"], batch_size=sched["batch_size"],
                              lr=sched["lr"], database_size=sched["database_size"], topk=topk, data_dir=data_dir,
                              backbone_kwargs=sched["backbone"],
                              model_kwargs={"hidden": sched["hidden"], **(model_kwargs or {}).get(key, {})})
            trainer = Trainer(cfg, os.path.join(out, f"{key}-{b}"), device=dev, overwrite=True, split=split,
                              progress=progress, log=log)
            t = time.time()
            history = trainer.fit()
            r = trainer.evaluate()
            epoch_loss = _epoch_means(history["loss"], trainer.steps_per_epoch)
            results.setdefault(key, {})[str(b)] = {"map": r[f"map@{topk}"], "p@r2": r["p@r2"],
                                                   "epoch_loss": epoch_loss, "seconds": time.time() - t}
            log(f"  {NAMES[key]:8s} {b:3d} bits: loss {epoch_loss[0]:.3f} -> {epoch_loss[-1]:.3f}, "
                f"mAP@{topk} {r[f'map@{topk}']:.3f}  ({time.time() - t:.0f}s)")
            if b == bits[-1]:
                curves[NAMES[key]] = r["pr"]
    table = format_table(results, bits, topk)
    lines = verdict(results, bits)
    elapsed = time.time() - start
    log("\n" + table + "\n")
    for line in lines:
        log(line)
    log(f"total {elapsed:.0f}s; wrote {out}/results.json, table.md, pr.png")
    write_json(os.path.join(out, "results.json"), {"device": str(dev), "schedule": sched, "topk": topk,
                                                  "database_size": len(db), "results": results,
                                                  "verdict": lines, "seconds": elapsed})
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table + "\n\n" + "\n".join(f"- {line}" for line in lines) + "\n")
    plot_pr(curves, os.path.join(out, "pr.png"), title=f"Fashion-MNIST, {bits[-1]} bits")
    return results
