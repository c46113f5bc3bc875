"""The README's "Reproduce a paper" commands parse, and carry the official code's settings.

The expected values come from the official code: RosieYuu/WCH train.py (`get_config`) and utils/tools.py
(`config_dataset`), zexuanqiu/CIBHash model/base_model.py (`get_general_argparser`) and model/CIBHash.py."""
import inspect
import pathlib
import shlex

import pytest

from hashkern.models import CIBHash
from hashkern.training.cli import build_parser
from hashkern.training.config import config_from_args
from hashkern.training.train import TrainConfig

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"

# WCH: CosineAnnealingLR(T_max=epoch) stepped per epoch, "test_map": 10 with the best mAP kept,
# transforms.Resize(224) + CenterCrop(224). CIBHash: validate_frequency 20, the best validation epoch kept.
WCH = {"lr": 1e-5, "lr_schedule": "cosine", "lr_step": "epoch", "epochs": 50, "batch_size": 32,
       "backbone": "vit-b16", "augment": "wch", "eval_every": 10, "keep": "best"}
CIBHASH = {"lr": 1e-3, "lr_schedule": "constant", "epochs": 60, "batch_size": 64, "backbone": "vgg16",
           "augment": "cibhash", "dataset": "cifar10-cibhash", "eval_every": 20, "keep": "best"}
TOPK = {"cifar10": 1000, "cifar10-cibhash": 1000, "imagelist": 5000}  # config_dataset; CIBHash's topK 1000


def _commands() -> list[list[str]]:
    section = README.read_text().split("## Reproduce a paper", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip() and
            not line.lstrip().startswith("#")]


def _train_configs() -> list[TrainConfig]:
    parser = build_parser()
    configs = []
    for argv in _commands():
        assert argv[0] == "hashkern", argv
        args = parser.parse_args(argv[1:])  # every flag exists and takes its value
        if argv[1] == "train":
            configs.append(config_from_args(TrainConfig, args, parser._subparsers._group_actions[0].choices["train"]))
    return configs


def test_every_command_parses_and_every_paper_and_dataset_is_there():
    configs = _train_configs()
    assert {(c.method, c.dataset) for c in configs} >= {("wch", "cifar10"), ("wch", "imagelist"),
                                                        ("cibhash", "cifar10-cibhash"), ("nsh", "cifar10")}
    lists = {c.train_list for c in configs if c.dataset == "imagelist"}
    assert any("nuswide_21" in p for p in lists) and any("coco" in p for p in lists)


@pytest.mark.parametrize("method,settings", [("wch", WCH), ("cibhash", CIBHASH)])
def test_the_commands_carry_the_official_settings(method, settings):
    for config in (c for c in _train_configs() if c.method == method):
        assert {k: getattr(config, k) for k in settings} == settings
        assert config.topk == TOPK[config.dataset]
        if config.dataset == "imagelist":
            assert config.query_list and config.database_list and config.train_list
            assert config.image_resize == ("center-crop" if method == "wch" else "stretch")


def test_cibhash_command_states_the_official_loss_weights_which_are_the_defaults():
    defaults = inspect.signature(CIBHash).parameters
    for config in (c for c in _train_configs() if c.method == "cibhash"):
        assert config.model_kwargs == {"temperature": 0.3, "kl_weight": 0.001}  # -t 0.3, -w 0.001
        assert all(defaults[k].default == v for k, v in config.model_kwargs.items())
