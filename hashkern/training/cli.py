"""``hashkern info | train | eval | encode | export | plot | pretrain | bench | demo``: the command line (console script
``hashkern = hashkern.training.cli:main``; ``python -m hashkern``). The train and pretrain flags are
generated from :class:`~hashkern.training.train.TrainConfig` and
:class:`~hashkern.training.pretrain.PretrainConfig` (:mod:`hashkern.training.config`), plus ``--config FILE``."""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

from hashkern import _info
from hashkern._version import __version__
from hashkern.training.config import add_config_arguments, config_from_args
from hashkern.training.pretrain import PretrainConfig
from hashkern.training.train import TrainConfig


def _add_run_args(p: argparse.ArgumentParser, out_help: str, out_default: str | None) -> None:
    """The flags of a run that are not part of its config (and so not in its checkpoint)."""
    p.add_argument("--out", default=out_default, help=out_help)
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if --out has a checkpoint")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resume later)")
    p.add_argument("--device", default=None)
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes decoding image files ahead "
                   "(imagelist / imagefolder; results do not depend on it)")


def _check_max_steps(args) -> None:
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}")


def cmd_train(args) -> int:
    from hashkern import distributed as hdist
    from hashkern.training.evaluate import plot_pr, write_json
    from hashkern.training.train import Trainer

    cfg = config_from_args(TrainConfig, args, args.parser)
    _check_max_steps(args)
    hdist.init_from_env()
    out = args.out or os.path.join("runs", f"{cfg.method}-{cfg.bits}")
    trainer = Trainer(cfg, out, device=args.device, resume=args.resume, overwrite=args.overwrite,
                      progress=not args.no_progress, workers=args.workers)
    history = trainer.fit(max_steps=args.max_steps)
    if hdist.rank() != 0:
        return 0
    losses = history["loss"]
    print(f"trained {trainer.step}/{trainer.total_steps} steps; loss {losses[0]:.4f} -> {losses[-1]:.4f}; "
          f"checkpoint {trainer.checkpoint_path}")
    if trainer.step == trainer.total_steps:
        if cfg.keep == "best":  # the kept model, measured on the queries
            from hashkern.training.checkpoint_eval import evaluate_checkpoint

            result = evaluate_checkpoint(trainer.best_path, split=trainer.split, device=trainer.device)
            print(f"kept {trainer.best_path} (step {result['step']}, the best {trainer.task.selection_queries} "
                  f"mAP@{cfg.topk})")
        else:
            result = trainer.evaluate()
        write_json(os.path.join(out, "eval.json"), result)
        kept = {"kept_step": result["step"], "kept_epoch": result["step"] / trainer.steps_per_epoch} \
            if cfg.keep == "best" else {}
        trainer.log_metrics({"step": trainer.step, "epoch": cfg.epochs, "on": "query", **kept,
                             f"map@{cfg.topk}": result[f"map@{cfg.topk}"], "p@r2": result["p@r2"]})
        plot_pr({f"{cfg.method} {cfg.bits} bits": result["pr"]}, os.path.join(out, "pr.png"))
        print(f"mAP@{cfg.topk} {result[f'map@{cfg.topk}']:.4f}  P@H<=2 {result['p@r2']:.4f}  "
              f"({os.path.join(out, 'eval.json')}, pr.png)")
    return 0


def cmd_eval(args) -> int:
    from hashkern.training.checkpoint_eval import evaluate_checkpoint
    from hashkern.training.evaluate import plot_pr, write_json

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


SPLIT_PARTS = ("query", "train", "database", "validation")  # `encode --data` names for the run's own split


def _encode_data(args, state: dict):
    """(images, labels, ids) of ``--data``: a part of the checkpoint's split, a list file or an image folder."""
    import torch

    from hashkern.training.data.datasets import ImageSet, image_list
    from hashkern.training.data.streamed import ImageFiles, read_image_folder
    from hashkern.training.evaluate import subset_database
    from hashkern.training.train import TrainConfig, config_split

    if "train_config" not in state:  # an export written before exports carried their run's config
        if args.data in SPLIT_PARTS:
            raise ValueError(f"--data {args.data} needs the run's split, which {args.checkpoint!r} does not record: "
                             "pass its checkpoint, a list file or an image folder")
        if args.image_size is None:
            raise ValueError(f"{args.checkpoint!r} does not record the size its run decoded image files at: "
                             "pass --image-size")
        state = {"train_config": {"method": state["model_config"]["method"]}}
    cfg = TrainConfig.from_dict(state["train_config"])
    size = args.image_size or cfg.image_size
    if args.data in SPLIT_PARTS:
        part = getattr(config_split(replace(cfg, image_size=size), args.data_dir), args.data)
        if part is None:
            raise ValueError(f"--data validation: the {cfg.dataset} split has no validation queries")
        if args.data == "database":  # the database `hashkern eval` measures
            part = subset_database(part, cfg.database_size, cfg.seed)
    elif os.path.isdir(args.data):
        paths, labels, _ = read_image_folder(args.data)
        part = ImageSet(ImageFiles(args.data, paths, size, cfg.image_resize), labels)
    else:
        part = image_list(args.data_dir or os.path.dirname(os.path.abspath(args.data)), args.data, size,
                          cfg.image_resize)
    ids = part.images.paths if isinstance(part.images, ImageFiles) else torch.arange(len(part))
    return part.images, part.labels, ids


