"""Trainer: runs, checkpoints atomically, resumes to the bit, refuses to overwrite or to load bad files."""
import math
import os

import pytest
import torch
from synthetic_data import tiny_split

from hashkern.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from hashkern.training.checkpoint_eval import evaluate_checkpoint
from hashkern.training.train import TrainConfig, Trainer, epoch_order

TINY_VIT = {"patch_size": 7, "embed_dim": 16, "depth": 1, "num_heads": 2}


def _cfg(method="nsh", **kw):
    base = dict(method=method, bits=8, epochs=2, batch_size=8, lr=1e-3, topk=10, seed=3,
                backbone_kwargs=TINY_VIT, model_kwargs={"hidden": 16} if method != "nsh" else
                {"hidden": 16, "latent_dim": 8, "num_positives": 2})
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def split():
    return tiny_split(n_query=1, n_train=2, n_db=3)  # 10 queries, 20 training images, 30 database


def test_fit_checkpoint_and_evaluate(tmp_path, split):
    tr = Trainer(_cfg(), str(tmp_path), split=split, progress=False, device="cpu")
    assert tr.steps_per_epoch == 2 and tr.total_steps == 4  # 20 // 8, last incomplete batch dropped
    history = tr.fit()
    assert len(history["loss"]) == 4 and all(torch.isfinite(torch.tensor(history["loss"])))
    state = load_checkpoint(tr.checkpoint_path)
    assert state["step"] == 4 and state["train_config"]["method"] == "nsh"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]  # no leftovers
    result = tr.evaluate()
    assert 0.0 <= result["map@10"] <= 1.0 and 0.0 <= result["p@r2"] <= 1.0
    assert len(result["pr"]["precision"]) == 9  # radii 0..K
    again = evaluate_checkpoint(tr.checkpoint_path, split=split, device="cpu")
    assert again["map@10"] == pytest.approx(result["map@10"])
    assert again["step"] == 4 and again["database_size"] == 30


@pytest.mark.parametrize("method", ["cibhash", "wch", "nsh"])
def test_resume_gives_identical_weights(tmp_path, split, method):
    cfg = _cfg(method, checkpoint_every=1)
    whole = Trainer(cfg, str(tmp_path / "a"), split=split, progress=False, device="cpu")
    whole.fit()
    part = Trainer(cfg, str(tmp_path / "b"), split=split, progress=False, device="cpu")
    part.fit(max_steps=3)  # "interrupted" after step 3 of 4, mid-epoch 2
    del part
    torch.manual_seed(12345)  # whatever the global RNG holds, the resumed run is the same
    resumed = Trainer(cfg, str(tmp_path / "b"), split=split, progress=False, device="cpu", resume=True)
    assert resumed.step == 3
    resumed.fit()
    for (k, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert resumed.history["loss"] == whole.history["loss"]
    assert resumed.optimizer.state_dict()["state"].keys() == whole.optimizer.state_dict()["state"].keys()


def test_epoch_order_is_a_seeded_permutation():
    a = epoch_order(17, 0, 0)
    assert torch.equal(a.sort().values, torch.arange(17))
    assert torch.equal(a, epoch_order(17, 0, 0))
    assert not torch.equal(a, epoch_order(17, 0, 1)) and not torch.equal(a, epoch_order(17, 1, 0))


def test_the_per_step_seeds_are_the_ones_shipped_runs_used():
    # Changing these changes every run's batches and augmentations, so the shipped weights and the
    # demo table could no longer be reproduced: the values are pinned (from before the loop moved).
    from hashkern.training.loop import step_seed

    assert step_seed(3, 5) == 3051949 and step_seed(0, -1) == 4426
    assert epoch_order(12, 3, 1).tolist() == [7, 3, 9, 1, 5, 6, 10, 4, 11, 2, 0, 8]


def test_atomic_save_keeps_old_checkpoint_on_failure(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pt")
    save_checkpoint(path, {"a": torch.ones(3)})
    before = open(path, "rb").read()

    def boom(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"a": torch.zeros(3)})
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["last.pt"]


def test_bad_checkpoints_and_nothing_overwritten(tmp_path, split):
    out = tmp_path / "run"
    out.mkdir()
    ckpt = out / "last.pt"
    ckpt.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a hashkern checkpoint"):
        Trainer(_cfg(), str(out), split=split, resume=True, progress=False)
    with pytest.raises(FileExistsError, match="pass --resume"):
        Trainer(_cfg(), str(out), split=split, progress=False)
    assert ckpt.read_bytes() == b"\x00garbage"  # untouched
    torch.save({"weights": torch.ones(2)}, ckpt)
    with pytest.raises(CheckpointError, match="not a hashkern checkpoint"):
        load_checkpoint(str(ckpt))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "none.pt"))
    good = tmp_path / "good"
    Trainer(_cfg(epochs=1), str(good), split=split, progress=False).fit()
    with pytest.raises(ValueError, match="different configuration"):
        Trainer(_cfg(epochs=1, bits=16), str(good), split=split, progress=False, resume=True)


