"""MaxSim's custom ops (with fakes, so ``torch.compile`` traces them without graph breaks) and its
autograd.Function. Arguments follow ``_common``: documents as ``tokens [T, D]`` with ``offsets [nd + 1]``."""
from __future__ import annotations

from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from hashkern.ops._registration import register_fake
from hashkern.ops.maxsim._common import acc_dtype, argmax_rows, padded_backend, score_shape


def _impl(backend: str):
    if backend == "cpu":
        from hashkern.ops.maxsim import cpu_launch
        return cpu_launch.maxsim_cpu_fwd, cpu_launch.maxsim_cpu_bwd
    if backend == "triton":  # patch similarity's Triton kernels on the padded documents (no kernels of its own)
        from hashkern.ops.patchsim import triton_launch  # lazy: the package imports without triton
        return padded_backend(triton_launch.patch_similarity_fwd, triton_launch.patch_similarity_bwd)
    from hashkern.ops.maxsim import torch_impl
    return torch_impl.maxsim_torch_fwd, torch_impl.maxsim_torch_bwd


@torch.library.custom_op("hashkern::maxsim_fwd", mutates_args=())
def _maxsim_fwd_op(q: torch.Tensor, q_mask: Optional[torch.Tensor], scale: torch.Tensor, tokens: torch.Tensor,
                   offsets: torch.Tensor, token_mask: Optional[torch.Tensor], group: int, padded_len: int,
                   need_argmax: bool, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """-> scores ([nq, nd], or [nd] paired; fp32, fp64 for fp64 input), argmax (backend-specific layout
    [nd, rows] int32 saved for the backward; [0] on the C++ backend when no gradient is needed)."""
    return _impl(backend)[0](q, q_mask, scale, tokens, offsets, token_mask, group, padded_len, need_argmax)


@register_fake("hashkern::maxsim_fwd")
def _maxsim_fwd_fake(q, q_mask, scale, tokens, offsets, token_mask, group, padded_len, need_argmax, backend):
    (nq, Lq, _), nd = q.shape, offsets.shape[0] - 1
    scores = q.new_empty(score_shape(nq, nd, group), dtype=acc_dtype(q.dtype))
    rows = (nd, argmax_rows(nq, Lq, group)) if need_argmax or backend != "cpu" else (0,)
    return scores, q.new_empty(rows, dtype=torch.int32)


@torch.library.custom_op("hashkern::maxsim_bwd", mutates_args=())
def _maxsim_bwd_op(grad: torch.Tensor, q: torch.Tensor, q_mask: Optional[torch.Tensor], scale: torch.Tensor,
                   tokens: torch.Tensor, offsets: torch.Tensor, token_mask: Optional[torch.Tensor],
                   argmax: torch.Tensor, group: int, padded_len: int,
                   backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """grad like scores -> dq [nq, Lq, D], dtokens [T, D] (dtypes of q and tokens)."""
    return _impl(backend)[1](grad, q, q_mask, scale, tokens, offsets, token_mask, group, padded_len, argmax)


@register_fake("hashkern::maxsim_bwd")
def _maxsim_bwd_fake(grad, q, q_mask, scale, tokens, offsets, token_mask, argmax, group, padded_len, backend):
    return torch.empty_like(q), torch.empty_like(tokens)


class MaxSimFunction(torch.autograd.Function):
    """Autograd of MaxSim on prepared inputs q [nq, Lq, D], tokens [T, D] -> scores [nq, nd] (or [nd])."""

    @staticmethod
    def forward(ctx, q, tokens, q_mask, scale, offsets, token_mask, group, padded_len, need_argmax, backend):
        scores, argmax = torch.ops.hashkern.maxsim_fwd(q, q_mask, scale, tokens, offsets, token_mask, group,
                                                       padded_len, need_argmax, backend)
        ctx.save_for_backward(q, tokens, q_mask, scale, offsets, token_mask, argmax)
        ctx.config = (group, padded_len, backend)
        return scores

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        q, tokens, q_mask, scale, offsets, token_mask, argmax = ctx.saved_tensors
        group, padded_len, backend = ctx.config
        dq, dtokens = torch.ops.hashkern.maxsim_bwd(grad.contiguous(), q, q_mask, scale, tokens, offsets, token_mask,
                                                    argmax, group, padded_len, backend)
        return dq, dtokens, None, None, None, None, None, None, None, None
