"""Hashing: the task that trains WCH, NSH or CIBHash, and :class:`Trainer`, the loop that drives it.

``Trainer(config, out_dir).fit()`` trains (seeded, resumable to the bit, data-parallel under
``torchrun``: see :mod:`hashkern.training.loop`); ``evaluate()`` returns the mAP, P@H<=2 and the
precision-recall curve of the trained codes.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import torch

from hashkern._validation import check_float, check_int
from hashkern.models import BACKBONES, METHODS, build_model
from hashkern.training.checkpoint import CheckpointError, load_checkpoint
from hashkern.training.config import LoopConfig, option
from hashkern.training.data import DATASETS, load_split, make_transforms
from hashkern.training.data.augment import AUGMENTATIONS
from hashkern.training.data.streamed import RESIZE_MODES
from hashkern.training.evaluate import METRICS, encode_images, evaluate_codes, subset_database
from hashkern.training.loop import Task, TrainingLoop, epoch_order

__all__ = ["TrainConfig", "HashingTask", "Trainer", "config_split", "epoch_order", "KEEP"]

KEEP = ("last", "best")  # --keep: the model a run ends with


def _backbone_name(name: str) -> str:
    """``--backbone``'s value, refused by argparse unless a built-in backbone or ``timm:<name>``."""
    if name in BACKBONES or (isinstance(name, str) and name.startswith("timm:") and len(name) > 5):
        return name
    raise argparse.ArgumentTypeError(f"choose from {', '.join(BACKBONES)} or timm:<model name>, got {name!r}")


@dataclass
class TrainConfig(LoopConfig):
    method: str = option("nsh", help=f"one of {', '.join(METHODS)}", required=True)
    dataset: str = option("fashion-mnist", help=f"dataset: {', '.join(DATASETS)}", flag="data")
    backbone: str = option("small-vit", help=f"backbone: {', '.join(BACKBONES)}, or timm:<model name> (any timm "
                           "model; WCH needs one with patch tokens)", parse=lambda name: _backbone_name(name))
    weights: str | None = option(None, help="local weights file for vit-b16 (.npz or state dict) / vgg16 / timm:<name> "
                                 "(fmnist-vit: --backbone-arg pretrained=true loads the weights shipped with hashkern)",
                                 aliases=("backbone-weights",))
    image_size: int = option(224, help="imagelist / imagefolder: images are decoded at this size²")
    image_resize: str = option("stretch", help="imagelist / imagefolder: stretch (the whole image to size²) or "
                               "center-crop (the short side to size, then the centre square: WCH's code)",
                               choices=RESIZE_MODES)
    train_list: str | None = option(None, help="imagelist: training list file (default <data-dir>/train.txt)")
    query_list: str | None = option(None, help="imagelist: query list file (default <data-dir>/test.txt)")
    database_list: str | None = option(None, help="imagelist: database list file (default <data-dir>/database.txt)")
    bits: int = option(64, help="code length K")
    backbone_lr_scale: float = option(1.0, help="the backbone learns at lr × this (e.g. 0.1 to fine-tune "
                                      "pretrained weights gently)")
    query_per_class: int = option(100, help="split: queries per class")
    train_per_class: int = option(500, help="split: training images per class")
    database_size: int | None = option(None, help="evaluate on a seeded subset of the database (None: all)")
    topk: int = option(1000, help="mAP@k cut-off")
    eval_every: int = option(0, help="epochs between mAP evaluations (0: only at the end)")
    keep: str = option("last", help="the model the run ends with: last, or best: the best mAP@topk of the "
                       "--eval-every evaluations and the last epoch, on the protocol's validation queries where it "
                       "has them (cifar10-cibhash, as CIBHash's code), else on the queries (as WCH's code); "
                       "written to best.pt", choices=KEEP)
    augment: str = option("hashkern", help="two-view augmentations, all seeded per sample: hashkern (this "
                          "library's), cibhash or wch (the official code's pipeline and ImageNet normalisation)",
                          choices=tuple(AUGMENTATIONS))
    model_kwargs: dict = option(factory=dict, flag="model-arg",
                                help="extra model argument, e.g. num_positives=4 (JSON values); repeatable")

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {tuple(METHODS)}")
        try:
            _backbone_name(self.backbone)
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"backbone: {exc}") from None
        if self.image_resize not in RESIZE_MODES:
            raise ValueError(f"image_resize must be one of {RESIZE_MODES}, got {self.image_resize!r}")
        if self.keep not in KEEP:
            raise ValueError(f"keep must be one of {KEEP}, got {self.keep!r}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {tuple(AUGMENTATIONS)}, got {self.augment!r}")
        for name in ("bits", "query_per_class", "train_per_class", "topk", "image_size"):
            check_int(name, getattr(self, name), low=1)
        super().__post_init__()
        check_float("backbone_lr_scale", self.backbone_lr_scale, low=0)
        check_int("eval_every", self.eval_every, low=0)
        if self.keep == "best" and self.eval_every == 0:
            raise ValueError("keep='best' chooses among evaluations: set eval_every >= 1 (--eval-every)")
        if self.database_size is not None:
            check_int("database_size", self.database_size, low=1)
        if not isinstance(self.model_kwargs, dict):
            raise TypeError(f"model_kwargs must be a dict, got {type(self.model_kwargs).__name__}")


