"""--keep best under data parallelism: a refused resume stops every rank (none waits in a collective for
rank 0, which writes best.pt)."""
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from synthetic_data import tiny_split

from hashkern.training.checkpoint import load_checkpoint
from hashkern.training.train import TrainConfig, Trainer

CONFIG = dict(method="nsh", bits=8, epochs=3, batch_size=4, lr=1e-3, topk=10, seed=3, keep="best", eval_every=1,
              backbone_kwargs={"patch_size": 7, "embed_dim": 16, "depth": 1, "num_heads": 2},
              model_kwargs={"hidden": 16, "latent_dim": 8, "num_positives": 2})


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir, phase):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        split = tiny_split(n_query=1, n_train=2, n_db=3)  # 20 training images: 2 steps an epoch at 2 x 4
        run = os.path.join(out_dir, "run")
        try:
            trainer = Trainer(TrainConfig(**CONFIG), run, split=split, progress=False, device="cpu",
                              resume=phase == "resume")
            trainer.fit(max_steps=4)
            outcome = "trained"
        except Exception as exc:  # noqa: BLE001 - the test reads what each rank raised
            outcome = f"{type(exc).__name__}: {exc}"
        with open(os.path.join(out_dir, f"{phase}{rank}.txt"), "w") as f:
            f.write(outcome)
    finally:
        dist.destroy_process_group()


def _run(tmp_path, phase, world=2, timeout=120):
    ctx = mp.start_processes(_worker, args=(world, _free_port(), str(tmp_path), phase), nprocs=world, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        assert time.monotonic() < deadline, f"{phase}: the ranks did not finish in {timeout} s (a hang)"
    return [open(tmp_path / f"{phase}{r}.txt").read() for r in range(world)]


def test_a_refused_resume_stops_every_rank(tmp_path):
    assert _run(tmp_path, "start") == ["trained", "trained"]  # 2 epochs: best.pt chosen at epoch 1 or 2
    best = tmp_path / "run" / "best.pt"
    assert load_checkpoint(str(best))["step"] in (2, 4)
    history = load_checkpoint(str(tmp_path / "run" / "last.pt"))["history"]["eval"]
    assert [(r["step"], r["on"]) for r in history] == [(2, "query"), (4, "query")]
    chosen = max(history, key=lambda r: r["map@10"])["step"]
    os.remove(best)
    outcomes = _run(tmp_path, "resume")
    if chosen == 4:  # as if stopped between last.pt and best.pt: rebuilt from the restored state, trained on
        assert outcomes == ["trained", "trained"] and load_checkpoint(str(best))["step"] == 4
    else:  # the model of step 2 is gone: rank 0 refuses, and rank 1 stops with it instead of waiting
        assert outcomes[0].startswith("CheckpointError") and "missing" in outcomes[0]
        assert outcomes[1].startswith("RuntimeError: another rank stopped this run")
