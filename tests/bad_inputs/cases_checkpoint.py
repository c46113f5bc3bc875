"""Bad inputs for training checkpoints: load_checkpoint, save_checkpoint, model_from_checkpoint."""
from __future__ import annotations

import os
from dataclasses import asdict

import numpy as np
import torch
from badinput import Case

from hashkern.models import build_model
from hashkern.training.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from hashkern.training.train import TrainConfig

TINY = {"patch_size": 14, "embed_dim": 4, "depth": 1, "num_heads": 1}
MODEL_CONFIG = {"method": "cibhash", "nbits": 4, "hidden": 4,
                "backbone": {"name": "small-vit", "weights": None, "in_chans": 1, "img_size": 28, **TINY}}


def _state() -> dict:
    torch.manual_seed(0)
    model = build_model(load_weights=False, **MODEL_CONFIG)
    optimizer = torch.optim.Adam(model.parameters())
    return {"format": "hashkern-checkpoint", "version": 2, "model_config": MODEL_CONFIG, "step": 0,
            "train_config": asdict(TrainConfig(method="cibhash", bits=4, backbone_kwargs=TINY)),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": {"last_epoch": 0},
            "history": {"loss": []}}


def _file(tmp, edit=None, raw=None) -> str:
    path = os.path.join(tmp, "last.pt")
    state = _state()
    if edit:
        edit(state)
    save_checkpoint(path, state)
    if raw:
        data = raw(bytearray(open(path, "rb").read()))
        with open(path, "wb") as f:
            f.write(data)
    return path


def _flip(i):
    def flip(data):
        data[i % len(data)] ^= 0x20
        return data
    return flip


def _first_weight(state):
    return next(k for k, v in state["model"].items() if v.dim() == 2)


def cases() -> list[Case]:
    out = []
    for what, path in (("empty", ""), ("None", None), ("int", 3), ("bytes", b"last.pt")):
        out.append(Case(f"load_checkpoint/path/{what}", lambda tmp, p=path: load_checkpoint(p), names=("path",),
                        paths=True))
        out.append(Case(f"save_checkpoint/path/{what}", lambda tmp, p=path: save_checkpoint(p, _state()),
                        names=("path",), paths=True))
    out.append(Case("save_checkpoint/path/missing-folder", lambda tmp: save_checkpoint(
        os.path.join(tmp, "nope", "last.pt"), _state()), names=("nope",), paths=True))
    out.append(Case("save_checkpoint/state/list", lambda tmp: save_checkpoint(os.path.join(tmp, "c.pt"), [1]),
                    names=("state",)))
    out.append(Case("load_checkpoint/path/missing", lambda tmp: load_checkpoint(os.path.join(tmp, "none.pt")),
                    names=("none.pt",), paths=True))
    out.append(Case("load_checkpoint/path/a-folder", lambda tmp: load_checkpoint(tmp), names=("directory",),
                    paths=True))
    # Flips spread over the file (header, zip records, tensor data, digest); tests/test_checkpoint.py flips every byte.
    for i in (0, 5, 8, 11, 12, 100, 1000, 3000, -40, -1):
        out.append(Case(f"load_checkpoint/path/byte-{i}-flipped", lambda tmp, i=i: load_checkpoint(
            _file(tmp, raw=_flip(i))), names=("last.pt",), paths=True))
    for what, raw in (("truncated", lambda d: d[:-1]), ("half", lambda d: d[: len(d) // 2]),
                      ("appended", lambda d: d + b"\0"), ("empty-file", lambda d: b""),
                      ("header-only", lambda d: d[:12])):
        out.append(Case(f"load_checkpoint/path/{what}", lambda tmp, r=raw: load_checkpoint(_file(tmp, raw=r)),
                        names=("last.pt",), paths=True))
    out.append(Case("load_checkpoint/path/plain-torch-file", lambda tmp: load_checkpoint(_torch_file(tmp)),
                    names=("last.pt",), paths=True))
    for what, edit in (("no-model", lambda s: s.pop("model")), ("step-str", lambda s: s.__setitem__("step", "0")),
                       ("negative-step", lambda s: s.__setitem__("step", -1)),
                       ("other-format", lambda s: s.__setitem__("format", "x")),
                       ("other-version", lambda s: s.__setitem__("version", 1))):
        out.append(Case(f"load_checkpoint/state/{what}", lambda tmp, e=edit: load_checkpoint(_file(tmp, e)),
                        names=("last.pt",), paths=True))
    for what, edit in (("weight-shape", lambda s: s["model"].__setitem__(_first_weight(s), torch.zeros(2, 2))),
                       ("weight-dtype", lambda s: s["model"].__setitem__(_first_weight(s), s["model"][
                           _first_weight(s)].half())),
                       ("missing-weight", lambda s: s["model"].pop(_first_weight(s))),
                       ("extra-weight", lambda s: s["model"].__setitem__("x", torch.zeros(1))),
                       ("weight-not-tensor", lambda s: s["model"].__setitem__(_first_weight(s), [0.0])),
                       ("unknown-method", lambda s: s.__setitem__("model_config", {**MODEL_CONFIG, "method": "x"})),
                       ("bad-model-arg", lambda s: s.__setitem__("model_config", {**MODEL_CONFIG, "colour": 1}))):
        out.append(Case(f"model_from_checkpoint/state/{what}", lambda tmp, e=edit: model_from_checkpoint(
            load_checkpoint(_file(tmp, e)), "last.pt"), names=("last.pt",)))
    out.append(Case("model_from_checkpoint/state/valid", lambda tmp: _first_weight_of(model_from_checkpoint(
        load_checkpoint(_file(tmp)), "last.pt")), reference=lambda tmp: _first_weight_of_state(_state())))
    return out


def _torch_file(tmp) -> str:
    path = os.path.join(tmp, "last.pt")
    torch.save(_state(), path)
    return path


def _first_weight_of(model) -> np.ndarray:
    state = model.state_dict()
    return state[_first_weight({"model": state})].double().numpy()


def _first_weight_of_state(state) -> np.ndarray:
    return state["model"][_first_weight(state)].double().numpy()