def cmd_encode(args) -> int:
    from hashkern.training.retrieval import encode_to_file, load_model, run_record

    device = args.device or "cpu"
    model, preprocess = load_model(args.checkpoint, device)
    images, labels, ids = _encode_data(args, run_record(args.checkpoint))
    codes = encode_to_file(model, preprocess, images, labels, ids, args.out, device=device,
                           batch_size=args.batch_size, workers=args.workers)
    print(f"encoded {codes.shape[0]} images to {codes.shape[1]}-bit codes: {args.out}")
    return 0


def cmd_export(args) -> int:
    from hashkern.training.retrieval import export_model

    sha = export_model(args.checkpoint, args.out)
    print(f"wrote {args.out} (SHA-256 {sha}) and {args.out}.json")
    return 0


def cmd_plot(args) -> int:
    from hashkern.training.runlog import plot_metrics, read_metrics

    runs = {}
    for run in args.runs:
        path = os.path.join(run, "metrics.jsonl") if os.path.isdir(run) else run
        runs[os.path.basename(os.path.dirname(os.path.abspath(path)))] = read_metrics(path)
    out = args.out or os.path.join(args.runs[0] if os.path.isdir(args.runs[0]) else ".", "curves.png")
    plot_metrics(runs, out)
    print(f"wrote {out}")
    return 0


def cmd_pretrain(args) -> int:
    import torch

    from hashkern.training.pretrain import Pretrainer

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive int, got {args.threads}")
        torch.set_num_threads(args.threads)
    cfg = config_from_args(PretrainConfig, args, args.parser)
    _check_max_steps(args)
    trainer = Pretrainer(cfg, args.out, device=args.device, resume=args.resume, overwrite=args.overwrite,
                         progress=not args.no_progress, workers=args.workers)
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
    raise FileNotFoundError("the benchmarks are not part of the installed package: from a clone of the repository, "
                            "run `python -m benchmarks` (`python -m benchmarks --help` lists them)")


def cmd_demo(args) -> int:
    from hashkern.training.demo import run_demo

    run_demo(out=args.out, bits=args.bits, epochs=args.epochs, data_dir=args.data_dir, device=args.device,
             progress=not args.no_progress, workers=args.workers)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hashkern", description="Deep unsupervised hashing: train, evaluate, "
                                     "benchmark.")
    parser.add_argument("--version", action="version", version=f"hashkern {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, the compiled kernels, and what backend='auto' uses on each device"
                   ).set_defaults(func=lambda args: _info.main())
    p = sub.add_parser("train", help="train WCH / NSH / CIBHash (torchrun for several processes)")
    add_config_arguments(p, TrainConfig)
    _add_run_args(p, "run folder (default runs/<method>-<bits>)", None)
    p.add_argument("--no-progress", action="store_true")
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
    p = sub.add_parser("encode", help="encode images with a trained model: packed codes (.pt) or a HammingIndex "
                       "(.hidx)")
    p.add_argument("checkpoint", help="a checkpoint (last.pt) or an export")
    p.add_argument("--data", required=True, help="query | train | database | validation (the run's split), a "
                   "DeepHash-pytorch list file, or an ImageFolder directory")
    p.add_argument("--data-dir", default=None, help="image root (default: the run's, or the list file's folder)")
    p.add_argument("--image-size", type=int, default=None, help="decode size of image files (default: the run's; "
                   "needed with an export that does not record it)")
    p.add_argument("--out", required=True, help="codes.pt (packed codes, labels, ids) or index.hidx "
                   "(+ index.meta.pt with labels and ids)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes decoding image files")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_encode)
    p = sub.add_parser("export", help="a checkpoint's model weights as a plain state dict (torch.load with "
                       "weights_only=True; safetensors for *.safetensors) + <out>.json")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("plot", help="loss and mAP curves of runs' metrics.jsonl as a PNG")
    p.add_argument("runs", nargs="+", help="run folders or metrics.jsonl files")
    p.add_argument("--out", default=None, help="default: <first run>/curves.png")
    p.set_defaults(func=cmd_plot)
    p = sub.add_parser("pretrain", help="self-supervised pretraining of the demo backbone (Fashion-MNIST "
                       "training split, no labels)")
    add_config_arguments(p, PretrainConfig)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (the result is bit-identical for a "
                   "given thread count)")
    _add_run_args(p, "run folder (checkpoint last.pt)", os.path.join("runs", "pretrain"))
    p.add_argument("--export", default=None, help="where to write the backbone weights at the end "
                   "(default <out>/backbone.pt)")
    p.add_argument("--no-progress", action="store_true", help="one line per epoch instead of a progress bar")
    p.set_defaults(func=cmd_pretrain)
    p = sub.add_parser("bench", help="says how to run the kernel benchmarks (python -m benchmarks, from a clone)")
    p.add_argument("--only", nargs="*", default=None, help=argparse.SUPPRESS)  # what it took before it moved
    p.add_argument("extra", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
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
    parser = build_parser()
    args = parser.parse_args(argv)
    args.parser = parser._subparsers._group_actions[0].choices[args.command]  # for config_from_args' errors
    try:
        return args.func(args)
    except (OSError, ValueError, TypeError, FloatingPointError) as exc:
        # User errors (missing data, corrupt checkpoint, bad weights, unknown method, unwritable
        # output, full disk, a diverged run): one clear line, exit status 2. HASHKERN_DEBUG=1 shows
        # the traceback.
        if os.environ.get("HASHKERN_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"hashkern {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
