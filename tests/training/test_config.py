"""The train and pretrain flags come from the config dataclasses; --config FILE (JSON, TOML) under the flags."""
import json
from dataclasses import asdict, fields

import pytest

from hashkern.training.cli import build_parser
from hashkern.training.config import config_from_args
from hashkern.training.pretrain import PretrainConfig
from hashkern.training.train import TrainConfig


def _config(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    sub = parser._subparsers._group_actions[0].choices[args.command]
    return config_from_args(TrainConfig if args.command == "train" else PretrainConfig, args, sub)


def test_every_config_field_is_a_flag_with_the_config_default():
    parser = build_parser()
    subs = parser._subparsers._group_actions[0].choices
    for command, cls in (("train", TrainConfig), ("pretrain", PretrainConfig)):
        dests = {a.dest: a for a in subs[command]._actions}
        for f in fields(cls):
            assert f.name in dests, (command, f.name)
            assert str(getattr(cls(), f.name)) in dests[f.name].help or dests[f.name].required is False
    assert _config(["train", "--method", "wch"]) == TrainConfig(method="wch")
    assert TrainConfig().epochs == 10  # the command line's default, now the config's too
    assert _config(["pretrain"]) == PretrainConfig()
    cfg = _config(["train", "--method", "nsh", "--data", "cifar10", "--epochs", "3", "--lr", "0.5",
                   "--model-arg", "hidden=16", "--model-arg", "name=x", "--backbone-arg", "depth=2"])
    assert (cfg.dataset, cfg.epochs, cfg.lr) == ("cifar10", 3, 0.5)
    assert cfg.model_kwargs == {"hidden": 16, "name": "x"} and cfg.backbone_kwargs == {"depth": 2}
    with pytest.raises(SystemExit):
        _config(["train", "--method", "nsh", "--backbone", "resnet"])  # choices from the field's metadata
    with pytest.raises(ValueError, match="KEY=VALUE"):
        _config(["train", "--method", "nsh", "--model-arg", "hidden"])


@pytest.mark.parametrize("kind", ["json", "toml"])
def test_config_file_with_flags_overriding_it(tmp_path, kind):
    path = tmp_path / f"run.{kind}"
    if kind == "json":
        path.write_text(json.dumps({"method": "wch", "bits": 16, "epochs": 3, "model_kwargs": {"hidden": 16}}))
    else:
        path.write_text('method = "wch"\nbits = 16\nepochs = 3\n[model_kwargs]\nhidden = 16\n')
    cfg = _config(["train", "--config", str(path), "--bits", "32", "--model-arg", "head_init=\"torch\""])
    assert (cfg.method, cfg.bits, cfg.epochs) == ("wch", 32, 3)
    assert cfg.model_kwargs == {"hidden": 16, "head_init": "torch"}
    assert asdict(_config(["train", "--config", str(path)])) == asdict(
        TrainConfig(method="wch", bits=16, epochs=3, model_kwargs={"hidden": 16}))


def test_config_file_errors_name_the_problem(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"method": "nsh", "colour": 1}')
    with pytest.raises(ValueError, match="unknown config keys"):
        _config(["train", "--config", str(bad)])
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="table/object"):
        _config(["train", "--config", str(bad)])
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        _config(["train", "--config", str(bad)])
    no_method = tmp_path / "no_method.toml"
    no_method.write_text("bits = 16\n")
    with pytest.raises(SystemExit):
        _config(["train", "--config", str(no_method)])
    assert "--method" in capsys.readouterr().err
