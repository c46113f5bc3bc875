"""Training loop: seeded, resumable to the bit, optionally data-parallel under ``torchrun``.

Every step's randomness (batch order, augmentations, stochastic codes) is derived from
``(seed, step)``, so a run stopped after any checkpoint and resumed with ``--resume`` ends with
the same weights as an uninterrupted one. Checkpoints (:mod:`hashkern.checkpoint`) are written
to a temporary file and renamed into place, carry a SHA-256, and are checked against the model,
optimizer and scheduler before anything is loaded.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields

import torch

from hashkern import distributed as hdist
from hashkern.checkpoint import CHECKPOINT_VERSION, CheckpointError, check_fits, load_checkpoint, save_checkpoint
from hashkern.data import load_split, make_transforms
from hashkern.models import METHODS, build_model

__all__ = ["TrainConfig", "Trainer", "CheckpointError", "save_checkpoint", "load_checkpoint", "evaluate_checkpoint",
           "model_from_checkpoint", "epoch_order"]


class ConfigFromDict:
    """``from_dict``: a dataclass config from a plain dict (what checkpoints store); unknown keys refused."""

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        return cls(**d)


@dataclass
class TrainConfig(ConfigFromDict):
    method: str = "nsh"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    backbone: str = "small-vit"
    weights: str | None = None
    bits: int = 64
    epochs: int = 1
    batch_size: int = 64          # per process; the loss sees batch_size × world size
    lr: float = 1e-3
    backbone_lr_scale: float = 1.0  # the backbone's learning rate is lr × this (fine-tuning pretrained weights)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    seed: int = 0
    query_per_class: int = 100
    train_per_class: int = 500
    database_size: int | None = None   # evaluate on a seeded subset of the database (None: all)
    topk: int = 1000
    eval_every: int = 0           # epochs between mAP evaluations (0: only at the end)
    checkpoint_every: int = 0     # steps between checkpoints (0: at the end of every epoch)
    model_kwargs: dict = field(default_factory=dict)
    backbone_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {tuple(METHODS)}")
        for name in ("bits", "epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if isinstance(self.backbone_lr_scale, bool) or not isinstance(self.backbone_lr_scale, (int, float)) \
                or not 0 <= self.backbone_lr_scale < float("inf"):
            raise ValueError(f"backbone_lr_scale must be a finite number >= 0, got {self.backbone_lr_scale!r}")


def model_from_checkpoint(state: dict, path: str = "<checkpoint>") -> torch.nn.Module:
    """Rebuild the model of a checkpoint (no weights file is read: the checkpoint has the weights)."""
    try:
        model = build_model(load_weights=False, **state["model_config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path!r} has a model configuration this hashkern cannot build: "
                              f"{exc}") from exc
    check_fits(path, state, model)
    model.load_state_dict(state["model"])
    return model.eval()


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + 12_345) % (2 ** 62)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training set's order in ``epoch``: a permutation that depends only on (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(_step_seed(seed, -1 - epoch)))


def _lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:  # linear warm-up, then cosine to 0
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    return f


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


class Trainer:
    """``Trainer(config, out_dir).fit()`` trains, checkpoints to ``out_dir/last.pt``, returns the history.

    ``resume=True`` continues from ``out_dir/last.pt``; ``max_steps`` stops early (the run can be resumed).
    """

    def __init__(self, config: TrainConfig, out_dir: str, *, device: str | torch.device | None = None,
                 resume: bool = False, overwrite: bool = False, split=None, progress: bool = True, log=print):
        self.config, self.out_dir = config, out_dir
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.progress, self.log = progress, log
        self.checkpoint_path = os.path.join(out_dir, "last.pt")
        self.distributed = hdist.is_distributed()
        self.rank, self.world = hdist.rank(), hdist.world_size()
        if not resume and not overwrite and os.path.exists(self.checkpoint_path):
            raise FileExistsError(f"{self.checkpoint_path} exists: pass --resume to continue it, or --overwrite "
                                  "(or another --out) to start afresh")
        state = load_checkpoint(self.checkpoint_path) if resume else None
        if state is not None:
            saved = type(config).from_dict(state["train_config"])
            if saved != config:
                diff = {k: (v, getattr(config, k)) for k, v in asdict(saved).items() if getattr(config, k) != v}
                raise ValueError(f"--resume with a different configuration than the checkpoint's: {diff}")
        self._build(state, split)
        n = self.train_images.shape[0]
        self.global_batch = config.batch_size * self.world
        if n < self.global_batch:
            raise ValueError(f"the training set ({n} images) is smaller than one global batch ({self.global_batch})")
        self.steps_per_epoch = n // self.global_batch  # the last incomplete batch is dropped
        self.total_steps = self.steps_per_epoch * config.epochs
        self.optimizer = torch.optim.Adam(self._parameter_groups(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           _lr_lambda(self.total_steps, config.warmup_steps))
        self.step, self.history = 0, {"loss": [], "eval": []}
        if state is not None:
            check_fits(self.checkpoint_path, state, self.model, self.optimizer, self.scheduler)
            if state["step"] > self.total_steps:
                raise CheckpointError(f"checkpoint {self.checkpoint_path!r} is at step {state['step']}, beyond "
                                      f"this run's {self.total_steps} steps")
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.step, self.history = state["step"], state["history"]
        self.ddp = self.model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel
            self.ddp = DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda" else None)

    def _build(self, state: dict | None, split) -> None:
        """Sets the data (``split``, ``train_images``), ``model_config``, ``model``, ``augment``, ``normalize``."""
        config = self.config
        self.split = split or load_split(config.dataset, config.data_dir, seed=config.seed,
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
        self.model = build_model(load_weights=state is None, **self.model_config).to(self.device)
        self.augment, self.normalize = make_transforms(config.dataset, self.model.backbone.input_size, channels)

    def _parameter_groups(self) -> list:
        scale = getattr(self.config, "backbone_lr_scale", 1.0)
        if scale == 1.0:
            return [p for p in self.model.parameters() if p.requires_grad]
        backbone = {id(p) for p in self.model.backbone.parameters()}
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in trainable if id(p) not in backbone]},
                  {"params": [p for p in trainable if id(p) in backbone], "lr": self.config.lr * scale}]
        return [g for g in groups if g["params"]]

    def describe(self) -> str:
        return f"{self.config.method} {self.config.bits} bits"

    def end_of_epoch(self, epoch: int, seconds: float) -> None:
        """Called after each completed epoch (rank 0): the mAP every ``eval_every`` epochs."""
        if self.config.eval_every and epoch % self.config.eval_every == 0 and self.step < self.total_steps:
            self.history["eval"].append({"step": self.step, **self.evaluate(metrics=("map",))})
            self.log(f"epoch {epoch}: {self.history['eval'][-1]}")

    def state(self) -> dict:
        return {"format": "hashkern-checkpoint", "version": CHECKPOINT_VERSION, "train_config": asdict(self.config),
                "model_config": self.model_config, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "step": self.step, "history": self.history}

    def save(self) -> None:
        if self.rank == 0:
            os.makedirs(self.out_dir, exist_ok=True)  # the run folder is ours to create
            save_checkpoint(self.checkpoint_path, self.state())

    def batch(self, step: int):
        """The two augmented views of this process's share of global batch ``step``."""
        epoch, i = divmod(step, self.steps_per_epoch)
        order = epoch_order(self.train_images.shape[0], self.config.seed, epoch)
        start = i * self.global_batch + self.rank * self.config.batch_size
        idx = order[start:start + self.config.batch_size]
        images = self.train_images[idx].to(self.device, non_blocking=True)
        gen = torch.Generator().manual_seed(_step_seed(self.config.seed, step))
        return self.augment(images, gen)

    def train_step(self, step: int) -> float:
        self.model.train()
        view1, view2 = self.batch(step)
        torch.manual_seed(_step_seed(self.config.seed, step) + 1 + self.rank)  # stochastic codes (CIBHash)
        out = self.ddp(view1, view2)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        self.optimizer.step()
        self.scheduler.step()
        return float(out["loss"].detach())

    def fit(self, max_steps: int | None = None) -> dict:
        cfg, stop = self.config, self.total_steps if max_steps is None else min(self.total_steps, max_steps)
        every = cfg.checkpoint_every or self.steps_per_epoch
        bar = _progress(range(self.step, stop), stop - self.step, self.describe(),
                        self.progress and self.rank == 0)
        start = time.time()
        for step in bar:
            loss = self.train_step(step)
            self.step = step + 1
            self.history["loss"].append(loss)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss:.4f}", epoch=step // self.steps_per_epoch + 1)
            end_of_epoch = self.step % self.steps_per_epoch == 0
            if end_of_epoch and self.rank == 0:
                self.end_of_epoch(self.step // self.steps_per_epoch, time.time() - start)
            if self.step % every == 0 or self.step == stop:
                self.save()
        self.history["seconds"] = self.history.get("seconds", 0.0) + (time.time() - start)
        return self.history

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """images [n, C, H, W] uint8 -> codes [n, K] ±1 (float32, on CPU)."""
        self.model.eval()
        out = [self.model.encode(self.normalize(images[i:i + batch_size].to(self.device))).cpu()
               for i in range(0, images.shape[0], batch_size)]
        return torch.cat(out)

    def evaluate(self, metrics=("map", "p@r2", "pr")) -> dict:
        from hashkern.evaluate import evaluate_codes, subset_database
        db = subset_database(self.split.database, self.config.database_size, self.config.seed)
        return evaluate_codes(q_codes=self.encode(self.split.query.images), q_labels=self.split.query.labels,
                              db_codes=self.encode(db.images), db_labels=db.labels, topk=self.config.topk,
                              metrics=metrics)


def evaluate_checkpoint(path: str, *, data_dir: str | None = None, topk: int | None = None,
                        database_size: int | None = -1, device: str | None = None, split=None) -> dict:
    """Load a checkpoint, rebuild its data split, encode queries and database, return the metrics.

    ``data_dir`` overrides the path saved in the checkpoint; ``database_size=-1`` keeps the checkpoint's.
    """
    from hashkern.evaluate import evaluate_codes, subset_database

    state = load_checkpoint(path)
    cfg = TrainConfig.from_dict(state["train_config"])
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model_from_checkpoint(state, path).to(dev)
    split = split or load_split(cfg.dataset, data_dir or cfg.data_dir, seed=cfg.seed,
                                query_per_class=cfg.query_per_class, train_per_class=cfg.train_per_class)
    _, normalize = make_transforms(cfg.dataset, model.backbone.input_size, split.train.images.shape[1])
    db = subset_database(split.database, cfg.database_size if database_size == -1 else database_size, cfg.seed)

    @torch.no_grad()
    def encode(images):
        return torch.cat([model.encode(normalize(images[i:i + 1024].to(dev))).cpu()
                          for i in range(0, images.shape[0], 1024)])

    topk = topk or cfg.topk
    result = evaluate_codes(q_codes=encode(split.query.images), q_labels=split.query.labels,
                            db_codes=encode(db.images), db_labels=db.labels, topk=topk)
    return {"checkpoint": os.path.abspath(path), "method": cfg.method, "bits": cfg.bits, "dataset": cfg.dataset,
            "step": state["step"], "num_queries": len(split.query), "database_size": len(db), **result}
