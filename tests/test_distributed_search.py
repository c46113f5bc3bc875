"""Sharded top-k with 2 gloo processes on CPU equals a single-process search of the whole database."""
import os
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hashkern.codes import pack_bits
from hashkern.distributed_search import sharded_hamming_topk
from hashkern.ops.search import hamming_topk_reference

WORLD = 2


def _cases():
    """(name, db [N, K] ±1, split point, k values): identical on every rank (fixed seed)."""
    gen = torch.Generator().manual_seed(1234)
    random = torch.randint(0, 2, (70, 48), generator=gen).float() * 2 - 1
    pool = torch.randint(0, 2, (3, 48), generator=gen).float() * 2 - 1
    tied = pool[torch.randint(0, 3, (70,), generator=gen)]
    return [
        ("random", random, 31, (1, 5, 31, 40, 70)),
        ("tied", tied, 44, (1, 20, 50, 70)),           # ties across the shard boundary
        ("one-empty-shard", random, 0, (1, 12, 70)),   # rank 0 holds nothing
    ]


def _worker(rank, init_file, error_file):
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
        gen = torch.Generator().manual_seed(99)
        queries = pack_bits(torch.randint(0, 2, (6, 48), generator=gen).float() * 2 - 1)
        for name, db, split, ks in _cases():
            packed = pack_bits(db)
            shard = packed[:split] if rank == 0 else packed[split:]
            for k in ks:
                got_dist, got_idx = sharded_hamming_topk(queries, shard, k)
                want_dist, want_idx = hamming_topk_reference(queries, packed, k)
                assert torch.equal(got_dist, want_dist), (name, k)
                assert torch.equal(got_idx, want_idx), (name, k)
        # Errors are raised on every rank alike, so no rank is left waiting in a collective.
        try:
            sharded_hamming_topk(queries, pack_bits(_cases()[0][1])[rank::2], 71)
            raise AssertionError("k > total size was accepted")
        except ValueError as error:
            assert "k must be <= 70" in str(error)
        try:
            sharded_hamming_topk(queries[: 3 + rank], pack_bits(_cases()[0][1]), 5)
            raise AssertionError("different query counts were accepted")
        except ValueError as error:
            assert "same shape and the same k" in str(error)
        dist.destroy_process_group()
    except BaseException:
        with open(f"{error_file}.{rank}", "w") as f:
            f.write(traceback.format_exc())
        raise


def test_sharded_topk_two_gloo_processes(tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    errors = str(tmp_path / "error")
    try:
        mp.spawn(_worker, args=(str(tmp_path / "init"), errors), nprocs=WORLD, join=True)
    except Exception:
        reports = [open(f"{errors}.{r}").read() for r in range(WORLD) if os.path.exists(f"{errors}.{r}")]
        pytest.fail("a rank failed:\n" + "\n".join(reports))


def test_needs_a_process_group():
    q = torch.zeros(1, 2, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="initialised torch.distributed process group"):
        sharded_hamming_topk(q, q, 1)
