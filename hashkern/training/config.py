"""Run configurations: the loop's fields, shared by every task's config, and the command-line flags
generated from them.

A config field carries its command-line help (and choices) as ``dataclasses.field`` metadata, so
the flags, their defaults and the checkpoint's ``train_config`` have one source: the dataclass.
``--config FILE`` (JSON, or TOML for ``*.toml``) gives a dict of field values, read through
``from_dict``; flags given on the command line override it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: --config takes JSON only
    tomllib = None

import torch

from hashkern._io import atomic_write
from hashkern._validation import check_float, check_int

__all__ = ["ConfigFromDict", "LoopConfig", "LR_SCHEDULES", "LR_STEPS", "PRECISIONS", "option", "add_config_arguments",
           "config_from_args", "read_config_file", "write_config_toml", "MAX_LR"]

MAX_LR = 10.0  # Adam steps each weight by about lr: beyond this a run only diverges (1e300 overflows Adam)
# --precision: the autocast dtype of the forward pass (None: plain fp32, no autocast).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
LR_SCHEDULES = ("cosine", "constant")  # --lr-schedule: the learning rate's factor after the warm-up
LR_STEPS = ("step", "epoch")  # --lr-step: how often the schedule's factor changes


def option(default: Any = MISSING, *, help: str = "", factory=MISSING, **cli) -> Any:
    """A config field with its command-line help; ``cli`` may set ``flag`` (its name), ``aliases``, ``choices``,
    ``parse`` (the flag's argparse ``type``: a function that raises on a bad value),
    ``required`` (on the command line, when no ``--config`` gives it) and ``metavar``."""
    return field(default=default, default_factory=factory, metadata={"help": help, **cli})


class ConfigFromDict:
    """``from_dict``: a dataclass config from a plain dict (what checkpoints store); unknown keys refused."""

    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise TypeError(f"a {cls.__name__} is read from a dict, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        return cls(**d)


@dataclass
class LoopConfig(ConfigFromDict):
    """What the training loop itself reads: data source, schedule, optimizer, seed, checkpoints."""

    dataset: str = option("fashion-mnist", help="dataset", flag="data")
    data_dir: str | None = option(None, help="dataset folder (Fashion-MNIST default: "
                                  "/usr/share/datasets/fashion-mnist)")
    backbone_kwargs: dict = option(factory=dict, help="extra backbone argument, e.g. depth=6 (small-vit); repeatable",
                                   flag="backbone-arg")
    epochs: int = option(10, help="passes over the training set")
    batch_size: int = option(64, help="per process (the loss sees it × world size)")
    lr: float = option(1e-3, help="peak learning rate (Adam)")
    weight_decay: float = option(0.0, help="Adam weight decay")
    warmup_steps: int = option(0, help="linear warm-up steps before the learning-rate schedule")
    lr_schedule: str = option("cosine", help="after the warm-up: cosine (decay to 0 at the last step) or constant "
                              "(CIBHash's code)", choices=LR_SCHEDULES)
    lr_step: str = option("step", help="the cosine's factor changes every step, or once an epoch (WCH's code: "
                          "CosineAnnealingLR(T_max=epochs) stepped per epoch)", choices=LR_STEPS)
    seed: int = option(0, help="seeds the weights, the batch order and every step's randomness")
    checkpoint_every: int = option(0, help="steps between checkpoints (0: every epoch)")
    precision: str = option("fp32", help="forward pass precision: autocast to bf16 or fp16 (fp16 adds a gradient "
                            "scaler)", choices=tuple(PRECISIONS))

    def __post_init__(self):
        """Every value checked before any work starts: a bad one is one clear ValueError / TypeError."""
        check_int("epochs", self.epochs, low=1)
        check_int("batch_size", self.batch_size, low=1)
        check_float("lr", self.lr, low=0, low_open=True, high=MAX_LR)
        check_float("weight_decay", self.weight_decay, low=0)
        check_int("warmup_steps", self.warmup_steps, low=0)
        check_int("seed", self.seed, low=0, high=2**62 - 1)
        check_int("checkpoint_every", self.checkpoint_every, low=0)
        if not isinstance(self.backbone_kwargs, dict):
            raise TypeError(f"backbone_kwargs must be a dict, got {type(self.backbone_kwargs).__name__}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_step not in LR_STEPS:
            raise ValueError(f"lr_step must be one of {LR_STEPS}, got {self.lr_step!r}")
        if self.lr_step == "epoch" and (self.warmup_steps or self.lr_schedule != "cosine"):
            raise ValueError("lr_step='epoch' (--lr-step epoch) moves the cosine once an epoch, from the first step: "
                             f"it takes lr_schedule='cosine' and no warmup_steps, got {self.lr_schedule!r} and "
                             f"{self.warmup_steps}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {self.precision!r}")


def _base_type(f) -> str:
    """'int', 'float', 'str' or 'dict' from the field's annotation (a string: annotations are postponed)."""
    return str(f.type).replace("| None", "").replace("None |", "").strip()


def _parse_pair(item: str, flag: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ValueError(f"--{flag} expects KEY=VALUE, got {item!r}")
    key, value = item.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _flag(f) -> str:
    return f.metadata.get("flag", f.name.replace("_", "-"))


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of the config dataclass ``cls``, plus ``--config FILE``.

    The flags default to "not given" (their help shows the config's default), so that
    :func:`config_from_args` can tell what the command line sets.
    """
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="JSON or TOML (*.toml) file of config fields; flags override it")
    defaults = cls()
    for f in fields(cls):
        meta, kind = f.metadata, _base_type(f)
        flag = _flag(f)
        shown = "required" if meta.get("required") else f"default: {getattr(defaults, f.name)}"
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=f"{meta.get('help', '')} ({shown})".lstrip())
        if kind == "dict":
            kwargs.update(action="append", metavar="KEY=VALUE")
        else:
            kwargs.update(type=meta.get("parse") or {"int": int, "float": float, "str": str}[kind])
            for key in ("choices", "metavar"):
                if key in meta:
                    kwargs[key] = meta[key]
        parser.add_argument(f"--{flag}", *(f"--{alias}" for alias in meta.get("aliases", ())), **kwargs)


def read_config_file(path: str | os.PathLike) -> dict:
    """The dict of a ``--config`` file: TOML when it ends in ``.toml``, JSON otherwise."""
    path = os.fspath(path)
    if path.endswith(".toml") and tomllib is None:
        raise ValueError(f"--config {path!r}: reading TOML needs Python 3.11 or later (tomllib); use JSON")
    try:
        if path.endswith(".toml"):
            with open(path, "rb") as f:
                data = tomllib.load(f)
        else:
            with open(path) as f:
                data = json.load(f)
    except (json.JSONDecodeError, *((tomllib.TOMLDecodeError,) if tomllib else ())) as exc:
        raise ValueError(f"--config {path!r} is not valid {'TOML' if path.endswith('.toml') else 'JSON'}: "
                         f"{exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path!r} must hold a table/object of config fields, got {type(data).__name__}")
    return data


def config_from_args(cls: type, args: argparse.Namespace, parser: argparse.ArgumentParser | None = None):
    """The config of ``args``: the ``--config`` file's fields, overridden by the flags given.

    A ``KEY=VALUE`` flag updates the file's dict key by key. A field marked ``required`` must come
    from one or the other.
    """
    values = read_config_file(args.config) if getattr(args, "config", None) else {}
    for f in fields(cls):
        if not hasattr(args, f.name):
            continue
        given = getattr(args, f.name)
        if _base_type(f) == "dict":
            given = {**values.get(f.name, {}), **dict(_parse_pair(item, _flag(f)) for item in given)}
        values[f.name] = given
    missing = [f"--{_flag(f)}" for f in fields(cls) if f.metadata.get("required") and f.name not in values]
    if missing:
        message = f"the following arguments are required: {', '.join(missing)} (or in --config)"
        if parser is not None:
            parser.error(message)
        raise ValueError(message)
    return cls.from_dict(values)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return {"inf": "inf", "-inf": "-inf"}.get(repr(value), "nan")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"config value {value!r} ({type(value).__name__}) has no TOML form")


def config_toml(config) -> str:
    """``config`` (a config dataclass) as TOML that :func:`read_config_file` reads back to an equal config.

    TOML has no null: a field that is None is left out, which is only allowed where None is the default."""
    lines = []
    for f in fields(config):
        value = getattr(config, f.name)
        if value is None:
            default = f.default if f.default is not MISSING else None
            if default is not None:
                raise ValueError(f"config field {f.name!r} is None but defaults to {default!r}: TOML cannot say so")
            continue
        lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def write_config_toml(path: str | os.PathLike, config) -> None:
    """Write :func:`config_toml` of ``config`` to ``path`` atomically."""
    with atomic_write(path) as f:
        f.write(config_toml(config).encode())
