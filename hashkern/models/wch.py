"""WCH — Weighted Contrastive Hashing (Yu, Qiu, Chen, Zhang, ACCV 2022)."""
from __future__ import annotations

import torch
import torch.nn as nn

from hashkern._validation import check_positive
from hashkern.codes import sign_ste
from hashkern.distributed import gather_batch
from hashkern.losses.wch import BitBalanceLoss, WCHLoss
from hashkern.models.base import HashModel, check_choice, check_loss_weight, mlp_head
from hashkern.ops.mutual_attention import mutual_attention
from hashkern.ops.patchsim import patch_similarity

BALANCE_ON = ("codes", "tanh")


class WCH(HashModel):
    """WCH over a ViT's patch tokens; the defaults reproduce the official code (RosieYuu/WCH).

    Training: tokens X1, X2 [b, P, D] of two views -> mutual attention (T=``attention_temperature``)
    -> patch-similarity aggregation s [B, B] over the global batch -> ``WCHLoss`` (soft-target
    cross-entropy of the sign codes' similarities against W = P[n, m] / P[m, m],
    P = softmax(s / ``weight_temperature``)), plus ``balance_weight`` × bit balance.
    Hash head: mean-pool -> LayerNorm(eps ``norm_eps``) -> Linear(D, ``hidden``) -> ReLU ->
    Linear(``hidden``, K) -> tanh -> sign (straight-through). Inference (``encode``) skips mutual attention.

    Official defaults: ``weight_norm="column"`` (the official broadcasting divides column m by P[m, m]),
    no cap, ``balance_weight=1.0`` on the straight-through sign codes (``balance_on="codes"``; the
    official config's alpha = 0.1 is never read), ``norm_eps=1e-6``, ``head_init="official"``
    (kaiming-uniform fan_out weights, N(0, 1) biases).

    This library's options: ``weight_norm="row"`` (W = exp((s[n, m] - s[n, n]) / T_w)) with
    ``clamp_weights=True`` caps the weights at the positive pair's, 1 (the patch similarity of a pair
    can exceed that of the two views of one image, and the uncapped row weight then grows without
    bound); ``balance_on="tanh"`` puts the balance term on the tanh outputs; ``head_init="torch"``
    keeps PyTorch's default init. The trials behind these options: benchmarks/notes/model_options.md.
    """

    def __init__(self, backbone: nn.Module, nbits: int, temperature: float = 0.3, weight_temperature: float = 0.2,
                 attention_temperature: float = 1.0, balance_weight: float = 1.0, hidden: int = 1024,
                 clamp_weights: bool = False, weight_norm: str = "column", balance_on: str = "codes",
                 head_init: str = "official", norm_eps: float = 1e-6):
        super().__init__(backbone, nbits)
        if not getattr(backbone, "has_tokens", False):
            raise ValueError(f"WCH needs a backbone with patch tokens (a ViT), got {type(backbone).__name__}")
        self.attention_temperature = check_positive("attention_temperature", attention_temperature)
        self.balance_weight = check_loss_weight("balance_weight", balance_weight)
        self.balance_on = check_choice("balance_on", balance_on, BALANCE_ON)
        self.head = mlp_head(backbone.dim, nbits, hidden, norm=True, norm_eps=check_positive("norm_eps", norm_eps),
                             init=head_init)
        self.distill = WCHLoss(temperature=temperature, weight_temperature=weight_temperature,
                               clamp_weights=clamp_weights, weight_norm=weight_norm)
        self.balance = BitBalanceLoss()

    def _codes(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(tokens.mean(1)))  # [b, K] in (-1, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._codes(self.backbone.tokens(x))

    def loss(self, view1: torch.Tensor, view2: torch.Tensor) -> dict:
        """view1, view2: [b, C, H, W] -> {"loss", "distill", "balance"} (scalars)."""
        self._check_views(view1, view2)
        x1, x2 = mutual_attention(self.backbone.tokens(view1), self.backbone.tokens(view2),
                                  temperature=self.attention_temperature)
        u1, u2 = self._codes(x1), self._codes(x2)
        x1, x2, u1, u2 = gather_batch(x1, x2, u1, u2)  # the loss sees the global batch under DDP
        s = patch_similarity(x1, x2)  # [B, B]
        h1, h2 = sign_ste(u1), sign_ste(u2)
        distill = self.distill(h1, h2, s)
        # On the sign codes (official) mean(h1²) is 1 but its straight-through gradient pulls tanh towards ±1.
        balance = self.balance(h1 if self.balance_on == "codes" else u1)
        return {"loss": distill + self.balance_weight * balance, "distill": distill.detach(),
                "balance": balance.detach()}
