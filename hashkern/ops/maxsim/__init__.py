"""MaxSim, the late-interaction score of ColBERT / ColPali: ``sum_i max_t dot(q[n, i], d_j[t])``.

``maxsim`` scores every query against every document (``[nq, nd]``), ``maxsim_paired`` each query
against its own candidates (``[nq, c]``, reranking). Documents come padded (``[.., Ld, D]`` with a
mask) or packed (``[total tokens, D]`` with offsets, as ColBERT and maxsim-cpu's variable API take
them). ``reduce="mean", normalize=True`` is WCH's patch similarity. Backends: ``cpu`` (the C++
register-tiled kernel, csrc/cpu/maxsim*.cpp: the CPU default), ``triton`` (CUDA, or CPU tensors under
``TRITON_INTERPRET=1``) and ``torch`` (chunked GEMM), the last two on patch similarity's kernels.
"""
from __future__ import annotations

import torch

from hashkern._dispatch import OpBackends, Support, declare, resolve_backend
from hashkern._validation import FLOAT_DTYPES, check_bool, check_same_device, check_tensor, dtype_name
from hashkern.ops._numerics import unit_tokens
from hashkern.ops.maxsim._common import acc_dtype
from hashkern.ops.maxsim.autograd import MaxSimFunction
from hashkern.ops.maxsim.reference import REDUCES, maxsim_paired_reference, maxsim_reference, pad_packed

__all__ = ["MaxSimFunction", "maxsim", "maxsim_paired", "maxsim_reference", "maxsim_paired_reference", "pad_packed",
           "REDUCES", "BACKENDS"]

# The C++ kernel first on the CPU (faster than the BLAS GEMM form at every measured size,
# benchmarks/notes/maxsim.md), Triton first on CUDA; bf16/fp16 tensor cores need sm_80+ (patch
# similarity's kernels). Every backend is deterministic.
BACKENDS = declare(OpBackends("maxsim", preference=("cpu", "torch", "triton"),
                              preference_by_device={"cuda": ("triton", "torch")},
                              support={"triton": Support(min_capability=(8, 0))}))


def _check_tokens(q: torch.Tensor, d: torch.Tensor, d_ndim: int, d_shape: str) -> torch.device:
    check_tensor("q", q, ndim=3, dtypes=FLOAT_DTYPES)
    check_tensor("d", d, ndim=d_ndim, dtypes=FLOAT_DTYPES)
    device = check_same_device(q=q, d=d)
    if q.dtype != d.dtype:
        raise TypeError(f"q and d must have the same dtype, got {dtype_name(q.dtype)} and {dtype_name(d.dtype)}")
    if q.shape[-1] != d.shape[-1]:
        raise ValueError(f"q and d must have the same feature size D, got q [.., {q.shape[-1]}] and "
                         f"d [.., {d.shape[-1]}]")
    if q.numel() == 0 or d.numel() == 0:
        raise ValueError(f"q [nq, Lq, D] and d {d_shape} need every size >= 1, got q {tuple(q.shape)} and "
                         f"d {tuple(d.shape)}")
    return device


