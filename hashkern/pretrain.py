"""``hashkern pretrain``: self-supervised pretraining of the demo backbone, without labels.

Objective: instance contrast on two augmented views (SimCLR): backbone -> projection MLP ->
NT-Xent over the batch. Only the training split's images are read (Fashion-MNIST: 60,000;
:func:`hashkern.data.load_pretraining_images`), so no query image of the demo protocol is ever
seen. The loop is :class:`hashkern.train.Trainer`'s: seeded per step, atomic SHA-256 checkpoints,
``--resume`` to the bit. ``export_backbone`` writes the backbone's weights alone (what
``build_backbone("fmnist-vit", pretrained=True)`` loads).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from hashkern._io import atomic_write
from hashkern._validation import check_int, check_tensor
from hashkern.data import load_pretraining_images
from hashkern.data.augment import make_transforms
from hashkern.losses.ntxent import nt_xent
from hashkern.models.backbones import small_vit
from hashkern.models.base import mlp_head
from hashkern.models.pretrained import FMNIST_VIT_ARCH
from hashkern.ops._numerics import check_temperature
from hashkern.train import ConfigFromDict, Trainer

__all__ = ["PretrainConfig", "ContrastivePretraining", "Pretrainer"]


@dataclass
class PretrainConfig(ConfigFromDict):
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    backbone_kwargs: dict = field(default_factory=lambda: dict(FMNIST_VIT_ARCH))
    epochs: int = 80
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 234       # one epoch of 60,000 images at batch 256
    temperature: float = 0.2
    projection_dim: int = 64
    projection_hidden: int = 256
    min_crop: float = 0.25        # random resized crops keep 25-100 % of the image
    seed: int = 0
    checkpoint_every: int = 0     # steps between checkpoints (0: at the end of every epoch)

    def __post_init__(self):
        for name in ("epochs", "projection_dim", "projection_hidden"):
            check_int(name, getattr(self, name), low=1)
        check_int("batch_size", self.batch_size, low=2)  # a pair needs at least one negative
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
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


class Pretrainer(Trainer):
    """``Pretrainer(config, out_dir).fit()``; then ``export_backbone(path)``.

    ``images`` (uint8 [N, C, H, W]) replaces the dataset's training split (tests use small sets).
    """

    def __init__(self, config: PretrainConfig, out_dir: str, *, images: torch.Tensor | None = None, **kwargs):
        if not isinstance(config, PretrainConfig):
            raise TypeError(f"config must be a PretrainConfig, got {type(config).__name__}")
        super().__init__(config, out_dir, split=images, **kwargs)

    def _build(self, state, images) -> None:
        cfg = self.config
        self.split = None
        self.train_images = load_pretraining_images(cfg.dataset, cfg.data_dir) if images is None else \
            check_tensor("images", images, ndim=4, dtypes=(torch.uint8,))
        self.model_config = {"backbone": dict(cfg.backbone_kwargs), "projection_dim": cfg.projection_dim,
                             "projection_hidden": cfg.projection_hidden, "temperature": cfg.temperature}
        torch.manual_seed(cfg.seed)  # the initial weights
        backbone = small_vit(**cfg.backbone_kwargs)
        self.model = ContrastivePretraining(backbone, cfg.projection_dim, cfg.projection_hidden,
                                            cfg.temperature).to(self.device)
        self.augment, self.normalize = make_transforms(cfg.dataset, backbone.input_size, self.train_images.shape[1],
                                                       crop_scale=(cfg.min_crop, 1.0))

    def describe(self) -> str:
        return "pretrain"

    def end_of_epoch(self, epoch: int, seconds: float) -> None:
        if not self.progress:  # the progress bar shows the loss otherwise
            losses = self.history["loss"][-self.steps_per_epoch:]
            self.log(f"epoch {epoch}/{self.config.epochs}: loss {sum(losses) / len(losses):.4f} ({seconds:.0f}s)",
                     flush=True)

    def evaluate(self, metrics=()):
        raise TypeError("a pretraining run has no codes to evaluate: export the backbone and fine-tune it")

    def export_backbone(self, path: str | os.PathLike) -> str:
        """Write the backbone's float32 state dict to ``path`` atomically; returns its SHA-256."""
        from hashkern.models.pretrained import file_sha256

        state = {k: v.detach().to("cpu", torch.float32).contiguous()
                 for k, v in self.model.backbone.state_dict().items()}
        with atomic_write(path, name="export path") as f:
            torch.save(state, f)
        return file_sha256(os.fspath(path))
