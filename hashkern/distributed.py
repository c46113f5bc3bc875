"""Data-parallel helpers: contrastive and sorted losses must see the global batch.

Under DDP each rank holds ``n`` samples of a global batch of ``W·n``. :func:`all_gather_with_grad`
concatenates every rank's tensor so each rank computes the loss on the global batch; its
backward sums the gradient of every rank's (identical) loss for the local slice. DDP then
averages over the W ranks, so parameter gradients equal those of one process on the global batch.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "world_size", "rank", "all_gather_with_grad", "gather_batch", "init_from_env"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


class AllGatherFunction(torch.autograd.Function):
    """[n, ...] on each rank -> [W·n, ...] in rank order; backward: all-reduce (sum), keep own slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ws = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(ws)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [n, ...] of all ranks -> [W·n, ...], differentiable; identity without a process group.

    Every rank must pass the same shape (drop the last incomplete batch).
    """
    if not is_distributed():
        return x
    sizes = [torch.zeros(x.dim(), dtype=torch.int64) for _ in range(dist.get_world_size())]
    mine = torch.tensor(list(x.shape), dtype=torch.int64)
    if dist.get_backend() == "nccl":
        sizes, mine = [s.cuda() for s in sizes], mine.cuda()
    dist.all_gather(sizes, mine)
    if any(not torch.equal(s, mine) for s in sizes):
        raise ValueError(f"all_gather_with_grad needs the same shape on every rank, got {[s.tolist() for s in sizes]}")
    return AllGatherFunction.apply(x)


def gather_batch(*tensors: torch.Tensor):
    """:func:`all_gather_with_grad` over several tensors; returns a tuple."""
    return tuple(all_gather_with_grad(t) for t in tensors)


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group that ``torchrun`` describes (WORLD_SIZE, RANK, MASTER_ADDR...).

    Returns True when running distributed. nccl on CUDA, gloo otherwise.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return True
