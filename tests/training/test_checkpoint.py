"""Checkpoint integrity: every corrupted byte is refused, and states that do not fit the model are refused at load."""
import os
import struct

import pytest
import torch
from synthetic_data import tiny_split

from hashkern.training.checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    check_fits,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from hashkern.training.checkpoint_eval import evaluate_checkpoint
from hashkern.training.cli import main
from hashkern.training.train import TrainConfig, Trainer

# The smallest model the trainer builds: a checkpoint of a few KB, so every byte can be flipped.
TINY = {"patch_size": 14, "embed_dim": 4, "depth": 1, "num_heads": 1}


def _cfg(**kw):
    base = dict(method="cibhash", bits=4, epochs=1, batch_size=8, lr=1e-3, topk=5, seed=1,
                backbone_kwargs=TINY, model_kwargs={"hidden": 4})
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def split():
    return tiny_split(n_query=1, n_train=2, n_db=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory, split):
    """A run folder whose last.pt is one step into a two-step run."""
    out = str(tmp_path_factory.mktemp("run"))
    trainer = Trainer(_cfg(), out, split=split, progress=False, device="cpu")
    trainer.fit(max_steps=1)
    return out, trainer


def _flip_every_byte_refused(path: str) -> int:
    good = open(path, "rb").read()
    refused = 0
    with open(path, "r+b") as f:
        for i in range(len(good)):
            f.seek(i)
            f.write(bytes([good[i] ^ (1 << (i % 8))]))  # one bit, a different one along the file
            f.flush()
            try:
                load_checkpoint(path)
            except CheckpointError as exc:
                assert repr(path) in str(exc)
                refused += 1
            f.seek(i)
            f.write(good[i:i + 1])
    assert open(path, "rb").read() == good
    return refused


def test_every_single_byte_flip_is_refused(run, tmp_path):
    path = str(tmp_path / "last.pt")
    with open(os.path.join(run[0], "last.pt"), "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    size = os.path.getsize(path)
    assert size < 64_000  # small enough to flip every byte in a few seconds
    assert _flip_every_byte_refused(path) == size
    load_checkpoint(path)  # the restored file still loads


def test_truncations_and_foreign_files_are_refused(run, tmp_path):
    good = open(os.path.join(run[0], "last.pt"), "rb").read()
    path = tmp_path / "c.pt"
    for cut in (0, 1, 7, 12, 40, len(good) // 2, len(good) - 1):
        path.write_bytes(good[:cut])
        with pytest.raises(CheckpointError, match="truncated|not a hashkern checkpoint|checksum"):
            load_checkpoint(path)
    path.write_bytes(good + b"\0")
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)
    torch.save(load_checkpoint(os.path.join(run[0], "last.pt")), path)  # a version-1 style bare torch file
    with pytest.raises(CheckpointError, match="plain torch file without hashkern's checksum"):
        load_checkpoint(path)
    path.write_bytes(good[:8] + struct.pack("<I", CHECKPOINT_VERSION + 1) + good[12:])
    with pytest.raises(CheckpointError, match=f"format version {CHECKPOINT_VERSION + 1}"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def _resave(run, tmp_path, edit) -> str:
    """A copy of the run folder whose checkpoint's state was edited and saved with a valid checksum."""
    out = tmp_path / "edited"
    out.mkdir()
    state = load_checkpoint(os.path.join(run[0], "last.pt"))
    edit(state)
    save_checkpoint(out / "last.pt", state)
    return str(out)


def _first_param(state):
    return next(k for k, v in state["model"].items() if v.dim() == 2)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["model"].__setitem__(_first_param(s), torch.zeros(3, 3)), "does not fit the model"),
    (lambda s: s["model"].pop(_first_param(s)), "missing"),
    (lambda s: s["model"].__setitem__("extra.weight", torch.zeros(1)), "unexpected"),
    (lambda s: s["model"].__setitem__(_first_param(s), s["model"][_first_param(s)].double()), "float64"),
    (lambda s: s["optimizer"]["state"].clear(), "missing optimizer state"),
    (lambda s: s["optimizer"]["state"][0].__setitem__("exp_avg", torch.zeros(1, 2, 3)), "exp_avg"),
    (lambda s: s["optimizer"]["param_groups"].append(dict(s["optimizer"]["param_groups"][0])), "parameter groups"),
    (lambda s: s["optimizer"].pop("state"), "no optimizer state"),
    (lambda s: s["scheduler"].__setitem__("last_epoch", 7), "scheduler is at step 7"),
    (lambda s: s["history"]["loss"].clear(), "0 losses for 1 steps"),
    (lambda s: s.__setitem__("step", 5), "run at step 5"),
    (lambda s: s.pop("optimizer"), "no valid 'optimizer' entry"),
    (lambda s: s.__setitem__("step", "1"), "no valid 'step' entry"),
], ids=["shape", "missing-key", "extra-key", "dtype", "no-adam-state", "moment-shape", "groups", "no-state",
        "scheduler", "history", "step", "no-optimizer", "step-type"])
def test_states_that_do_not_fit_are_refused_at_load(run, tmp_path, split, edit, message):
    out = _resave(run, tmp_path, edit)
    with pytest.raises(CheckpointError, match=message):
        Trainer(_cfg(), out, split=split, progress=False, device="cpu", resume=True)
    assert load_checkpoint(os.path.join(run[0], "last.pt"))  # the original is untouched


def test_model_shape_mismatch_refused_for_eval(run, tmp_path, split):
    out = _resave(run, tmp_path, lambda s: s["model"].__setitem__(_first_param(s), torch.zeros(2, 2)))
    state = load_checkpoint(os.path.join(out, "last.pt"))
    with pytest.raises(CheckpointError, match="does not fit the model"):
        model_from_checkpoint(state, "x.pt")
    with pytest.raises(CheckpointError, match="does not fit the model"):
        evaluate_checkpoint(os.path.join(out, "last.pt"), split=split, device="cpu")


def test_a_good_checkpoint_fits_and_resumes(run, split):
    out, trainer = run
    state = load_checkpoint(os.path.join(out, "last.pt"))
    check_fits("last.pt", state, trainer.model, trainer.optimizer, trainer.scheduler)
    resumed = Trainer(_cfg(), out, split=split, progress=False, device="cpu", resume=True)
    assert resumed.step == 1
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_cli_refuses_a_corrupted_checkpoint_with_one_line(run, tmp_path, capsys):
    path = tmp_path / "last.pt"
    good = open(os.path.join(run[0], "last.pt"), "rb").read()
    path.write_bytes(good[:500] + bytes([good[500] ^ 0x10]) + good[501:])
    assert main(["eval", str(path), "--json", str(tmp_path / "e.json"), "--plot", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checksum" in err and str(path) in err
    assert not (tmp_path / "e.json").exists()
    rc = main(["train", "--method", "cibhash", "--out", str(tmp_path), "--resume", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "checksum" in err
