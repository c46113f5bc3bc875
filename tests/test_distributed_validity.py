"""A bad argument on one rank of sharded_hamming_topk: every rank raises the same clear error at
once (issue 25), with 2 and 3 gloo ranks, instead of the others waiting for the group's timeout."""
import datetime
import time
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hashkern.distributed_search import sharded_hamming_topk

BAD = {
    "k": lambda rank, q, db: (q, db, 0 if rank == 1 else 3),
    "dtype": lambda rank, q, db: (q, db.float() if rank == 1 else db, 3),
    "width": lambda rank, q, db: (q, db[:, :1] if rank == 1 else db, 3),
}


def _worker(rank, world, init_file, out):
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=60))
        q = torch.randint(0, 256, (4, 2), dtype=torch.uint8)
        db = torch.randint(0, 256, (10, 2), dtype=torch.uint8)
        lines = []
        for name, make in BAD.items():
            start = time.monotonic()
            try:
                sharded_hamming_topk(*make(rank, q, db))
                lines.append(f"{name}: accepted")
            except ValueError as exc:
                lines.append(f"{name}: {time.monotonic() - start < 20} {exc}")
        # The group still works afterwards: no rank was left behind in a collective.
        d, _ = sharded_hamming_topk(q, db, 3)
        lines.append(f"after: {tuple(d.shape)}")
        dist.destroy_process_group()
        with open(f"{out}.{rank}", "w") as f:
            f.write("\n".join(lines))
    except BaseException:
        with open(f"{out}.{rank}", "w") as f:
            f.write(traceback.format_exc())
        raise


@pytest.mark.parametrize("world", [2, 3])
def test_a_bad_argument_on_one_rank_fails_every_rank_alike(tmp_path, world):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    out = str(tmp_path / "out")
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), out), nprocs=world, join=True)
    reports = [open(f"{out}.{r}").read().splitlines() for r in range(world)]
    assert all(r == reports[0] for r in reports), reports  # the same error on every rank
    for name, line in zip(BAD, reports[0]):
        assert line.startswith(f"{name}: True sharded_hamming_topk: invalid arguments on rank 1: "), line
    assert reports[0][-1] == "after: (4, 3)"