def _check_mask(name: str, mask, shape: tuple, what: str, device: torch.device):
    """A bool mask of ``shape`` (True = real token) with a real token in every row; None passes."""
    if mask is None:
        return None
    check_tensor(name, mask, dtypes=(torch.bool,))
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} ({what}), got {tuple(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"{name} must be on {device} like the tokens, got {mask.device}")
    if not torch.compiler.is_compiling():
        empty = (~mask.reshape(-1, shape[-1]).any(dim=1)).nonzero().flatten()
        if empty.numel():
            raise ValueError(f"{name} has rows with no real token (every token masked) at flat rows "
                             f"{empty[:8].tolist()}; each row needs at least one True entry")
    return mask.contiguous()


def _check_offsets(offsets, total: int, device: torch.device) -> torch.Tensor:
    check_tensor("offsets", offsets, ndim=1, dtypes=(torch.int64,))
    if offsets.device != device:
        raise ValueError(f"offsets must be on {device} like the tokens, got {offsets.device}")
    if offsets.numel() < 2:
        raise ValueError(f"offsets must hold nd + 1 >= 2 entries (0, then each document's end), got {offsets.numel()}")
    if not torch.compiler.is_compiling():
        if offsets[0].item() != 0 or offsets[-1].item() != total:
            raise ValueError(f"offsets must start at 0 and end at the number of token rows of d ({total}), got "
                             f"{offsets[0].item()} and {offsets[-1].item()}")
        empty = (offsets.diff() <= 0).nonzero().flatten()
        if empty.numel():
            raise ValueError(f"offsets must be strictly increasing: documents {empty[:8].tolist()} are empty or have "
                             "negative length (every document needs at least one token)")
    return offsets.contiguous()


def _scores(q, tokens, q_mask, token_mask, offsets, group: int, padded_len: int, reduce: str, normalize: bool,
            backend: str, device: torch.device) -> torch.Tensor:
    if reduce not in REDUCES:
        raise ValueError(f"reduce must be one of {REDUCES}, got {reduce!r}")
    check_bool("normalize", normalize)
    backend = resolve_backend(backend, BACKENDS, device)
    nq, Lq = q.shape[:2]
    acc = acc_dtype(q.dtype)
    if reduce == "sum":
        scale = torch.ones(nq, dtype=acc, device=device)
    else:
        scale = torch.full((nq,), 1.0 / Lq, dtype=acc, device=device) if q_mask is None else \
            1.0 / q_mask.sum(dim=1).to(acc)
    if normalize:  # half inputs are normalised in fp32 and rounded once
        q, tokens = unit_tokens(q), unit_tokens(tokens)
    need_argmax = torch.is_grad_enabled() and (q.requires_grad or tokens.requires_grad)
    return MaxSimFunction.apply(q.contiguous(), tokens.contiguous(), q_mask, scale, offsets, token_mask, group,
                                padded_len, need_argmax, backend)


def maxsim(q: torch.Tensor, d: torch.Tensor, q_mask: torch.Tensor | None = None, d_mask: torch.Tensor | None = None,
           *, offsets: torch.Tensor | None = None, reduce: str = "sum", normalize: bool = False,
           backend: str = "auto") -> torch.Tensor:
    """MaxSim of every query against every document.

    Args:
        q: [nq, Lq, D] query tokens (fp16, bf16, fp32 or fp64).
        d: padded documents [nd, Ld, D], or packed token rows [T, D] when ``offsets`` is given; q's dtype
            and device.
        q_mask: [nq, Lq] bool, True for real query tokens (padded ones are left out of the sum).
        d_mask: [nd, Ld] bool, True for real document tokens (padded ones are left out of the max);
            padded documents only. Every row of a mask needs a True.
        offsets: [nd + 1] int64, packed documents: document j is ``d[offsets[j]:offsets[j + 1]]``;
            starts at 0, ends at T, strictly increasing (no empty document).
        reduce: ``"sum"`` over query tokens (ColBERT) or ``"mean"`` over the real ones (WCH).
        normalize: L2-normalise every token first (cosine similarities); False uses the given embeddings.
        backend: ``"auto" | "cpu" | "triton" | "torch"``.
    Returns:
        [nq, nd] float32 (float64 for float64 input): ``scale_n sum_i max_t dot(q[n, i], d_j[t])``; products and
        sums in fp32 for half inputs. Gradients flow to q and d; ties send them to the first maximising token.
    Deterministic: the same inputs give bitwise-identical scores and gradients.
    """
    if offsets is None:
        device = _check_tokens(q, d, 3, "[nd, Ld, D]")
        nd, Ld, D = d.shape
        d_mask = _check_mask("d_mask", d_mask, (nd, Ld), "documents, tokens", device)
        tokens, token_mask, padded_len = d.reshape(nd * Ld, D), None if d_mask is None else d_mask.reshape(-1), Ld
        offsets = torch.arange(nd + 1, device=device) * Ld
    else:
        device = _check_tokens(q, d, 2, "[T, D]")
        if d_mask is not None:
            raise ValueError("d_mask is for padded documents [nd, Ld, D]; packed documents (offsets given) have no "
                             "padding: leave d_mask out")
        tokens, token_mask, padded_len = d, None, 0
        offsets = _check_offsets(offsets, d.shape[0], device)
    q_mask = _check_mask("q_mask", q_mask, tuple(q.shape[:2]), "queries, tokens", device)
    return _scores(q, tokens, q_mask, token_mask, offsets, 0, padded_len, reduce, normalize, backend, device)


def maxsim_paired(q: torch.Tensor, d: torch.Tensor, q_mask: torch.Tensor | None = None,
                  d_mask: torch.Tensor | None = None, *, offsets: torch.Tensor | None = None, reduce: str = "sum",
                  normalize: bool = False, backend: str = "auto") -> torch.Tensor:
    """MaxSim of each query against its own c candidate documents (reranking).

    Args:
        q: [nq, Lq, D]; q_mask [nq, Lq] bool.
        d: padded candidates [nq, c, Ld, D] with d_mask [nq, c, Ld] bool, or packed token rows [T, D] with
            ``offsets`` [nq c + 1] int64 (query n's candidates are documents n c .. n c + c - 1).
        reduce, normalize, backend: as in :func:`maxsim`.
    Returns:
        [nq, c] float32 (float64 for float64 input).
    """
    nq = q.shape[0] if isinstance(q, torch.Tensor) and q.dim() == 3 else None
    if offsets is None:
        device = _check_tokens(q, d, 4, "[nq, c, Ld, D]")
        if d.shape[0] != nq:
            raise ValueError(f"d must hold candidates of each of the nq = {nq} queries, [nq, c, Ld, D], got "
                             f"{tuple(d.shape)}")
        _, c, Ld, D = d.shape
        d_mask = _check_mask("d_mask", d_mask, (nq, c, Ld), "queries, candidates, tokens", device)
        tokens, token_mask, padded_len = d.reshape(nq * c * Ld, D), None if d_mask is None else d_mask.reshape(-1), Ld
        offsets = torch.arange(nq * c + 1, device=device) * Ld
    else:
        device = _check_tokens(q, d, 2, "[T, D]")
        if d_mask is not None:
            raise ValueError("d_mask is for padded candidates [nq, c, Ld, D]; packed documents (offsets given) have "
                             "no padding: leave d_mask out")
        offsets = _check_offsets(offsets, d.shape[0], device)
        if (offsets.numel() - 1) % nq:
            raise ValueError(f"offsets must describe nq c documents (c candidates for each of the nq = {nq} queries), "
                             f"got {offsets.numel() - 1} documents")
        c = (offsets.numel() - 1) // nq
        tokens, token_mask, padded_len = d, None, 0
    q_mask = _check_mask("q_mask", q_mask, tuple(q.shape[:2]), "queries, tokens", device)
    scores = _scores(q, tokens, q_mask, token_mask, offsets, c, padded_len, reduce, normalize, backend, device)
    return scores.view(nq, c)
