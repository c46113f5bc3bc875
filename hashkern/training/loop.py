"""The training loop: seeded, resumable to the bit, optionally data-parallel under ``torchrun``.

The loop knows nothing of hashing or pretraining: a :class:`Task` builds the data and the model
and may group the parameters or report at the end of an epoch; the loop owns the rest (batch
order, per-step seeds, the warm-up + cosine schedule, Adam, resume checks, DDP, checkpoints,
progress bar).

Every step's randomness (batch order, augmentations, stochastic codes) is derived from
``(seed, step)``, so a run stopped after any checkpoint and resumed with ``resume=True`` ends with
the same weights as an uninterrupted one. Checkpoints (:mod:`hashkern.training.checkpoint`) are
written atomically, carry a SHA-256, and are checked against the model, optimizer and scheduler
before anything is loaded.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict

import torch

from hashkern import distributed as hdist
from hashkern.training.checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    check_fits,
    load_checkpoint,
    save_checkpoint,
)
from hashkern.training.config import LoopConfig

__all__ = ["Task", "TrainingLoop", "epoch_order", "step_seed"]


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s randomness (``step < 0``: the batch order of epoch ``-1 - step``)."""
    return (seed * 1_000_003 + step * 7_919 + 12_345) % (2 ** 62)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training set's order in ``epoch``: a permutation that depends only on (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(step_seed(seed, -1 - epoch)))


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


class Task:
    """What a :class:`TrainingLoop` trains. ``build`` sets ``train_images`` (uint8 [N, C, H, W]),
    ``model`` (``model(view1, view2) -> {"loss"}``), ``model_config`` (stored in checkpoints) and
    ``augment`` (``augment(images, generator) -> (view1, view2)``)."""

    config: LoopConfig
    train_images: torch.Tensor
    model: torch.nn.Module
    model_config: dict
    augment = None

    def build(self, device: torch.device, resuming: bool) -> None:
        """Load the data and build the model on ``device``; ``resuming``: its weights come from a checkpoint."""
        raise NotImplementedError

    def parameter_groups(self) -> list:
        """The optimizer's parameters or parameter groups (default: every trainable parameter)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def describe(self) -> str:
        """The progress bar's label."""
        return type(self).__name__

    def end_of_epoch(self, loop: "TrainingLoop", epoch: int, seconds: float) -> None:
        """Called on rank 0 after each completed epoch (``seconds`` since this fit started)."""


class TrainingLoop:
    """``TrainingLoop(task, out_dir).fit()`` trains, checkpoints to ``out_dir/last.pt``, returns the history.

    ``resume=True`` continues from ``out_dir/last.pt`` (refused if its config differs from the
    task's); ``max_steps`` stops early (the run can be resumed); ``overwrite=True`` starts afresh
    over an existing checkpoint, which is refused otherwise.
    """

    def __init__(self, task: Task, out_dir: str, *, device: str | torch.device | None = None, resume: bool = False,
                 overwrite: bool = False, progress: bool = True, log=print):
        config = task.config
        self.task, self.config, self.out_dir = task, config, out_dir
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
        task.build(self.device, resuming=state is not None)
        n = self.train_images.shape[0]
        self.global_batch = config.batch_size * self.world
        if n < self.global_batch:
            raise ValueError(f"the training set ({n} images) is smaller than one global batch ({self.global_batch})")
        self.steps_per_epoch = n // self.global_batch  # the last incomplete batch is dropped
        self.total_steps = self.steps_per_epoch * config.epochs
        self.optimizer = torch.optim.Adam(task.parameter_groups(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           _lr_lambda(self.total_steps, config.warmup_steps))
        self.step, self.history = 0, {"loss": [], "eval": []}
        if state is not None:
            self._restore(state)
        self.ddp = self.model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel
            self.ddp = DistributedDataParallel(self.model,
                                               device_ids=[self.device] if self.device.type == "cuda" else None)

    @property
    def model(self) -> torch.nn.Module:
        return self.task.model

    @property
    def model_config(self) -> dict:
        return self.task.model_config

    @property
    def train_images(self) -> torch.Tensor:
        return self.task.train_images

    def _restore(self, state: dict) -> None:
        check_fits(self.checkpoint_path, state, self.model, self.optimizer, self.scheduler)
        if state["step"] > self.total_steps:
            raise CheckpointError(f"checkpoint {self.checkpoint_path!r} is at step {state['step']}, beyond "
                                  f"this run's {self.total_steps} steps")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.history = state["step"], state["history"]

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
        gen = torch.Generator().manual_seed(step_seed(self.config.seed, step))
        return self.task.augment(images, gen)

    def train_step(self, step: int) -> float:
        self.model.train()
        view1, view2 = self.batch(step)
        torch.manual_seed(step_seed(self.config.seed, step) + 1 + self.rank)  # stochastic codes (CIBHash)
        out = self.ddp(view1, view2)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        self.optimizer.step()
        self.scheduler.step()
        return float(out["loss"].detach())

    def fit(self, max_steps: int | None = None) -> dict:
        cfg, stop = self.config, self.total_steps if max_steps is None else min(self.total_steps, max_steps)
        every = cfg.checkpoint_every or self.steps_per_epoch
        bar = _progress(range(self.step, stop), stop - self.step, self.task.describe(),
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
                self.task.end_of_epoch(self, self.step // self.steps_per_epoch, time.time() - start)
            if self.step % every == 0 or self.step == stop:
                self.save()
        self.history["seconds"] = self.history.get("seconds", 0.0) + (time.time() - start)
        return self.history
