"""NT-Xent (normalised-temperature cross-entropy, SimCLR), the contrastive loss of the CIBHash baseline."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hashkern._validation import check_same_device, check_tensor
from hashkern.ops._numerics import at_least_float32, check_temperature, logit_dtype, unit_rows

__all__ = ["nt_xent", "nt_xent_reference", "NTXentLoss"]


def _check(z1, z2, temperature):
    check_tensor("z1", z1, ndim=2, floating=True)
    check_tensor("z2", z2, ndim=2, floating=True)
    check_same_device(z1=z1, z2=z2)
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError(f"NT-Xent needs a batch of at least 2 pairs (negatives), got {z1.shape[0]}")
    if z1.shape[1] == 0:
        raise ValueError(f"z1 and z2 must have at least one feature, got shape {tuple(z1.shape)}")
    return check_temperature("temperature", temperature)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.3, reduction: str = "mean") -> torch.Tensor:
    """NT-Xent over the 2n views of n pairs.

    z1, z2: [n, d] (codes or embeddings of two views; row i of each is a positive pair).
    Each of the 2n rows is classified against the other 2n-1 by cosine similarity / temperature,
    its partner being the target. reduction: "mean" -> scalar, "none" -> [2n].

    Computed in at least float32 (under ``torch.autocast`` too), in float64 for temperatures
    below ~2e-3 (where the float32 rounding of the cosines would show), with rows normalised
    without overflow: half-precision
    inputs, tiny temperatures and huge finite inputs give the float64 answer. The result has that
    compute dtype.
    """
    temperature = _check(z1, z2, temperature)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    n = z1.shape[0]
    dtype = logit_dtype(at_least_float32(z1, z2), 2.0, temperature)
    z = unit_rows(torch.cat([z1, z2]).to(dtype))
    with torch.autocast(z.device.type, enabled=False):  # autocast would run the matmul in bf16 / fp16
        logits = z @ z.t() / temperature
    # A row is never its own negative: remove the diagonal before the softmax.
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target, reduction=reduction)


def nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.3) -> torch.Tensor:
    """The oracle, written as the formula: mean_i -log(e^{s(i,p(i))/τ} / Σ_{k≠i} e^{s(i,k)/τ}), in loops."""
    z = torch.cat([z1, z2]).double()
    n2 = z.shape[0]
    total = z.new_zeros(())
    for i in range(n2):
        p = (i + n2 // 2) % n2
        sims = torch.stack([torch.dot(z[i], z[k]) / (z[i].norm() * z[k].norm()) for k in range(n2)]) / temperature
        keep = torch.arange(n2) != i
        total = total - (sims[p] - torch.logsumexp(sims[keep], 0))
    return total / n2


class NTXentLoss(nn.Module):
    """``NTXentLoss(temperature=0.3)(z1, z2)``: see :func:`nt_xent`."""

    def __init__(self, temperature: float = 0.3, reduction: str = "mean"):
        super().__init__()
        self.temperature = check_temperature("temperature", temperature)
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        self.reduction = reduction

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return nt_xent(z1, z2, self.temperature, self.reduction)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
