"""NSH — Naturally-Sorted Hashing (Yu, Shen, Wang, Zhang, Torr, IJCAI 2022)."""
from __future__ import annotations

import torch
import torch.nn as nn

from hashkern._validation import check_int
from hashkern.codes import sign_ste
from hashkern.distributed import gather_batch
from hashkern.losses.ntxent import NTXentLoss
from hashkern.losses.sorted_nce import SortedNCELoss
from hashkern.models.base import HashModel, check_loss_weight


class NSH(HashModel):
    """NSH: codes B ∈ {±1}^K and latents Z ∈ R^dz from a shared trunk, trained with ``SortedNCELoss``.

    Trunk: Linear(D, hidden) -> ReLU; code head Linear(hidden, K) -> tanh -> sign (STE); latent head
    Linear(hidden, latent_dim). The loss soft-sorts view-1 latents by code similarity to each
    anchor and contrasts the first ``num_positives`` ranks with the rest (global batch under DDP).
    The defaults are the paper's loss, SortedNCE alone; there is no official code.

    ``sort_temperature=None`` takes ``SortedNCELoss``'s default, 0.32 / K, so the model and the loss used
    on its own agree (code similarities move in steps of 1/K, so the sharpness follows K).

    ``instance_weight`` × NT-Xent(z1, z2) (temperature ``temperature``) is this library's option,
    added to SortedNCE (default 0, the paper's loss alone). From scratch the codes' first rankings
    are random, so SortedNCE's positives beyond the image itself pull unrelated latents together and
    the latents collapse (the loss climbs to log(1 + n - m)); the instance term keeps each image
    apart until the codes rank well. The trials behind these options: benchmarks/notes/model_options.md.
    """

    def __init__(self, backbone: nn.Module, nbits: int, latent_dim: int = 128, num_positives: int = 4,
                 temperature: float = 0.2, sort_temperature: float | None = None, hidden: int = 1024,
                 instance_weight: float = 0.0):
        super().__init__(backbone, nbits)
        self.latent_dim = check_int("latent_dim", latent_dim, low=1)
        self.num_positives = check_int("num_positives", num_positives, low=1)
        hidden = check_int("hidden", hidden, low=1)
        self.trunk = nn.Sequential(nn.Linear(backbone.dim, hidden), nn.ReLU(inplace=True))
        self.code_head = nn.Linear(hidden, nbits)
        self.latent_head = nn.Linear(hidden, latent_dim)
        self.instance_weight = check_loss_weight("instance_weight", instance_weight)
        self.instance = NTXentLoss(temperature)
        sort = {} if sort_temperature is None else {"sort_temperature": sort_temperature}
        self.sorted_nce = SortedNCELoss(num_positives, temperature=temperature, **sort)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.code_head(self.trunk(self.backbone(x)))

    def _forward(self, x):
        t = self.trunk(self.backbone(x))
        return sign_ste(torch.tanh(self.code_head(t))), self.latent_head(t)

    def loss(self, view1: torch.Tensor, view2: torch.Tensor) -> dict:
        """view1, view2: [b, C, H, W] -> {"loss", "sorted_nce", "instance"} (scalars; only "loss" when
        ``instance_weight`` is 0); needs a global batch larger than ``num_positives``."""
        self._check_views(view1, view2)
        (b1, z1), (b2, z2) = self._forward(view1), self._forward(view2)
        b1, b2, z1, z2 = gather_batch(b1, b2, z1, z2)
        if b1.shape[0] <= self.num_positives:
            raise ValueError(f"the batch ({b1.shape[0]}) must be larger than num_positives ({self.num_positives})")
        sorted_nce = self.sorted_nce(b1, b2, z1, z2)
        if self.instance_weight == 0:
            return {"loss": sorted_nce}
        instance = self.instance(z1, z2)
        return {"loss": sorted_nce + self.instance_weight * instance, "sorted_nce": sorted_nce.detach(),
                "instance": instance.detach()}
