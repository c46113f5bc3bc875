"""``hashkern info | train | eval | pretrain | bench | demo``: the command line (console script ``hashkern = hashkern.cli:main``)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from hashkern import _info
from hashkern._version import __version__
from hashkern.data import DATASETS
from hashkern.models import BACKBONES, METHODS
from hashkern.pretrain import PretrainConfig


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    p.add_argument("--data", default="fashion-mnist", help=f"dataset: {', '.join(DATASETS)}")
    p.add_argument("--data-dir", default=None, help="dataset folder (Fashion-MNIST default: "
                   "/usr/share/datasets/fashion-mnist)")
    p.add_argument("--backbone", default="small-vit", choices=BACKBONES)
    p.add_argument("--weights", default=None, help="local weights file for vit-b16 (.npz or state dict) / vgg16 "
                   "(fmnist-vit: --backbone-arg pretrained=true loads the weights shipped with hashkern)")
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64, help="per process (the loss sees it × world size)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--backbone-lr-scale", type=float, default=1.0,
                   help="the backbone learns at lr × this (e.g. 0.1 to fine-tune pretrained weights gently)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--topk", type=int, default=1000, help="mAP@k cut-off")
    p.add_argument("--query-per-class", type=int, default=100, help="split: queries per class")
    p.add_argument("--train-per-class", type=int, default=500, help="split: training images per class")
    p.add_argument("--database-size", type=int, default=None, help="evaluate on a seeded subset of the database")
    p.add_argument("--eval-every", type=int, default=0, help="epochs between mAP evaluations (0: at the end)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (0: every epoch)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra model argument, e.g. num_positives=4 (JSON values); repeatable")
    p.add_argument("--backbone-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra backbone argument, e.g. depth=6 (small-vit); repeatable")
    p.add_argument("--out", default=None, help="run folder (default runs/<method>-<bits>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if --out has a checkpoint")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resume later)")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")


def _kv(items: list[str], what: str) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--{what} expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def cmd_train(args) -> int:
    from hashkern import distributed as hdist
    from hashkern.evaluate import plot_pr, write_json
    from hashkern.train import TrainConfig, Trainer

    cfg = TrainConfig(method=args.method, dataset=args.data, data_dir=args.data_dir, backbone=args.backbone,
                      weights=args.weights, bits=args.bits, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, backbone_lr_scale=args.backbone_lr_scale, weight_decay=args.weight_decay,
                      warmup_steps=args.warmup_steps, seed=args.seed,
                      topk=args.topk, query_per_class=args.query_per_class,
                      train_per_class=args.train_per_class, database_size=args.database_size, eval_every=args.eval_every,
                      checkpoint_every=args.checkpoint_every, model_kwargs=_kv(args.model_arg, "model-arg"),
                      backbone_kwargs=_kv(args.backbone_arg, "backbone-arg"))
    hdist.init_from_env()
    out = args.out or os.path.join("runs", f"{cfg.method}-{cfg.bits}")
    trainer = Trainer(cfg, out, device=args.device, resume=args.resume, overwrite=args.overwrite,
                      progress=not args.no_progress)
    history = trainer.fit(max_steps=args.max_steps)
    if hdist.rank() != 0:
        return 0
    losses = history["loss"]
    print(f"trained {trainer.step}/{trainer.total_steps} steps; loss {losses[0]:.4f} -> {losses[-1]:.4f}; "
          f"checkpoint {trainer.checkpoint_path}")
    if trainer.step == trainer.total_steps:
        result = trainer.evaluate()
        write_json(os.path.join(out, "eval.json"), result)
        plot_pr({f"{cfg.method} {cfg.bits} bits": result["pr"]}, os.path.join(out, "pr.png"))
        print(f"mAP@{cfg.topk} {result[f'map@{cfg.topk}']:.4f}  P@H<=2 {result['p@r2']:.4f}  "
              f"({os.path.join(out, 'eval.json')}, pr.png)")
    return 0


def cmd_eval(args) -> int:
    from hashkern.evaluate import plot_pr, write_json
    from hashkern.train import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir, topk=args.topk,
                                 database_size=args.database_size, device=args.device)
    stem = os.path.splitext(args.checkpoint)[0]
    json_path, png_path = args.json or stem + "-eval.json", args.plot or stem + "-pr.png"
    write_json(json_path, result)
    plot_pr({f"{result['method']} {result['bits']} bits": result["pr"]}, png_path)
    k = next(key for key in result if key.startswith("map@"))
    print(f"{result['method']} {result['bits']} bits on {result['dataset']} ({result['num_queries']} queries, "
          f"{result['database_size']} database): {k} {result[k]:.4f}  P@H<=2 {result['p@r2']:.4f}")
    print(f"wrote {json_path} and {png_path}")
    return 0


def cmd_pretrain(args) -> int:
    import torch

    from hashkern.pretrain import Pretrainer

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive int, got {args.threads}")
        torch.set_num_threads(args.threads)
    cfg = PretrainConfig(data_dir=args.data_dir, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         temperature=args.temperature, seed=args.seed, checkpoint_every=args.checkpoint_every)
    trainer = Pretrainer(cfg, args.out, device=args.device, resume=args.resume, overwrite=args.overwrite,
                         progress=not args.no_progress)
    print(f"pretraining on {len(trainer.train_images)} unlabelled training images, {trainer.total_steps} steps "
          f"({torch.get_num_threads()} thread(s)); checkpoint {trainer.checkpoint_path}", flush=True)
    history = trainer.fit(max_steps=args.max_steps)
    print(f"pretrained {trainer.step}/{trainer.total_steps} steps in {history['seconds']:.0f}s; "
          f"loss {history['loss'][0]:.4f} -> {history['loss'][-1]:.4f}")
    if trainer.step == trainer.total_steps:
        export = args.export or os.path.join(args.out, "backbone.pt")
        print(f"backbone weights {export}  SHA-256 {trainer.export_backbone(export)}")
    return 0


def cmd_bench(args) -> int:
    root = Path(__file__).resolve().parent.parent / "benchmarks"
    scripts = sorted(root.glob("bench_*.py")) if root.is_dir() else []
    if not scripts:
        raise FileNotFoundError(f"no benchmarks/bench_*.py next to the package ({root}); run from a clone of the repo")
    if args.only:
        scripts = [s for s in scripts if s.stem in {f"bench_{o}" for o in args.only} | set(args.only)]
        if not scripts:
            raise ValueError(f"no benchmark named {args.only}")
    status = 0
    for script in scripts:
        print(f"== {script.stem}", flush=True)
        cmd = [sys.executable, "-m", f"benchmarks.{script.stem}", *args.extra]
        status |= subprocess.call(cmd, cwd=root.parent)
    return status


def cmd_demo(args) -> int:
    from hashkern.demo import run_demo

    run_demo(out=args.out, bits=args.bits, epochs=args.epochs, data_dir=args.data_dir, device=args.device,
             progress=not args.no_progress, workers=args.workers)
    return 0


def build_parser() -> argparse.ArgumentParser:
    pretrain_defaults = PretrainConfig()
    parser = argparse.ArgumentParser(prog="hashkern", description="Deep unsupervised hashing: train, evaluate, "
                                     "benchmark.")
    parser.add_argument("--version", action="version", version=f"hashkern {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, the compiled kernels, and what backend='auto' uses on each device"
                   ).set_defaults(func=lambda args: _info.main())
    p = sub.add_parser("train", help="train WCH / NSH / CIBHash (torchrun for several processes)")
    _add_train_args(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="evaluate a checkpoint: mAP@k, P@H<=2, PR plot and JSON")
    p.add_argument("checkpoint")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--topk", type=int, default=None)
    p.add_argument("--database-size", type=int, default=-1, help="default: the training run's")
    p.add_argument("--json", default=None, help="default: <checkpoint>-eval.json")
    p.add_argument("--plot", default=None, help="default: <checkpoint>-pr.png")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("pretrain", help="self-supervised pretraining of the demo backbone (Fashion-MNIST "
                       "training split, no labels)")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (default /usr/share/datasets/fashion-mnist)")
    p.add_argument("--epochs", type=int, default=pretrain_defaults.epochs)
    p.add_argument("--batch-size", type=int, default=pretrain_defaults.batch_size)
    p.add_argument("--lr", type=float, default=pretrain_defaults.lr)
    p.add_argument("--temperature", type=float, default=pretrain_defaults.temperature, help="NT-Xent temperature")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (the result is bit-identical for a "
                   "given thread count)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (0: every epoch)")
    p.add_argument("--out", default=os.path.join("runs", "pretrain"), help="run folder (checkpoint last.pt)")
    p.add_argument("--export", default=None, help="where to write the backbone weights at the end "
                   "(default <out>/backbone.pt)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if --out has a checkpoint")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resume later)")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true", help="one line per epoch instead of a progress bar")
    p.set_defaults(func=cmd_pretrain)
    p = sub.add_parser("bench", help="run the kernel benchmarks (benchmarks/bench_*.py)")
    p.add_argument("--only", nargs="*", default=None, help="benchmark names, e.g. hamming")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="arguments passed on to each benchmark")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("demo", help="NSH, WCH, CIBHash vs LSH, ITQ on Fashion-MNIST with a small ViT")
    p.add_argument("--out", default=os.path.join("runs", "demo"))
    p.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--epochs", type=int, default=None, help="default: sized to the device")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--workers", type=int, default=None,
                   help="processes training side by side on a CPU (default: one per core; 1: one after another)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, TypeError) as exc:
        # User errors (missing data, corrupt checkpoint, bad weights, unknown method, unwritable
        # output): one clear line, exit status 2. HASHKERN_DEBUG=1 shows the traceback.
        if os.environ.get("HASHKERN_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"hashkern {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
