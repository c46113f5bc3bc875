"""Training checkpoints on disk: a SHA-256 checked container around ``torch.save``, checked again against the model.

File format (container version 2)::

    magic b"HKCKPT\\r\\n" | version u32 little-endian | payload: torch.save(state) bytes
    | SHA-256 of everything before it (32 bytes)

``load_checkpoint`` verifies the digest before unpickling anything, so a flipped byte, a
truncated file or a file of another format is refused with a :class:`CheckpointError` naming
the file. :func:`check_fits` then refuses a state whose tensors do not fit the model,
optimizer and scheduler it is about to be loaded into (missing or extra keys, other shapes or
dtypes, missing optimizer state), before anything is modified.
"""
from __future__ import annotations

import io
import os
import struct

import torch

from hashkern._io import SEAL_SIZE, check_path, seal_matches, sealed_write
from hashkern.models import build_model

__all__ = ["CHECKPOINT_VERSION", "CheckpointError", "save_checkpoint", "load_checkpoint", "check_fits",
           "model_from_checkpoint"]

CHECKPOINT_VERSION = 2
_MAGIC = b"HKCKPT\r\n"
_HEADER = struct.Struct("<8sI")
_FORMAT = "hashkern-checkpoint"
_KEYS = {"train_config": dict, "model_config": dict, "model": dict, "optimizer": dict, "scheduler": dict,
         "step": int, "history": dict}


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupted, not a hashkern checkpoint, or does not fit the model."""


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` to ``path`` atomically, with a SHA-256 over header and payload."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    with sealed_write(path, _HEADER.pack(_MAGIC, CHECKPOINT_VERSION)) as f:
        torch.save(state, f)


def _read_verified(path: str) -> bytes:
    """The payload of a checkpoint file whose container and digest check out."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a directory, not a file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path!r} cannot be read: {exc.strerror or exc}") from exc
    if data[:2] == b"PK":  # a bare torch.save zip: version 1, or not written by hashkern
        raise CheckpointError(f"{path!r} is a plain torch file without hashkern's checksum: not a hashkern "
                              f"checkpoint, or one written before checkpoint version {CHECKPOINT_VERSION}")
    if len(data) < _HEADER.size + SEAL_SIZE or not data.startswith(_MAGIC):
        if _MAGIC.startswith(data[:len(_MAGIC)]) and data:
            raise CheckpointError(f"checkpoint {path!r} is truncated: {len(data)} bytes")
        raise CheckpointError(f"{path!r} is not a hashkern checkpoint (no checkpoint header)")
    _, version = _HEADER.unpack_from(data)
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path!r} has format version {version}; this hashkern reads "
                              f"version {CHECKPOINT_VERSION}")
    if not seal_matches(data):
        raise CheckpointError(f"checkpoint {path!r} is corrupted or truncated: its SHA-256 checksum does not "
                              "match its contents")
    return data[_HEADER.size:-SEAL_SIZE]


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read and verify a checkpoint written by :func:`save_checkpoint`; a clear ``CheckpointError`` otherwise."""
    path = check_path(path)
    payload = _read_verified(path)
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)  # tensors and plain data
    except Exception as exc:  # digest matched, so the writer produced something torch cannot read
        raise CheckpointError(f"checkpoint {path!r} has a valid checksum but torch cannot read it: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise CheckpointError(f"{path!r} is not a hashkern checkpoint (no 'format' marker)")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path!r} has version {state.get('version')}, expected "
                              f"{CHECKPOINT_VERSION}")
    for key, kind in _KEYS.items():
        if not isinstance(state.get(key), kind) or (kind is int and isinstance(state[key], bool)):
            raise CheckpointError(f"checkpoint {path!r} has no valid {key!r} entry (expected a "
                                  f"{kind.__name__}, got {type(state.get(key)).__name__})")
    if state["step"] < 0:
        raise CheckpointError(f"checkpoint {path!r} has a negative step {state['step']}")
    return state


def _check_tensors(path: str, what: str, saved: dict, expected: dict) -> None:
    """Same keys, and every saved tensor of the expected shape and dtype."""
    missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or extra:
        raise CheckpointError(f"checkpoint {path!r} does not fit the {what}: missing {missing[:5]}, "
                              f"unexpected {extra[:5]}")
    for key, want in expected.items():
        got = saved[key]
        if not isinstance(got, torch.Tensor):
            raise CheckpointError(f"checkpoint {path!r}: {what} entry {key!r} is a {type(got).__name__}, "
                                  "not a tensor")
        if got.shape != want.shape or got.dtype != want.dtype:
            raise CheckpointError(f"checkpoint {path!r} does not fit the {what}: {key!r} is "
                                  f"{tuple(got.shape)} {got.dtype}, the {what} needs {tuple(want.shape)} {want.dtype}")


def _check_optimizer(path: str, saved: dict, optimizer: torch.optim.Optimizer, step: int) -> None:
    """Adam-style state: the model's parameter groups, some state once a step was taken, moments' shapes."""
    groups = saved.get("param_groups")
    if not isinstance(saved.get("state"), dict) or not isinstance(groups, list):
        raise CheckpointError(f"checkpoint {path!r} has no optimizer state ('state' and 'param_groups')")
    ours = optimizer.param_groups
    if len(groups) != len(ours) or any(not isinstance(g, dict) or len(g.get("params", ())) != len(o["params"])
                                       for g, o in zip(groups, ours)):
        raise CheckpointError(f"checkpoint {path!r}: its optimizer has other parameter groups than the model's "
                              f"({[len(g.get('params', ())) if isinstance(g, dict) else g for g in groups]} "
                              f"parameters, expected {[len(o['params']) for o in ours]})")
    params = {pid: p for g, o in zip(groups, ours) for pid, p in zip(g["params"], o["params"])}
    if set(saved["state"]) - set(params):
        raise CheckpointError(f"checkpoint {path!r}: optimizer state for unknown parameters "
                              f"{sorted(set(saved['state']) - set(params))[:5]}")
    # A parameter that never had a gradient has no state, so only an empty state is certainly missing.
    if step > 0 and not saved["state"]:
        raise CheckpointError(f"checkpoint {path!r} is missing optimizer state: none for any of its "
                              f"{len(params)} parameters after {step} steps")
    for pid, entry in saved["state"].items():
        if not isinstance(entry, dict):
            raise CheckpointError(f"checkpoint {path!r}: optimizer state {pid} is not a dict")
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != params[pid].shape:
                raise CheckpointError(f"checkpoint {path!r}: optimizer state {key!r} of parameter {pid} is "
                                      f"{tuple(value.shape)}, the parameter is {tuple(params[pid].shape)}")


def check_fits(path: str, state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
               scheduler=None) -> None:
    """Refuse ``state`` unless its model, optimizer and scheduler states fit the objects given."""
    _check_tensors(path, "model", state["model"], model.state_dict())
    if optimizer is not None:
        _check_optimizer(path, state["optimizer"], optimizer, state["step"])
    if scheduler is not None and state["scheduler"].get("last_epoch") != state["step"]:
        raise CheckpointError(f"checkpoint {path!r}: its scheduler is at step "
                              f"{state['scheduler'].get('last_epoch')!r}, the run at step {state['step']}")
    losses = state["history"].get("loss")
    if not isinstance(losses, list) or len(losses) != state["step"]:
        raise CheckpointError(f"checkpoint {path!r}: its history has "
                              f"{len(losses) if isinstance(losses, list) else 'no'} losses for {state['step']} steps")


def model_from_checkpoint(state: dict, path: str = "<checkpoint>") -> torch.nn.Module:
    """Rebuild the hashing model of a checkpoint (no weights file is read: the checkpoint has the weights)."""
    try:
        model = build_model(load_weights=False, **state["model_config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path!r} has a model configuration this hashkern cannot build: "
                              f"{exc}") from exc
    check_fits(path, state, model)
    model.load_state_dict(state["model"])
    return model.eval()
