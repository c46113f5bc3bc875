"""Hashing: the task that trains WCH, NSH or CIBHash, and :class:`Trainer`, the loop that drives it.

``Trainer(config, out_dir).fit()`` trains (seeded, resumable to the bit, data-parallel under
``torchrun``: see :mod:`hashkern.training.loop`); ``evaluate()`` returns the mAP, P@H<=2 and the
precision-recall curve of the trained codes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hashkern.models import BACKBONES, METHODS, build_model
from hashkern.training.config import LoopConfig, option
from hashkern.training.data import DATASETS, load_split, make_transforms
from hashkern.training.evaluate import METRICS, encode_images, evaluate_codes, subset_database
from hashkern.training.loop import Task, TrainingLoop, epoch_order

__all__ = ["TrainConfig", "HashingTask", "Trainer", "epoch_order"]


@dataclass
class TrainConfig(LoopConfig):
    method: str = option("nsh", help=f"one of {', '.join(METHODS)}", required=True)
    dataset: str = option("fashion-mnist", help=f"dataset: {', '.join(DATASETS)}", flag="data")
    backbone: str = option("small-vit", help="backbone", choices=BACKBONES)
    weights: str | None = option(None, help="local weights file for vit-b16 (.npz or state dict) / vgg16 "
                                 "(fmnist-vit: --backbone-arg pretrained=true loads the weights shipped with hashkern)")
    bits: int = option(64, help="code length K")
    backbone_lr_scale: float = option(1.0, help="the backbone learns at lr × this (e.g. 0.1 to fine-tune "
                                      "pretrained weights gently)")
    query_per_class: int = option(100, help="split: queries per class")
    train_per_class: int = option(500, help="split: training images per class")
    database_size: int | None = option(None, help="evaluate on a seeded subset of the database (None: all)")
    topk: int = option(1000, help="mAP@k cut-off")
    eval_every: int = option(0, help="epochs between mAP evaluations (0: only at the end)")
    model_kwargs: dict = option(factory=dict, flag="model-arg",
                                help="extra model argument, e.g. num_positives=4 (JSON values); repeatable")

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {tuple(METHODS)}")
        for name in ("bits", "epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        super().__post_init__()
        if isinstance(self.backbone_lr_scale, bool) or not isinstance(self.backbone_lr_scale, (int, float)) \
                or not 0 <= self.backbone_lr_scale < float("inf"):
            raise ValueError(f"backbone_lr_scale must be a finite number >= 0, got {self.backbone_lr_scale!r}")


class HashingTask(Task):
    """A hashing model trained on a split's training images; ``split`` (a :class:`~hashkern.training.data.Split`)
    replaces the one the config describes."""

    def __init__(self, config: TrainConfig, split=None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config, self.split = config, split

    def build(self, device: torch.device, resuming: bool) -> None:
        config = self.config
        self.split = self.split or load_split(config.dataset, config.data_dir, seed=config.seed,
                                              query_per_class=config.query_per_class,
                                              train_per_class=config.train_per_class)
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
        self.augment, self.normalize = make_transforms(config.dataset, self.model.backbone.input_size, channels)

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

    def end_of_epoch(self, loop: TrainingLoop, epoch: int, seconds: float) -> None:
        """The mAP every ``eval_every`` epochs (not after the last: the caller evaluates the final model)."""
        if self.config.eval_every and epoch % self.config.eval_every == 0 and loop.step < loop.total_steps:
            loop.history["eval"].append({"step": loop.step, **self.evaluate(metrics=("map",))})
            loop.log(f"epoch {epoch}: {loop.history['eval'][-1]}")

    def encode(self, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """images [n, C, H, W] uint8 -> codes [n, K] ±1 (float32, on CPU)."""
        self.model.eval()
        return encode_images(self.model.encode, images, normalize=self.normalize, device=self.device,
                             batch_size=batch_size)

    def evaluate(self, metrics=METRICS) -> dict:
        """mAP@topk, P@H<=2 and the PR curve (as ``metrics`` asks) of the split's queries against its database."""
        db = subset_database(self.split.database, self.config.database_size, self.config.seed)
        return evaluate_codes(q_codes=self.encode(self.split.query.images), q_labels=self.split.query.labels,
                              db_codes=self.encode(db.images), db_labels=db.labels, topk=self.config.topk,
                              metrics=metrics)


class Trainer(TrainingLoop):
    """``Trainer(config, out_dir).fit()`` trains a hashing model, checkpoints to ``out_dir/last.pt``,
    returns the history; ``evaluate()`` measures the codes on the split's queries and database.

    ``resume=True`` continues from ``out_dir/last.pt``; ``max_steps`` stops early (the run can be resumed).
    """

    def __init__(self, config: TrainConfig, out_dir: str, *, split=None, **kwargs):
        super().__init__(HashingTask(config, split), out_dir, **kwargs)

    @property
    def split(self):
        return self.task.split

    @property
    def normalize(self):
        return self.task.normalize

    def encode(self, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """images [n, C, H, W] uint8 -> codes [n, K] ±1 (float32, on CPU)."""
        return self.task.encode(images, batch_size)

    def evaluate(self, metrics=METRICS) -> dict:
        """:meth:`HashingTask.evaluate` of the model as trained so far."""
        return self.task.evaluate(metrics)
