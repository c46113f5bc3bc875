"""Drop-in use of hashkern's losses in your own PyTorch training loop.

Your encoder, your data, your optimiser; hashkern supplies only the losses:
- ``SortedNCELoss`` (NSH) on codes + latents of two views,
- ``WCHLoss`` + ``BitBalanceLoss`` (WCH) on codes and the patch similarities of two views
  (here the "patches" are the cells of a small CNN's feature map).

    python python/drop_in_losses.py --loss nsh --steps 50
    python python/drop_in_losses.py --loss wch --data fashion-mnist
"""
import argparse

import torch
import torch.nn as nn

from hashkern.codes import sign_ste
from hashkern.losses import BitBalanceLoss, SortedNCELoss, WCHLoss
from hashkern.ops.patchsim import patch_similarity


class MyEncoder(nn.Module):
    """Someone else's model: a small CNN -> feature map [b, 32, 7, 7] -> codes [b, K] and latents [b, 64]."""

    def __init__(self, bits):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.code = nn.Linear(32, bits)
        self.latent = nn.Linear(32, 64)

    def forward(self, x):
        fmap = self.conv(x)                        # [b, 32, 7, 7]
        tokens = fmap.flatten(2).transpose(1, 2)  # [b, 49, 32]: the "patches" for WCH
        pooled = tokens.mean(1)
        return torch.tanh(self.code(pooled)), self.latent(pooled), tokens


def two_views(x):
    """Your own augmentation: random shifts and noise."""
    def view(x):
        dx, dy = torch.randint(-3, 4, (2,)).tolist()
        return torch.roll(x, (dx, dy), dims=(2, 3)) + 0.1 * torch.randn_like(x)
    return view(x), view(x)


def load_images(data, n):
    if data == "fashion-mnist":
        from hashkern.training.data import load_fashion_mnist
        images = load_fashion_mnist().images[:n]
        return images.float() / 255
    # synthetic (runs anywhere): a bright rectangle of random place and size on noise
    images = 0.2 * torch.rand(n, 1, 28, 28)
    corners = torch.randint(0, 20, (n, 2))
    sizes = torch.randint(4, 9, (n, 2))
    for i in range(n):
        (r, c), (h, w) = corners[i].tolist(), sizes[i].tolist()
        images[i, 0, r:r + h, c:c + w] = 1.0
    return images


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loss", choices=["nsh", "wch"], default="nsh")
    p.add_argument("--data", choices=["synthetic", "fashion-mnist"], default="synthetic")
    p.add_argument("--bits", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--images", type=int, default=512)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    images = load_images(args.data, args.images)
    model = MyEncoder(args.bits)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sorted_nce = SortedNCELoss(num_positives=2, temperature=0.2, sort_temperature=0.1)
    wch, balance = WCHLoss(temperature=0.3, weight_temperature=0.2), BitBalanceLoss()  # the official WCH's
    losses = []
    for step in range(args.steps):
        x = images[torch.randint(0, images.shape[0], (args.batch_size,))]
        v1, v2 = two_views(x)
        (u1, z1, t1), (u2, z2, t2) = model(v1), model(v2)
        b1, b2 = sign_ste(u1), sign_ste(u2)       # ±1 codes with straight-through gradients
        if args.loss == "nsh":
            loss = sorted_nce(b1, b2, z1, z2)
        else:
            s = patch_similarity(t1, t2)          # [b, b] mean-max patch cosine, no [b, b, P, P] tensor
            loss = wch(b1, b2, s) + balance(b1)   # official: bit balance on the sign codes, weight 1
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % max(1, args.steps // 5) == 0 or step == args.steps - 1:
            print(f"step {step:4d}  {args.loss} loss {loss.item():.4f}")
    return losses


if __name__ == "__main__":
    main()
