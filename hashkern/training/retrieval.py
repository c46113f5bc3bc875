"""Trained models out of the training loop: ``load_model``, plain weight exports, and encoding a
dataset to packed codes or a :class:`~hashkern.HammingIndex` (``hashkern encode | export``).

An export is the model's state dict alone (``torch.load(path, weights_only=True)``, or
safetensors for ``*.safetensors``) plus ``<path>.json``: the model and preprocessing config that
:func:`load_model` needs to rebuild it.
"""
from __future__ import annotations

import json
import os

import torch

from hashkern._io import atomic_write
from hashkern.codes import pack_bits
from hashkern.index import HammingIndex
from hashkern.models import build_model
from hashkern.models.weights import file_sha256, load_strict, read_state_dict
from hashkern.training.checkpoint import load_checkpoint, model_from_checkpoint
from hashkern.training.data import make_transforms
from hashkern.training.evaluate import encode_images

__all__ = ["load_model", "export_model", "encode_to_file", "run_record"]


def _preprocess_config(train_config: dict) -> dict:
    """What the preprocessing of a run depends on: its dataset and augmentations (the normalisation),
    image channels, and how image files are decoded."""
    dataset = train_config.get("dataset", "fashion-mnist")
    return {"dataset": dataset, "channels": 1 if dataset == "fashion-mnist" else 3,
            "augment": train_config.get("augment", "hashkern"), "image_size": train_config.get("image_size", 224),
            "image_resize": train_config.get("image_resize", "stretch")}


def _export_meta(path: str) -> dict:
    with open(path + ".json") as f:
        return json.load(f)


def run_record(path: str | os.PathLike) -> dict:
    """What a checkpoint or an export records of its run: ``model_config``, and ``train_config`` (the
    run's :class:`~hashkern.training.train.TrainConfig` as a dict) unless an older export lacks it."""
    path = os.fspath(path)
    if os.path.isfile(path + ".json"):  # an export
        meta = _export_meta(path)
        return {key: meta[key] for key in ("model_config", "train_config") if key in meta}
    state = load_checkpoint(path)
    return {"model_config": state["model_config"], "train_config": state["train_config"]}


def _preprocess(model, info: dict):
    return make_transforms(info["dataset"], model.backbone.input_size, info["channels"],
                           augment=info.get("augment", "hashkern"))[1]  # exports before --augment: hashkern


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """A trained hashing model and its preprocessing, from a checkpoint (``last.pt``) or an export.

    Returns ``(model, preprocess)``: ``model`` in eval mode on ``device`` (``model.encode(x)`` ->
    [b, K] ±1), ``preprocess(images)``: uint8 [b, C, H, W] -> the normalised float [b, C, S, S] it takes.
    """
    path = os.fspath(path)
    if os.path.isfile(path + ".json"):  # an export
        meta = _export_meta(path)
        model = build_model(load_weights=False, **meta["model_config"])
        load_strict(model, read_state_dict(path), path, "hashing model")
        info = meta["preprocess"]
    else:
        state = load_checkpoint(path)
        model = model_from_checkpoint(state, path)
        info = _preprocess_config(state["train_config"])
    return model.to(device).eval(), _preprocess(model, info)


def export_model(checkpoint: str | os.PathLike, out: str | os.PathLike) -> str:
    """Write the checkpoint's model weights to ``out`` (float tensors as trained; safetensors when ``out``
    ends in ``.safetensors``) and its config to ``out``.json; returns the weights' SHA-256."""
    checkpoint, out = os.fspath(checkpoint), os.fspath(out)
    state = load_checkpoint(checkpoint)
    model = model_from_checkpoint(state, checkpoint)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "hashkern-export", "model_config": state["model_config"],
            "preprocess": _preprocess_config(state["train_config"]), "train_config": state["train_config"],
            "step": state["step"]}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if out.endswith(".safetensors"):
        from safetensors.torch import save  # an ImportError says to install it

        data = save(weights, metadata={"hashkern": json.dumps(meta)})
        with atomic_write(out, name="export path") as f:
            f.write(data)
    else:
        with atomic_write(out, name="export path") as f:
            torch.save(weights, f)
    with atomic_write(out + ".json", name="export path") as f:
        f.write(json.dumps(meta, indent=2).encode())
    return file_sha256(out)


def encode_to_file(model, preprocess, images, labels: torch.Tensor, ids, out: str | os.PathLike, *,
                   device: str | torch.device = "cpu", batch_size: int = 256, workers: int = 0) -> torch.Tensor:
    """Encode ``images`` (uint8 [n, C, H, W] or ImageFiles) and write ``out``; returns the ±1 codes [n, K].

    ``*.hidx``: a :class:`~hashkern.HammingIndex` of the codes, plus ``<stem>.meta.pt`` with
    ``labels`` and ``ids``; otherwise one ``torch.save`` dict ``{"codes": packed uint8 [n, ceil(K/8)],
    "bits": K, "labels", "ids"}`` (readable with ``weights_only=True``).
    """
    out = os.fspath(out)
    codes = encode_images(model.encode, images, normalize=preprocess, device=device, batch_size=batch_size,
                          workers=workers)
    meta = {"labels": labels, "ids": ids, "bits": codes.shape[1]}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if out.endswith(".hidx"):
        index = HammingIndex(codes.shape[1])
        index.add(codes)
        index.save(out)
        out = os.path.splitext(out)[0] + ".meta.pt"
    else:
        meta["codes"] = pack_bits(codes)
    with atomic_write(out, name="output path") as f:
        torch.save(meta, f)
    return codes
