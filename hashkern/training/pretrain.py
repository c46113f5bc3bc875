"""``hashkern pretrain``: self-supervised pretraining of the demo backbone, without labels.

Objective: instance contrast on two augmented views (SimCLR): backbone -> projection MLP ->
NT-Xent over the batch. Only the training split's images are read (Fashion-MNIST: 60,000;
:func:`hashkern.training.data.load_pretraining_images`), so no query image of the demo protocol is ever
seen. The loop is :class:`hashkern.training.loop.TrainingLoop`: seeded per step, atomic SHA-256 checkpoints,
``--resume`` to the bit. ``export_backbone`` writes the backbone's weights alone (what
``build_backbone("fmnist-vit", pretrained=True)`` loads).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from hashkern._io import atomic_write
from hashkern._validation import check_int, check_tensor
from hashkern.losses.ntxent import nt_xent
from hashkern.models.backbones import small_vit
from hashkern.models.base import mlp_head
from hashkern.models.pretrained import FMNIST_VIT_ARCH
from hashkern.models.weights import file_sha256
from hashkern.ops._numerics import check_temperature
from hashkern.training.config import LoopConfig, option
from hashkern.training.data import load_pretraining_images
from hashkern.training.data.augment import make_transforms
from hashkern.training.loop import Task, TrainingLoop

__all__ = ["PretrainConfig", "ContrastivePretraining", "ContrastiveTask", "Pretrainer"]


@dataclass
class PretrainConfig(LoopConfig):
    backbone_kwargs: dict = option(factory=lambda: dict(FMNIST_VIT_ARCH), help="backbone argument (small-vit), "
                                   "e.g. depth=6; repeatable", flag="backbone-arg")
    epochs: int = option(80, help="passes over the training split")
    batch_size: int = option(256, help="images per step (each gives two views; the rest of the batch are negatives)")
    warmup_steps: int = option(234, help="linear warm-up steps (234: one epoch of 60,000 images at batch 256)")
    temperature: float = option(0.2, help="NT-Xent temperature")
    projection_dim: int = option(64, help="width of the projection's output")
    projection_hidden: int = option(256, help="width of the projection's hidden layer")
    min_crop: float = option(0.25, help="random resized crops keep min_crop..100 %% of the image")

    def __post_init__(self):
        for name in ("epochs", "projection_dim", "projection_hidden"):
            check_int(name, getattr(self, name), low=1)
        check_int("batch_size", self.batch_size, low=2)  # a pair needs at least one negative
        super().__post_init__()
        if not 0 < self.min_crop <= 1:
            raise ValueError(f"min_crop must be in (0, 1], got {self.min_crop}")
        check_temperature("temperature", self.temperature)


class ContrastivePretraining(nn.Module):
    """backbone -> projection MLP -> NT-Xent: ``forward(view1, view2) -> {"loss"}`` (views [b, C, H, W])."""

    def __init__(self, backbone: nn.Module, projection_dim: int = 64, hidden: int = 256, temperature: float = 0.2):
        super().__init__()
        self.backbone, self.temperature = backbone, check_temperature("temperature", temperature)
        self.projection = mlp_head(backbone.dim, projection_dim, hidden)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> dict:
        z1, z2 = self.projection(self.backbone(view1)), self.projection(self.backbone(view2))
        return {"loss": nt_xent(z1, z2, self.temperature)}


class ContrastiveTask(Task):
    """Instance contrast on unlabelled images; ``images`` (uint8 [N, C, H, W]) replaces the dataset's
    training split (tests use small sets)."""

    def __init__(self, config: PretrainConfig, images: torch.Tensor | None = None):
        if not isinstance(config, PretrainConfig):
            raise TypeError(f"config must be a PretrainConfig, got {type(config).__name__}")
        self.config, self.images = config, images

    def build(self, device: torch.device, resuming: bool) -> None:
        cfg = self.config
        self.train_images = load_pretraining_images(cfg.dataset, cfg.data_dir) if self.images is None else \
            check_tensor("images", self.images, ndim=4, dtypes=(torch.uint8,))
        self.model_config = {"backbone": dict(cfg.backbone_kwargs), "projection_dim": cfg.projection_dim,
                             "projection_hidden": cfg.projection_hidden, "temperature": cfg.temperature}
        torch.manual_seed(cfg.seed)  # the initial weights
        backbone = small_vit(**cfg.backbone_kwargs)
        self.model = ContrastivePretraining(backbone, cfg.projection_dim, cfg.projection_hidden,
                                            cfg.temperature).to(device)
        self.augment, self.normalize = make_transforms(cfg.dataset, backbone.input_size, self.train_images.shape[1],
                                                       crop_scale=(cfg.min_crop, 1.0))

    def describe(self) -> str:
        return "pretrain"

    def end_of_epoch(self, loop: TrainingLoop, epoch: int, seconds: float) -> None:
        if not loop.progress:  # the progress bar shows the loss otherwise
            losses = loop.history["loss"][-loop.steps_per_epoch:]
            loop.log(f"epoch {epoch}/{self.config.epochs}: loss {sum(losses) / len(losses):.4f} ({seconds:.0f}s)",
                     flush=True)


class Pretrainer(TrainingLoop):
    """``Pretrainer(config, out_dir).fit()``; then ``export_backbone(path)``.

    ``images`` (uint8 [N, C, H, W]) replaces the dataset's training split (tests use small sets).
    """

    def __init__(self, config: PretrainConfig, out_dir: str, *, images: torch.Tensor | None = None, **kwargs):
        super().__init__(ContrastiveTask(config, images), out_dir, **kwargs)

    def export_backbone(self, path: str | os.PathLike) -> str:
        """Write the backbone's float32 state dict to ``path`` atomically; returns its SHA-256."""
        state = {k: v.detach().to("cpu", torch.float32).contiguous()
                 for k, v in self.model.backbone.state_dict().items()}
        with atomic_write(path, name="export path") as f:
            torch.save(state, f)
        return file_sha256(os.fspath(path))
