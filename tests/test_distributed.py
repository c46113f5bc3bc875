"""Data-parallel training: with 2 gloo processes each holding half of a global batch, the loss and the
parameter gradients (after DDP's averaging) equal one process's on the whole batch."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hashkern import distributed as hdist
from hashkern.models import build_model

BACKBONE = {"name": "small-vit", "in_chans": 1, "img_size": 8, "patch_size": 4, "embed_dim": 16, "depth": 1,
            "num_heads": 2}
CASES = {
    "nsh": {"hidden": 16, "latent_dim": 8, "num_positives": 2},
    "wch": {"hidden": 16},
    "cibhash": {"hidden": 16, "stochastic": False},  # u ~ U(0,1) per sample would differ between layouts
}


def _model(method):
    torch.manual_seed(0)
    return build_model(method, 6, BACKBONE, **CASES[method]).double()


def _batch(n=8):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)
    return x, x + 0.3 * torch.randn(x.shape, generator=g, dtype=torch.float64)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from torch.nn.parallel import DistributedDataParallel
        v1, v2 = _batch()
        n = v1.shape[0] // world
        mine = slice(rank * n, (rank + 1) * n)
        gathered = hdist.all_gather_with_grad(torch.arange(n, dtype=torch.float64) + 10 * rank)
        result = {"gathered": gathered}
        for method in CASES:
            model = DistributedDataParallel(_model(method))
            out = model(v1[mine], v2[mine])
            out["loss"].backward()
            result[method] = {"loss": out["loss"].detach(),
                              "grads": {k: p.grad.clone() for k, p in model.module.named_parameters()
                                        if p.grad is not None}}
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_single_process_helpers_are_identity():
    x = torch.randn(3, 2, requires_grad=True)
    assert hdist.all_gather_with_grad(x) is x
    assert hdist.world_size() == 1 and hdist.rank() == 0 and not hdist.is_distributed()
    assert hdist.gather_batch(x, x)[1] is x
    assert hdist.init_from_env() is False or os.environ.get("WORLD_SIZE", "1") != "1"


def test_two_gloo_processes_equal_one_process(tmp_path):
    world = 2
    mp.start_processes(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True,
                       start_method="spawn")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    assert results[0]["gathered"].tolist() == [0.0, 1, 2, 3, 10, 11, 12, 13]
    v1, v2 = _batch()
    for method in CASES:
        model = _model(method)
        out = model(v1, v2)
        out["loss"].backward()
        for res in results:
            torch.testing.assert_close(res[method]["loss"], out["loss"].detach(), rtol=1e-10, atol=1e-12)
            grads = res[method]["grads"]
            named = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
            assert grads.keys() == named.keys(), method
            for k, g in named.items():
                torch.testing.assert_close(grads[k], g, rtol=1e-8, atol=1e-10, msg=f"{method} {k}")
