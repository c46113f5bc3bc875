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
import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: --config takes JSON only
    tomllib = None

import tomllib

__all__ = ["ConfigFromDict", "LoopConfig", "option", "add_config_arguments", "config_from_args", "read_config_file"]


def option(default: Any = MISSING, *, help: str = "", factory=MISSING, **cli) -> Any:
    """A config field with its command-line help; ``cli`` may set ``flag`` (its name), ``choices``,
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
    warmup_steps: int = option(0, help="linear warm-up steps before the cosine decay")
    seed: int = option(0, help="seeds the weights, the batch order and every step's randomness")
    checkpoint_every: int = option(0, help="steps between checkpoints (0: every epoch)")

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


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
            kwargs.update(type={"int": int, "float": float, "str": str}[kind])
            for key in ("choices", "metavar"):
                if key in meta:
                    kwargs[key] = meta[key]
        parser.add_argument(f"--{flag}", **kwargs)


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