def config_split(config: TrainConfig, data_dir: str | None = None):
    """The data split ``config`` describes (``data_dir`` overrides its folder)."""
    lists = {"query": config.query_list, "train": config.train_list, "database": config.database_list}
    return load_split(config.dataset, data_dir or config.data_dir, seed=config.seed,
                      query_per_class=config.query_per_class, train_per_class=config.train_per_class,
                      image_size=config.image_size, image_resize=config.image_resize, lists=lists)


class HashingTask(Task):
    """A hashing model trained on a split's training images; ``split`` (a :class:`~hashkern.training.data.Split`)
    replaces the one the config describes."""

    def __init__(self, config: TrainConfig, split=None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config, self.split = config, split

    def build(self, device: torch.device, resuming: bool) -> None:
        config = self.config
        self.split = self.split or config_split(config)
        self.train_images = self.split.train.images
        channels = self.train_images.shape[1]
        bb = {"name": config.backbone, "weights": config.weights, **config.backbone_kwargs}
        if config.backbone == "small-vit":
            bb.setdefault("in_chans", channels)
            bb.setdefault("img_size", self.train_images.shape[-1])
        self.model_config = {"method": config.method, "nbits": config.bits, "backbone": bb, **config.model_kwargs}
        torch.manual_seed(config.seed)  # the initial weights
        self.model = build_model(load_weights=not resuming, **self.model_config).to(device)
        self.device = device
        self.augment, self.normalize = make_transforms(config.dataset, self.model.backbone.input_size, channels,
                                                       augment=config.augment)

    def parameter_groups(self) -> list:
        scale = self.config.backbone_lr_scale
        if scale == 1.0:
            return super().parameter_groups()
        backbone = {id(p) for p in self.model.backbone.parameters()}
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in trainable if id(p) not in backbone]},
                  {"params": [p for p in trainable if id(p) in backbone], "lr": self.config.lr * scale}]
        return [g for g in groups if g["params"]]

    def describe(self) -> str:
        return f"{self.config.method} {self.config.bits} bits"

    def end_of_epoch(self, loop: TrainingLoop, epoch: int, seconds: float) -> str | None:
        """The mAP every ``eval_every`` epochs. ``keep="best"``: also after the last epoch, on the selection
        queries, and returns ``best.pt`` (for the loop to write) when this model is the best so far;
        otherwise not after the last (the caller evaluates the final model)."""
        cfg, last = self.config, loop.step == loop.total_steps
        periodic = cfg.eval_every and epoch % cfg.eval_every == 0
        if cfg.keep == "best" and (periodic or last):
            on, key = self.selection_queries, f"map@{cfg.topk}"
            record = {"step": loop.step, "on": on, **self.evaluate(metrics=("map",), on=on)}
            loop.history["eval"].append(record)
            loop.log_metrics({"epoch": epoch, **record})
            chosen = self.chosen_evaluation(loop.history)
            loop.log(f"epoch {epoch}: {on} {key} {record[key]:.4f} (best {chosen[key]:.4f})")
            return best_path(loop.out_dir) if chosen is record else None
        if periodic and not last:
            loop.history["eval"].append({"step": loop.step, **self.evaluate(metrics=("map",))})
            loop.log_metrics({"epoch": epoch, **loop.history["eval"][-1]})
            loop.log(f"epoch {epoch}: {loop.history['eval'][-1]}")

    @property
    def selection_queries(self) -> str:
        """The queries ``keep="best"`` chooses on: "validation" when the split has them, else "query"."""
        return "validation" if self.split.validation is not None else "query"

    def chosen_evaluation(self, history: dict) -> dict | None:
        """The evaluation ``keep="best"`` keeps: the first of the best mAP@topk on the selection queries (ties
        keep the earlier model, as both official codes do), or None before any."""
        evals = [r for r in history["eval"] if r.get("on") == self.selection_queries]
        return max(evals, key=lambda r: r[f"map@{self.config.topk}"]) if evals else None  # max: first of equals

    def encode(self, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """images [n, C, H, W] uint8 -> codes [n, K] ±1 (float32, on CPU)."""
        self.model.eval()
        return encode_images(self.model.encode, images, normalize=self.normalize, device=self.device,
                             batch_size=batch_size)

    def evaluate(self, metrics=METRICS, on: str = "query") -> dict:
        """mAP@topk, P@H<=2 and the PR curve (as ``metrics`` asks) of the split's queries (``on="validation"``:
        its validation queries) against its database."""
        queries = {"query": self.split.query, "validation": self.split.validation}[on]
        if queries is None:
            raise ValueError(f"the {self.config.dataset} split has no validation queries")
        db = subset_database(self.split.database, self.config.database_size, self.config.seed)
        return evaluate_codes(q_codes=self.encode(queries.images), q_labels=queries.labels,
                              db_codes=self.encode(db.images), db_labels=db.labels, topk=self.config.topk,
                              metrics=metrics)


def best_path(out_dir: str) -> str:
    """Where a ``keep="best"`` run writes its best model (a checkpoint like ``last.pt``)."""
    return os.path.join(out_dir, "best.pt")


class Trainer(TrainingLoop):
    """``Trainer(config, out_dir).fit()`` trains a hashing model, checkpoints to ``out_dir/last.pt``,
    returns the history; ``evaluate()`` measures the codes on the split's queries and database.

    ``resume=True`` continues from ``out_dir/last.pt``; ``max_steps`` stops early (the run can be resumed).
    ``config.keep == "best"`` also writes ``out_dir/best.pt`` (see :meth:`HashingTask.end_of_epoch`); a run
    started afresh removes an earlier run's.
    """

    def __init__(self, config: TrainConfig, out_dir: str, *, split=None, **kwargs):
        super().__init__(HashingTask(config, split), out_dir, **kwargs)
        problem = None
        if self.rank == 0:  # the rank that writes best.pt
            try:
                if self.step == 0:
                    if os.path.lexists(self.best_path):
                        os.remove(self.best_path)  # an earlier run's: this run starts afresh
                elif config.keep == "best":
                    self._check_best_on_resume()
            except (OSError, CheckpointError) as exc:
                problem = exc
        self.raise_on_every_rank(problem)

    def _check_best_on_resume(self) -> None:
        """``best.pt`` must be the model of the evaluation the restored history chose. A run stopped between
        writing ``last.pt`` and ``best.pt`` (the only order it writes them in) is repaired from the restored
        state; any other mismatch is refused before training resumes."""
        chosen = self.task.chosen_evaluation(self.history)
        kept = load_checkpoint(self.best_path)["step"] if os.path.exists(self.best_path) else None
        if chosen is None and kept is not None:
            os.remove(self.best_path)  # no evaluation of this run chose it
        elif chosen is not None and kept != chosen["step"]:
            if chosen["step"] != self.step:
                raise CheckpointError(f"{self.best_path!r} is {'missing' if kept is None else f'of step {kept}'}, "
                                      f"but this run's history chose the model of step {chosen['step']}, which "
                                      "cannot be rebuilt: start the run afresh (--overwrite)")
            self.save(self.best_path)

    @property
    def split(self):
        return self.task.split

    @property
    def normalize(self):
        return self.task.normalize

    def encode(self, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """images [n, C, H, W] uint8 -> codes [n, K] ±1 (float32, on CPU)."""
        return self.task.encode(images, batch_size)

    @property
    def best_path(self) -> str:
        """``out_dir/best.pt``: the best model of a ``keep="best"`` run."""
        return best_path(self.out_dir)

    def evaluate(self, metrics=METRICS) -> dict:
        """:meth:`HashingTask.evaluate` of the model as trained so far."""
        return self.task.evaluate(metrics)
