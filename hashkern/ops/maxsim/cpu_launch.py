"""The C++ CPU backend (``csrc/cpu/maxsim*.cpp``): register-tiled MaxSim whose similarity blocks never go
to memory, parallel over documents. Half inputs are widened to float32 once (products of bf16/fp16
values are exact in fp32); gradients come back in the inputs' dtypes."""
from __future__ import annotations

import torch

from hashkern.ops.maxsim._common import acc_dtype, argmax_rows, score_shape


def maxsim_cpu_fwd(q, q_mask, scale, tokens, offsets, token_mask, group, padded_len, need_argmax):
    acc = acc_dtype(q.dtype)
    (nq, Lq, _), nd = q.shape, offsets.numel() - 1
    scores = torch.empty(score_shape(nq, nd, group), dtype=acc)
    argmax = torch.empty((nd, argmax_rows(nq, Lq, group)) if need_argmax else (0,), dtype=torch.int32)
    torch.ops.hashkern.maxsim(q.to(acc).contiguous(), q_mask, scale.to(acc), tokens.to(acc).contiguous(), offsets,
                              token_mask, group, scores, argmax)
    return scores, argmax


def maxsim_cpu_bwd(grad, q, q_mask, scale, tokens, offsets, token_mask, group, padded_len, argmax):
    acc = acc_dtype(q.dtype)
    qa, ta = q.to(acc).contiguous(), tokens.to(acc).contiguous()
    dq, dtokens = torch.empty_like(qa), torch.empty_like(ta)
    torch.ops.hashkern.maxsim_backward(grad.to(acc).contiguous(), qa, scale.to(acc), ta, offsets, group, argmax,
                                       dq, dtokens)
    return dq.to(q.dtype), dtokens.to(tokens.dtype)
