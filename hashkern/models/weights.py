"""Reading backbone weights from local files: state-dict readers, strict loading, SHA-256.

A leaf of :mod:`hashkern.models`: :mod:`~hashkern.models.backbones` (architectures) and
:mod:`~hashkern.models.pretrained` (the shipped-weights registry) both import it, and it imports
neither. Nothing is ever downloaded.
"""
from __future__ import annotations

import hashlib
import os

import torch
import torch.nn as nn

__all__ = ["read_state_dict", "load_strict", "file_sha256"]


def file_sha256(path: str) -> str:
    """The hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str) -> dict:
    """The state dict of a local weights file (torch or safetensors; ``state_dict`` / ``model`` wrappers
    unwrapped): FileNotFoundError when missing, ValueError when it holds no dict of tensors."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist (weights are never downloaded: "
                                "pass the path of a local file)")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable / not a tensor file
        raise ValueError(f"weights file {path!r} could not be read as a state dict: {exc}") from exc
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {path!r} does not hold a state dict of tensors")
    return state


def load_strict(module: nn.Module, state: dict, path: str, what: str, ignore_prefixes=()) -> None:
    """Load ``state`` into ``module`` only if every key and shape fits (a ``module.`` prefix is dropped, keys
    under ``ignore_prefixes`` skipped); otherwise a ValueError naming the file, ``what`` and the misfits."""
    state = {k.removeprefix("module."): v for k, v in state.items()
             if not any(k.startswith(p) for p in ignore_prefixes)}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if wrong:
            parts.append(f"wrong shapes for {wrong[:3]}")
        raise ValueError(f"weights file {path!r} does not fit {what}: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)
