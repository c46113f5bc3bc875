"""Plain-PyTorch oracle of patch-to-patch similarity aggregation (materialises ``[b1, b2, P, Q]``).

``s[n, m] = mean_{i valid in x1[n]} agg_{j valid in x2[m]} sim[n, m, i, j]`` with
``sim = cos(x1[n, i], x2[m, j])`` (or the raw dot product when ``normalize=False``) and

* ``agg = max_j`` for ``reduce="maxmean"``; ties go to the first (lowest) ``j``, which is
  where the gradient flows (the kernels follow the same rule);
* ``agg = sum_j softmax_j(sim / temperature) * sim`` for ``reduce="softmaxmean"``, a smooth
  max that stays within ``[min_j, max_j]`` and tends to the max as ``temperature -> 0``.

Used by the tests as the float64 oracle and by the benchmark as the naive baseline; the CPU
fallback with bounded memory is :mod:`hashkern.ops.patchsim.torch_impl`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCTIONS = ("maxmean", "softmaxmean")


def patch_similarity_reference(x1: torch.Tensor, x2: torch.Tensor, normalize: bool = True,
                               reduce: str = "maxmean", mask1: torch.Tensor | None = None,
                               mask2: torch.Tensor | None = None, temperature: float = 0.1) -> torch.Tensor:
    """x1 [b1, P, D], x2 [b2, Q, D], mask1 [b1, P] / mask2 [b2, Q] bool (True = real patch) -> s [b1, b2].

    No input checks: callers pass valid input (the public ``patch_similarity`` validates).
    """
    if normalize:
        x1 = F.normalize(x1, dim=-1)
        x2 = F.normalize(x2, dim=-1)
    (b1, P, D), (b2, Q, _) = x1.shape, x2.shape
    # one [b1 P, b2 Q] matmul (einsum "npd,mqd->nmpq" lowers to a slow batched matmul on CPU)
    sim = (x1.reshape(b1 * P, D) @ x2.reshape(b2 * Q, D).T).view(b1, P, b2, Q).transpose(1, 2)  # [b1, b2, P, Q]
    if mask2 is not None:
        sim = sim.masked_fill(~mask2[None, :, None, :], float("-inf"))
    if reduce == "maxmean":
        # gather at the first argmax so that ties send the whole gradient to the lowest j
        best = sim.argmax(dim=-1, keepdim=True)
        per_patch = sim.gather(-1, best).squeeze(-1)  # [b1, b2, P]
    elif reduce == "softmaxmean":
        weights = torch.softmax(sim / temperature, dim=-1)
        per_patch = (weights * sim.masked_fill(weights == 0, 0.0)).sum(-1)
    else:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if mask1 is None:
        return per_patch.mean(-1)
    keep = mask1[:, None, :].to(per_patch.dtype)
    return (per_patch * keep).sum(-1) / keep.sum(-1)
