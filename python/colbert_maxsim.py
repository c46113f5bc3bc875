"""ColBERT late interaction with hashkern.maxsim: a PyLate-compatible scorer and a contrastive training step.

``colbert_scores`` takes PyLate's arguments and returns what PyLate's ``colbert_scores`` returns (its
torch path: ``einsum("ash,bth->abst")`` times the masks, max over document tokens, sum over query
tokens) without the ``[nq, nd, Lq, Ld]`` tensor. ``train`` runs a few steps of a contrastive ColBERT
objective with in-batch negatives (each query's positive document and one hard negative, every other
document of the batch a negative) on a toy token encoder.

    python python/colbert_maxsim.py --steps 20 --batch-size 16
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from hashkern.ops.maxsim import maxsim


def colbert_scores(queries_embeddings, documents_embeddings, queries_mask=None, documents_mask=None,
                   padding: str = "zero"):
    """PyLate's ``colbert_scores``: queries [a, s, h], documents [b, t, h], masks [a, s] / [b, t] (1 = real)
    -> scores [a, b], float32 (float64 for float64 input).

    padding="zero" (PyLate's formula, the default): the masks multiply the similarities, so a padded document
    token competes in the max with similarity 0 and a padded query token adds max(0, ...) = 0. Multiplying the
    embeddings by the masks gives the same products. padding="exclude": padded tokens are left out of the
    max and the sum (ColBERT's own scorer; masks must then be bool or 0/1).
    """
    q, d = torch.as_tensor(queries_embeddings), torch.as_tensor(documents_embeddings)
    if padding == "exclude":
        return maxsim(q, d, None if queries_mask is None else torch.as_tensor(queries_mask).bool(),
                      None if documents_mask is None else torch.as_tensor(documents_mask).bool())
    if padding != "zero":
        raise ValueError(f"padding must be 'zero' (PyLate's formula) or 'exclude', got {padding!r}")
    if queries_mask is not None:
        q = q * torch.as_tensor(queries_mask, dtype=q.dtype, device=q.device)[..., None]
    if documents_mask is not None:
        d = d * torch.as_tensor(documents_mask, dtype=d.dtype, device=d.device)[..., None]
    return maxsim(q, d)


class TokenEncoder(nn.Module):
    """A toy ColBERT encoder: token embeddings, a small transformer layer, a projection to dim, unit rows."""

    def __init__(self, vocab: int = 1000, width: int = 64, dim: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.layer = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=2 * width, batch_first=True)
        self.project = nn.Linear(width, dim, bias=False)

    def forward(self, ids, mask):
        x = self.layer(self.embed(ids), src_key_padding_mask=~mask)
        return F.normalize(self.project(x), dim=-1)


def toy_batch(batch: int, q_len: int, d_len: int, vocab: int, generator):
    """Queries whose positive documents share their tokens: ids [b, q_len], documents [2b, d_len] (2n positive,
    2n + 1 a random hard negative), masks with random document lengths."""
    q_ids = torch.randint(vocab, (batch, q_len), generator=generator)
    d_ids = torch.randint(vocab, (2 * batch, d_len), generator=generator)
    d_ids[0::2, :q_len] = q_ids  # the positive contains the query's tokens
    lengths = torch.randint(q_len, d_len + 1, (2 * batch,), generator=generator)
    d_mask = torch.arange(d_len)[None] < lengths[:, None]
    return q_ids, torch.ones(batch, q_len, dtype=torch.bool), d_ids, d_mask


def contrastive_step(model, optimizer, q_ids, q_mask, d_ids, d_mask) -> float:
    """One step of the in-batch-negatives objective: cross-entropy of the [b, 2b] scores, target 2n."""
    scores = colbert_scores(model(q_ids, q_mask), model(d_ids, d_mask), q_mask, d_mask)
    loss = F.cross_entropy(scores, torch.arange(q_ids.shape[0]) * 2)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def train(steps: int = 20, batch_size: int = 16, q_len: int = 8, d_len: int = 40, vocab: int = 1000,
          seed: int = 0) -> list[float]:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = TokenEncoder(vocab)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(steps):
        losses.append(contrastive_step(model, optimizer, *toy_batch(batch_size, q_len, d_len, vocab, generator)))
        print(f"step {step}: contrastive loss {losses[-1]:.4f}")
    return losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    return train(args.steps, args.batch_size)


if __name__ == "__main__":
    main()
