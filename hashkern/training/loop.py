"""The training loop: seeded, resumable to the bit, optionally data-parallel under ``torchrun``.

The loop knows nothing of hashing or pretraining: a :class:`Task` builds the data and the model
and may group the parameters or report at the end of an epoch; the loop owns the rest (batch
order, per-step seeds, the warm-up + cosine (or constant) schedule, Adam, resume checks, DDP, checkpoints,
progress bar).

Every step's randomness (batch order, augmentations, stochastic codes) is derived from
``(seed, step)``, so a run stopped after any checkpoint and resumed with ``resume=True`` ends with
the same weights as an uninterrupted one. Checkpoints (:mod:`hashkern.training.checkpoint`) are
written atomically, carry a SHA-256, and are checked against the model, optimizer and scheduler
before anything is loaded.
"""
from __future__ import annotations

import contextlib
import errno
import math
import os
import sys
import time
import warnings
from dataclasses import asdict

import torch

from hashkern import distributed as hdist
from hashkern._validation import check_int
from hashkern.training.checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    check_fits,
    load_checkpoint,
    save_checkpoint,
)
from hashkern.training.config import PRECISIONS, LoopConfig, write_config_toml
from hashkern.training.data.streamed import step_batches
from hashkern.training.runlog import MetricsLog

__all__ = ["Task", "TrainingLoop", "NonFiniteLoss", "epoch_order", "step_seed"]


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite: the run stops before the step is applied; the last checkpoint is kept."""


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s randomness (``step < 0``: the batch order of epoch ``-1 - step``)."""
    return (seed * 1_000_003 + step * 7_919 + 12_345) % (2 ** 62)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training set's order in ``epoch``: a permutation that depends only on (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(step_seed(seed, -1 - epoch)))


class StepIndices:
    """Item ``j``: the training-set positions of this process's share of global batch ``start + j``.

    A plain picklable object, so DataLoader workers compute the same batches as the main process."""

    def __init__(self, n: int, seed: int, steps_per_epoch: int, global_batch: int, batch_size: int, rank: int,
                 start: int, stop: int):
        self.n, self.seed, self.steps_per_epoch = n, seed, steps_per_epoch
        self.global_batch, self.batch_size, self.rank, self.start, self.stop = global_batch, batch_size, rank, \
            start, stop
        self._epoch, self._order = None, None

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, j: int) -> torch.Tensor:
        epoch, i = divmod(self.start + j, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(self.n, self.seed, epoch)
        first = i * self.global_batch + self.rank * self.batch_size
        return self._order[first:first + self.batch_size]


def _canonical(obj):
    """``obj`` rebuilt with fresh containers and interned strings, so that pickle (which shares
    repeated objects by identity) writes the same bytes for equal states, resumed or not."""
    if isinstance(obj, dict):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_canonical(v) for v in obj)
    if isinstance(obj, str):
        return sys.intern(str(obj))
    return obj