def test_config_validation(split, tmp_path):
    with pytest.raises(ValueError, match="unknown method 'hashnet'"):
        TrainConfig(method="hashnet")
    with pytest.raises(ValueError, match="bits must be >= 1"):
        TrainConfig(bits=0)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        TrainConfig(lr=0.0)
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_dict({"method": "nsh", "colour": 1})
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="lr_step must be one of"):
        TrainConfig(lr_step="batch")
    for meaningless in ({"warmup_steps": 3}, {"lr_schedule": "constant"}):  # WCH's per-epoch cosine has neither
        with pytest.raises(ValueError, match="--lr-step epoch"):
            TrainConfig(lr_step="epoch", **meaningless)
    with pytest.raises(ValueError, match="smaller than one global batch"):
        Trainer(_cfg(batch_size=64), str(tmp_path), split=split, progress=False)


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_learning_rate_schedules(tmp_path, split, schedule):
    """After 2 warm-up steps: cosine decays to 0 at the last step; constant (CIBHash's code) stays at --lr."""
    tr = Trainer(_cfg(epochs=3, warmup_steps=2, lr_schedule=schedule), str(tmp_path), split=split, progress=False)
    rates = []
    for _ in range(tr.total_steps):
        rates.append(tr.optimizer.param_groups[0]["lr"])
        tr.optimizer.step()
        tr.scheduler.step()
    assert rates[:2] == pytest.approx([5e-4, 1e-3])
    if schedule == "constant":
        assert rates[2:] == pytest.approx([1e-3] * 4)
    else:
        assert rates[2:] == pytest.approx([1e-3 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)])


def test_cosine_stepped_per_epoch_is_wchs_cosine_annealing(tmp_path, split):
    """--lr-step epoch: the rate of every step of epoch e is CosineAnnealingLR(T_max=epochs)'s after e
    scheduler steps, as RosieYuu/WCH train.py steps it once an epoch."""
    tr = Trainer(_cfg(epochs=5, lr=1e-5, lr_step="epoch"), str(tmp_path), split=split, progress=False)
    reference_opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-5)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(reference_opt, T_max=5)
    for epoch in range(5):
        for _ in range(tr.steps_per_epoch):
            assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(reference_opt.param_groups[0]["lr"],
                                                                       rel=1e-12, abs=1e-20), epoch
            tr.optimizer.step()
            tr.scheduler.step()
        reference_opt.step()
        reference.step()
    assert tr.steps_per_epoch == 2


def test_fine_tuning_from_the_shipped_backbone_with_a_gentler_backbone_lr(tmp_path, split):
    from hashkern.models import build_backbone

    cfg = _cfg(method="wch", backbone="fmnist-vit", backbone_kwargs={"pretrained": True}, backbone_lr_scale=0.1,
               epochs=1)
    tr = Trainer(cfg, str(tmp_path), split=split, progress=False, device="cpu")
    shipped = build_backbone("fmnist-vit", pretrained=True).state_dict()
    assert all(torch.equal(v, tr.model.backbone.state_dict()[k]) for k, v in shipped.items())
    head, backbone = tr.optimizer.param_groups
    assert backbone["lr"] == pytest.approx(head["lr"] * 0.1)
    assert {id(p) for p in backbone["params"]} == {id(p) for p in tr.model.backbone.parameters()}
    tr.fit()
    resumed = Trainer(cfg, str(tmp_path), split=split, progress=False, device="cpu", resume=True)
    assert len(resumed.optimizer.param_groups) == 2 and resumed.step == tr.step
    for bad in (-0.1, float("inf"), True, "0.1"):
        with pytest.raises((ValueError, TypeError), match="backbone_lr_scale"):
            _cfg(backbone_lr_scale=bad)


def _sha(path):
    import hashlib
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_keep_best_writes_the_best_evaluated_model_and_resumes_to_the_same_file(tmp_path, split):
    cfg = _cfg("wch", epochs=3, lr=1e-2, keep="best", eval_every=1, checkpoint_every=1)
    straight = Trainer(cfg, str(tmp_path / "a"), split=split, progress=False, device="cpu")
    straight.fit()
    evals = straight.history["eval"]
    assert [r["step"] for r in evals] == [2, 4, 6] and {r["on"] for r in evals} == {"query"}  # the last epoch too
    best = max(range(3), key=lambda i: (evals[i]["map@10"], -i))  # ties: the earlier epoch
    kept = load_checkpoint(straight.best_path)
    assert kept["step"] == evals[best]["step"]
    assert evaluate_checkpoint(straight.best_path, split=split, device="cpu")["map@10"] == pytest.approx(
        evals[best]["map@10"], abs=1e-12)
    part = Trainer(cfg, str(tmp_path / "b"), split=split, progress=False, device="cpu")
    part.fit(max_steps=3)
    del part
    resumed = Trainer(cfg, str(tmp_path / "b"), split=split, progress=False, device="cpu", resume=True)
    resumed.fit()
    assert _sha(tmp_path / "b" / "best.pt") == _sha(straight.best_path)
    assert _sha(tmp_path / "b" / "last.pt") == _sha(straight.checkpoint_path)
    fresh = Trainer(_cfg("wch", epochs=1), str(tmp_path / "a"), split=split, progress=False, device="cpu",
                    overwrite=True)
    assert not os.path.exists(fresh.best_path)  # the earlier run's best is not left beside a new run
    with pytest.raises(ValueError, match="eval_every >= 1"):
        TrainConfig(method="nsh", keep="best")
    with pytest.raises(ValueError, match="keep must be one of"):
        TrainConfig(method="nsh", keep="first")


