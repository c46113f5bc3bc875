"""``evaluate_checkpoint``: the metrics of a saved hashing run, on the data split it was trained for."""
from __future__ import annotations

import os

import torch

from hashkern.training.checkpoint import load_checkpoint, model_from_checkpoint
from hashkern.training.data import make_transforms
from hashkern.training.evaluate import encode_images, evaluate_codes, subset_database
from hashkern.training.train import TrainConfig, config_split

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(path: str, *, data_dir: str | None = None, topk: int | None = None,
                        database_size: int | None = -1, device: str | None = None, split=None) -> dict:
    """Load a checkpoint, rebuild its data split, encode queries and database, return the metrics.

    ``data_dir`` overrides the path saved in the checkpoint; ``database_size=-1`` keeps the checkpoint's.
    """
    state = load_checkpoint(path)
    cfg = TrainConfig.from_dict(state["train_config"])
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model_from_checkpoint(state, path).to(dev)
    split = split or config_split(cfg, data_dir)
    _, normalize = make_transforms(cfg.dataset, model.backbone.input_size, split.train.images.shape[1],
                                   augment=cfg.augment)
    db = subset_database(split.database, cfg.database_size if database_size == -1 else database_size, cfg.seed)

    def encode(images):
        return encode_images(model.encode, images, normalize=normalize, device=dev)

    topk = topk or cfg.topk
    result = evaluate_codes(q_codes=encode(split.query.images), q_labels=split.query.labels,
                            db_codes=encode(db.images), db_labels=db.labels, topk=topk)
    return {"checkpoint": os.path.abspath(path), "method": cfg.method, "bits": cfg.bits, "dataset": cfg.dataset,
            "step": state["step"], "num_queries": len(split.query), "database_size": len(db), **result}