def _lr_lambda(total: int, warmup: int, schedule: str = "cosine", steps_per_epoch: int | None = None):
    """The learning rate's factor at each step: linear warm-up, then cosine to 0 or constant.

    ``steps_per_epoch``: no warm-up, a cosine that moves once an epoch: at epoch ``e`` of ``E``
    0.5 (1 + cos(π e / E)), as ``CosineAnnealingLR(T_max=E)`` stepped after each epoch."""
    def f(step: int) -> float:
        if steps_per_epoch:
            return 0.5 * (1 + math.cos(math.pi * (step // steps_per_epoch) / max(1, total // steps_per_epoch)))
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
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

    def end_of_epoch(self, loop: "TrainingLoop", epoch: int, seconds: float) -> str | None:
        """Called on rank 0 after each completed epoch (``seconds`` since this fit started). May return a
        path: the loop then writes ``last.pt`` and, after it, this state to that path as well."""


class TrainingLoop:
    """``TrainingLoop(task, out_dir).fit()`` trains, checkpoints to ``out_dir/last.pt``, returns the history.

    ``resume=True`` continues from ``out_dir/last.pt`` (refused if its config differs from the
    task's); ``max_steps`` stops early (the run can be resumed); ``overwrite=True`` starts afresh
    over an existing checkpoint, which is refused otherwise. Training images that are not a tensor
    (:class:`~hashkern.training.data.streamed.ImageFiles`) are decoded ahead by ``workers``
    DataLoader processes; the results do not depend on ``workers``. Each save also writes the
    resolved config (``config.toml``) beside the checkpoint; rank 0 logs every step to ``metrics.jsonl``.
    """

    def __init__(self, task: Task, out_dir: str, *, device: str | torch.device | None = None, resume: bool = False,
                 overwrite: bool = False, progress: bool = True, log=print, workers: int = 0):
        config = task.config
        self.task, self.config, self.out_dir = task, config, out_dir
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.progress, self.log, self.workers = progress, log, workers
        self.checkpoint_path = os.path.join(out_dir, "last.pt")
        self.config_path = os.path.join(out_dir, "config.toml")
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise NotADirectoryError(errno.ENOTDIR, f"the run folder {out_dir!r} is an existing file, not a folder: "
                                     "pass another --out", out_dir)
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
        n = len(self.train_images)
        self.global_batch = config.batch_size * self.world
        if n < self.global_batch:
            raise ValueError(f"the training set ({n} images) is smaller than one global batch ({self.global_batch})")
        self.steps_per_epoch = n // self.global_batch  # the last incomplete batch is dropped
        self.total_steps = self.steps_per_epoch * config.epochs
        self.optimizer = torch.optim.Adam(task.parameter_groups(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           _lr_lambda(self.total_steps, config.warmup_steps,
                                                                      config.lr_schedule,
                                                                      self.steps_per_epoch
                                                                      if config.lr_step == "epoch" else None))
        self.step, self.history = 0, {"loss": [], "eval": []}
        self.autocast_dtype = PRECISIONS[config.precision]
        self.scaler = torch.amp.GradScaler(self.device.type) if config.precision == "fp16" else None
        if state is not None:
            self._restore(state)
        self.metrics = MetricsLog(os.path.join(out_dir, "metrics.jsonl")) if self.rank == 0 else None
        if self.metrics is not None:
            self.metrics.keep_until(self.step)  # drop what a stopped run logged after its last checkpoint
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
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])

    def state(self) -> dict:
        return {"format": "hashkern-checkpoint", "version": CHECKPOINT_VERSION, "train_config": asdict(self.config),
                "model_config": self.model_config, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "step": self.step, "history": self.history,
                **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {})}

    def save(self, path: str | None = None) -> None:
        """Checkpoint to ``last.pt`` (and write ``config.toml``), or to ``path`` (rank 0)."""
        if self.rank == 0:
            os.makedirs(self.out_dir, exist_ok=True)  # the run folder is ours to create
            save_checkpoint(path or self.checkpoint_path, _canonical(self.state()))
            if path is None:
                write_config_toml(self.config_path, self.config)

    def step_indices(self, start: int, stop: int) -> StepIndices:
        """The training-set positions of this process's share of global batches ``start..stop-1``."""
        return StepIndices(len(self.train_images), self.config.seed, self.steps_per_epoch, self.global_batch,
                           self.config.batch_size, self.rank, start, stop)

    def batch(self, step: int, images: torch.Tensor | None = None):
        """The two augmented views of this process's share of global batch ``step`` (``images``: its
        images, uint8 [b, C, H, W], when already loaded)."""
        if images is None:
            images = self.train_images[self.step_indices(step, step + 1)[0]]
        images = images.to(self.device, non_blocking=True)
        gen = torch.Generator().manual_seed(step_seed(self.config.seed, step))
        return self.task.augment(images, gen)

    def autocast(self):
        """The forward pass's mixed-precision context (none for fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def train_step(self, step: int, images: torch.Tensor | None = None) -> float:
        self.model.train()
        view1, view2 = self.batch(step, images)
        torch.manual_seed(step_seed(self.config.seed, step) + 1 + self.rank)  # stochastic codes (CIBHash)
        with self.autocast():
            loss = self.ddp(view1, view2)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self._check_finite(float(loss.detach()), step)
            self.optimizer.step()
        else:  # fp16: scale the loss so small gradients survive; steps with inf/NaN gradients are skipped
            self.scaler.scale(loss).backward()
            self._check_finite(float(loss.detach()), step)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        with warnings.catch_warnings():
            if self.scaler is not None:  # a step the scaler skipped still advances the schedule, on purpose
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            self.scheduler.step()
        return float(loss.detach())

    def _images_of_steps(self, start: int, stop: int):
        """Per step, None (images in memory: sliced in the step) or its images decoded ahead by workers."""
        if isinstance(self.train_images, torch.Tensor):
            return (None for _ in range(start, stop))
        return step_batches(self.train_images, self.step_indices(start, stop), workers=self.workers,
                            pin_memory=self.device.type == "cuda")

    def log_metrics(self, record: dict) -> None:
        """Append one record to ``metrics.jsonl`` (rank 0)."""
        if self.metrics is not None:
            self.metrics.append(record)

    def raise_on_every_rank(self, problem: Exception | None) -> None:
        """Raise ``problem`` (what this rank found, or None) on every rank when any rank found one, so no
        rank waits in a collective for one that stopped. A rank without a problem of its own raises a
        :class:`RuntimeError` that points at the rank that had one."""
        failed = problem is not None
        if self.distributed:
            import torch.distributed as dist

            flag = torch.tensor([1.0 if failed else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            failed = bool(flag.item())
        if failed:
            raise problem or RuntimeError("another rank stopped this run before training; its error says why")

    def _check_finite(self, loss: float, step: int) -> None:
        """Refuse a non-finite loss on any rank, before the step is applied (every rank raises alike)."""
        finite = math.isfinite(loss)
        if self.distributed:
            import torch.distributed as dist

            flag = torch.tensor([1.0 if finite else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = bool(flag.item())
        if not finite:
            kept = (f"the last checkpoint {self.checkpoint_path!r} (step {self.step}) is kept"
                    if os.path.exists(self.checkpoint_path) else "no checkpoint was written")
            raise NonFiniteLoss(f"the loss became non-finite ({loss}) at step {step + 1}: training stopped and {kept}; "
                                f"lower --lr (now {self.config.lr}) or check the data")

    def fit(self, max_steps: int | None = None) -> dict:
        if max_steps is not None:
            check_int("max_steps", max_steps, low=1)
        cfg, stop = self.config, self.total_steps if max_steps is None else min(self.total_steps, max_steps)
        every = cfg.checkpoint_every or self.steps_per_epoch
        bar = _progress(range(self.step, stop), stop - self.step, self.task.describe(),
                        self.progress and self.rank == 0)
        start = time.time()
        for step, images in zip(bar, self._images_of_steps(self.step, stop)):
            lr = self.scheduler.get_last_lr()[0]
            loss = self.train_step(step, images)
            self.step = step + 1
            self.history["loss"].append(loss)
            self.log_metrics({"step": self.step, "epoch": self.step / self.steps_per_epoch, "loss": loss, "lr": lr})
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss:.4f}", epoch=step // self.steps_per_epoch + 1)
            keep_as = None
            if self.step % self.steps_per_epoch == 0 and self.rank == 0:
                keep_as = self.task.end_of_epoch(self, self.step // self.steps_per_epoch, time.time() - start)
            if self.step % every == 0 or self.step == stop or keep_as:
                self.save()
            if keep_as:  # after last.pt: a run stopped between the two can rebuild the copy on resume
                self.save(keep_as)
        self.history["seconds"] = self.history.get("seconds", 0.0) + (time.time() - start)
        return self.history
