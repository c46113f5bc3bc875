"""CIBHash baseline (Qiu, Su, Chen, Zhang, IJCAI 2021): NT-Xent on binary codes + Bernoulli KL."""
from __future__ import annotations

import torch
import torch.nn as nn

from hashkern._validation import check_bool
from hashkern.codes import sign_ste
from hashkern.distributed import gather_batch
from hashkern.losses.ntxent import NTXentLoss
from hashkern.models.base import HashModel, check_choice, check_loss_weight, mlp_head

KL_FORMS = ("official", "full")


def bernoulli_kl(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """KL(Bern(p) || Bern(q)) summed over bits, averaged over the batch; p, q clamped to [eps, 1 - eps].
    p, q: [n, K] probabilities. Gradient into both (the ``kl="full"`` option of :class:`CIBHash`)."""
    p, q = p.clamp(eps, 1 - eps), q.clamp(eps, 1 - eps)
    return (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).sum(1).mean()


def official_bernoulli_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """CIBHash's KL term as the official code computes it: ``q`` detached, ``log(x + 1e-8)`` for every log.

    ``sum_k p (log(p + 1e-8) - log(q + 1e-8)) + (1 - p)(log(1 - p + 1e-8) - log(1 - q + 1e-8))``,
    averaged over the batch; the gradient reaches ``p`` only.
    """
    q = q.detach()
    kl = p * ((p + 1e-8).log() - (q + 1e-8).log()) + (1 - p) * ((1 - p + 1e-8).log() - (1 - q + 1e-8).log())
    return kl.sum(1).mean()


class CIBHash(HashModel):
    """CIBHash; the defaults reproduce the official code (zexuanqiu/CIBHash).

    Bit probabilities p = sigmoid(MLP(features)); training codes sign(p - 1/2) with a straight-through
    gradient; loss NT-Xent(codes, temperature) + ``kl_weight`` × (KL(p1 || p2) + KL(p2 || p1)) / 2,
    with the official KL (``kl="official"``: second argument detached, ``log(p + 1e-8)``).
    ``encode`` uses sign(p - 1/2). With the VGG-16 backbone, the official training also runs its
    frozen classifier's dropout (``VGG16Backbone(dropout=True)``, the default).

    This library's options: ``stochastic=True`` samples the training codes as sign(p - u),
    u ~ U(0, 1) (the codes are then Bernoulli(p), as the paper describes them); ``kl="full"`` lets
    the gradient through both arguments of each KL, with p clamped to [1e-7, 1 - 1e-7].
    """

    def __init__(self, backbone: nn.Module, nbits: int, temperature: float = 0.3, kl_weight: float = 0.001,
                 stochastic: bool = False, hidden: int = 1024, kl: str = "official"):
        super().__init__(backbone, nbits)
        self.head = mlp_head(backbone.dim, nbits, hidden)
        self.ntxent = NTXentLoss(temperature)
        self.kl_weight = check_loss_weight("kl_weight", kl_weight)
        self.stochastic = check_bool("stochastic", stochastic)
        self.kl = check_choice("kl", kl, KL_FORMS)

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
        kl_term = official_bernoulli_kl if self.kl == "official" else bernoulli_kl
        kl = 0.5 * (kl_term(p1, p2) + kl_term(p2, p1))
        return {"loss": contrast + self.kl_weight * kl, "contrast": contrast.detach(), "kl": kl.detach()}
