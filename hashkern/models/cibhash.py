"""CIBHash baseline (Qiu, Su, Chen, Zhang, IJCAI 2021): NT-Xent on stochastic binary codes + Bernoulli KL."""
from __future__ import annotations

import torch
import torch.nn as nn

from hashkern.codes import sign_ste
from hashkern.distributed import gather_batch
from hashkern.losses.ntxent import NTXentLoss
from hashkern.models.base import HashModel, mlp_head


def bernoulli_kl(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """KL(Bern(p) || Bern(q)) summed over bits, averaged over the batch. p, q: [n, K] probabilities."""
    p, q = p.clamp(eps, 1 - eps), q.clamp(eps, 1 - eps)
    return (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).sum(1).mean()


class CIBHash(HashModel):
    """CIBHash: bit probabilities p = sigmoid(MLP(features)); training codes sign(p - u), u ~ U(0, 1)
    (``stochastic``; else sign(p - 1/2)) with a straight-through gradient; loss NT-Xent(codes) +
    ``kl_weight`` × symmetric KL between the two views' Bernoullis. ``encode`` uses sign(p - 1/2).
    """

    def __init__(self, backbone: nn.Module, nbits: int, temperature: float = 0.3, kl_weight: float = 0.001,
                 stochastic: bool = True, hidden: int = 1024):
        super().__init__(backbone, nbits)
        self.head = mlp_head(backbone.dim, nbits, hidden)
        self.ntxent = NTXentLoss(temperature)
        self.kl_weight, self.stochastic = float(kl_weight), bool(stochastic)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))  # sigmoid(l) >= 1/2  <=>  l >= 0

    def _codes(self, p: torch.Tensor) -> torch.Tensor:
        thresh = torch.rand_like(p) if (self.training and self.stochastic) else torch.full_like(p, 0.5)
        return sign_ste(p - thresh)

    def loss(self, view1: torch.Tensor, view2: torch.Tensor) -> dict:
        self._check_views(view1, view2)
        p1, p2 = torch.sigmoid(self.logits(view1)), torch.sigmoid(self.logits(view2))
        b1, b2 = self._codes(p1), self._codes(p2)
        b1, b2, p1, p2 = gather_batch(b1, b2, p1, p2)
        contrast = self.ntxent(b1, b2)
        kl = 0.5 * (bernoulli_kl(p1, p2) + bernoulli_kl(p2, p1))
        return {"loss": contrast + self.kl_weight * kl, "contrast": contrast.detach(), "kl": kl.detach()}