@pytest.mark.parametrize("scores,kept_epoch", [([0.3, 0.5, 0.4], 2), ([0.5, 0.5, 0.2], 1), ([0.1, 0.2, 0.3], 3)])
def test_keep_best_chooses_on_the_validation_queries_when_the_split_has_them(tmp_path, split, monkeypatch, scores,
                                                                           kept_epoch):
    """CIBHash's code chooses its epoch on validation queries (strictly better replaces, ties keep the
    earlier); the queries themselves are never looked at before the end."""
    from hashkern.training.data import Split
    from hashkern.training.train import HashingTask

    with_validation = Split(split.query, split.train, split.database, validation=split.query.subset(torch.arange(5)))
    asked = []

    def scripted(self, metrics=("map",), on="query"):
        asked.append(on)
        return {"map@10": scores[len(asked) - 1]}

    monkeypatch.setattr(HashingTask, "evaluate", scripted)
    tr = Trainer(_cfg(epochs=3, keep="best", eval_every=1), str(tmp_path), split=with_validation, progress=False)
    tr.fit()
    assert asked == ["validation"] * 3
    assert [r["on"] for r in tr.history["eval"]] == ["validation"] * 3
    assert load_checkpoint(tr.best_path)["step"] == kept_epoch * tr.steps_per_epoch


def test_keep_best_evaluates_every_eval_every_epochs_and_the_last(tmp_path, split, monkeypatch):
    from hashkern.training.train import HashingTask

    monkeypatch.setattr(HashingTask, "evaluate", lambda self, metrics=("map",), on="query": {"map@10": 0.5})
    tr = Trainer(_cfg(epochs=5, keep="best", eval_every=2), str(tmp_path), split=split, progress=False)
    tr.fit()
    assert [r["step"] // tr.steps_per_epoch for r in tr.history["eval"]] == [2, 4, 5]
    assert load_checkpoint(tr.best_path)["step"] == 2 * tr.steps_per_epoch


def test_resume_repairs_a_best_pt_lost_between_the_two_writes_and_refuses_other_mismatches(tmp_path, split,
                                                                                          monkeypatch):
    """A new best writes last.pt, then best.pt: a run stopped between the two resumes from the chosen state
    and rewrites best.pt; a best.pt that is missing or of another step than the history chose is refused."""
    from hashkern.training.train import HashingTask

    scores = iter([0.5, 0.4, 0.3, 0.5, 0.4, 0.3])
    monkeypatch.setattr(HashingTask, "evaluate", lambda self, metrics=("map",), on="query": {"map@10": next(scores)})
    cfg = _cfg(epochs=3, keep="best", eval_every=1)
    straight = Trainer(cfg, str(tmp_path / "a"), split=split, progress=False)
    straight.fit()
    assert load_checkpoint(straight.best_path)["step"] == 2
    part = Trainer(cfg, str(tmp_path / "b"), split=split, progress=False)
    part.fit(max_steps=2)  # epoch 1 chose its model: last.pt and best.pt both at step 2
    os.remove(part.best_path)  # as if stopped after last.pt was written
    resumed = Trainer(cfg, str(tmp_path / "b"), split=split, progress=False, resume=True)
    assert _sha(resumed.best_path) == _sha(straight.best_path)  # rebuilt from the restored state
    resumed.fit()
    assert _sha(resumed.best_path) == _sha(straight.best_path)
    assert _sha(resumed.checkpoint_path) == _sha(straight.checkpoint_path)

    scores = iter([0.5, 0.4])
    part = Trainer(cfg, str(tmp_path / "c"), split=split, progress=False)
    part.fit(max_steps=4)  # the history chose step 2; last.pt is at step 4
    os.remove(part.best_path)
    with pytest.raises(CheckpointError, match="missing, but this run's history chose the model of step 2"):
        Trainer(cfg, str(tmp_path / "c"), split=split, progress=False, resume=True)
    import shutil
    shutil.copyfile(part.checkpoint_path, part.best_path)  # a best.pt of the wrong step
    with pytest.raises(CheckpointError, match="of step 4, but this run's history chose the model of step 2"):
        Trainer(cfg, str(tmp_path / "c"), split=split, progress=False, resume=True)
