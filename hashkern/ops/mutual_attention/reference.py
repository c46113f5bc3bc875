"""Float64-safe plain-PyTorch oracle of mutual attention: an explicit softmax over ``[b, Q, P]`` cosines."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mutual_attention_reference(x1: torch.Tensor, x2: torch.Tensor, temperature: float = 1.0):
    """Explicit-softmax transcription (materialises [b, Q, P]); the oracle of the tests."""
    q1, q2 = F.normalize(x1, dim=-1), F.normalize(x2, dim=-1)
    cos = q2 @ q1.transpose(1, 2)  # [b, Q, P]: cos(x2[n, j], x1[n, i])
    x1_attended = torch.softmax(cos / temperature, dim=-1) @ x1
    x2_attended = torch.softmax(cos.transpose(1, 2) / temperature, dim=-1) @ x2
    return x1_attended, x2_attended
