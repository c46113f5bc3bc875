"""`hashkern train` checks every config value before work starts (one line, exit 2), and stops on a
non-finite loss keeping the last good checkpoint (issue 25)."""
import os

import pytest
import torch
from faults import fill_disk_after
from synthetic_data import write_fashion_mnist

from hashkern.training.checkpoint import load_checkpoint
from hashkern.training.cli import main

TRAIN = ["--epochs", "1", "--batch-size", "8", "--bits", "8", "--query-per-class", "1", "--train-per-class", "2",
         "--topk", "10", "--no-progress", "--backbone-arg", "patch_size=7", "--backbone-arg", "embed_dim=16",
         "--backbone-arg", "depth=1", "--backbone-arg", "num_heads=2", "--model-arg", "hidden=16"]

BAD = [
    (["--max-steps", "0"], "--max-steps must be >= 1"),
    (["--max-steps", "-3"], "--max-steps must be >= 1"),
    (["--lr", "inf"], "lr must be a finite number > 0 and <= 10"),
    (["--lr", "nan"], "lr must be a finite number > 0 and <= 10"),
    (["--lr", "1e300"], "lr must be a finite number > 0 and <= 10"),
    (["--lr", "-1"], "lr must be a finite number > 0 and <= 10"),
    (["--weight-decay", "-1"], "weight_decay must be a finite number >= 0"),
    (["--topk", "0"], "topk must be >= 1"),
    (["--topk", "-1"], "topk must be >= 1"),
    (["--database-size", "0"], "database_size must be >= 1"),
    (["--eval-every", "-1"], "eval_every must be >= 0"),
    (["--checkpoint-every", "-2"], "checkpoint_every must be >= 0"),
    (["--warmup-steps", "-5"], "warmup_steps must be >= 0"),
    (["--query-per-class", "0"], "query_per_class must be >= 1"),
    (["--backbone-lr-scale", "inf"], "backbone_lr_scale must be a finite number"),
]


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_fashion_mnist(str(root), n_train_per_class=4, n_test_per_class=1)
    return str(root)


@pytest.mark.parametrize("extra, message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_config_values_fail_at_once_with_one_line(tmp_path, capsys, monkeypatch, extra, message):
    import hashkern.training.train as train

    def no_work(*a, **k):
        raise AssertionError("the data was loaded before the configuration was checked")

    monkeypatch.setattr(train, "load_split", no_work)
    out = tmp_path / "run"
    rc = main(["train", "--method", "nsh", "--data-dir", str(tmp_path), "--out", str(out), *TRAIN, *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_out_naming_an_existing_file_is_refused_before_work(tmp_path, capsys, monkeypatch):
    import hashkern.training.train as train

    monkeypatch.setattr(train, "load_split", lambda *a, **k: (_ for _ in ()).throw(AssertionError("data loaded")))
    out = tmp_path / "a-file"
    out.write_text("keep")
    rc = main(["train", "--method", "nsh", "--data-dir", str(tmp_path), "--out", str(out), *TRAIN])
    err = capsys.readouterr().err
    assert rc == 2 and "is an existing file, not a folder" in err
    assert out.read_text() == "keep"


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, fmnist, capsys, monkeypatch):
    out = tmp_path / "run"
    args = ["train", "--method", "nsh", "--data-dir", fmnist, "--out", str(out), *TRAIN,
            "--model-arg", "num_positives=2", "--checkpoint-every", "1", "--epochs", "3"]
    from hashkern.training import loop

    real_step = loop.TrainingLoop.train_step
    poisoned = {"step": 2}

    def poisoning_step(self, step, *rest):
        if step == poisoned["step"]:  # the model's weights turn NaN: the loss of this step is NaN
            with torch.no_grad():
                for p in self.model.parameters():
                    p.fill_(float("nan"))
        return real_step(self, step, *rest)

    monkeypatch.setattr(loop.TrainingLoop, "train_step", poisoning_step)
    rc = main(args)
    captured = capsys.readouterr()
    assert rc == 2, captured
    assert "non-finite" in captured.err and "step 3" in captured.err and "is kept" in captured.err
    assert "mAP" not in captured.out
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not os.path.exists(out / "eval.json")


def test_full_disk_during_a_checkpoint_save_is_one_line_and_exit_2(tmp_path, fmnist, capsys, monkeypatch):
    fill_disk_after(monkeypatch, 4096)
    out = tmp_path / "run"
    rc = main(["train", "--method", "nsh", "--data-dir", fmnist, "--out", str(out), *TRAIN,
               "--model-arg", "num_positives=2"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "No space left on device" in err and str(out / "last.pt") in err
    assert not out.joinpath("last.pt").exists() and not [f for f in os.listdir(out) if f.endswith(".tmp")]


def test_eval_json_into_special_files_keeps_them(tmp_path, fmnist, capsys):
    import stat
    import threading

    out = tmp_path / "run"
    assert main(["train", "--method", "nsh", "--data-dir", fmnist, "--out", str(out), *TRAIN,
                 "--model-arg", "num_positives=2"]) == 0
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()), daemon=True)
    reader.start()
    assert main(["eval", str(out / "last.pt"), "--json", str(fifo), "--plot", str(tmp_path / "pr.png")]) == 0
    reader.join(30)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and got and b'"map@10"' in got[0]
    if os.geteuid() == 0:
        null = tmp_path / "null"
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        assert main(["eval", str(out / "last.pt"), "--json", str(null), "--plot", str(null)]) == 0
        assert stat.S_ISCHR(os.lstat(null).st_mode) and os.lstat(null).st_rdev == os.makedev(1, 3)
