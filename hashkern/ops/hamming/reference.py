"""Plain-PyTorch Hamming distances between packed codes: the oracle, and the fallback."""
import torch

# popcount of every byte value
_POPCOUNT = torch.tensor([bin(v).count("1") for v in range(256)], dtype=torch.int32)


def hamming_distance_reference(a: torch.Tensor, b: torch.Tensor, chunk_bytes: int = 1 << 26) -> torch.Tensor:
    """a [na, W], b [nb, W] uint8 packed codes -> [na, nb] int32 bit differences.

    Row chunks of ``a`` keep the ``[rows, nb, W]`` XOR under ``chunk_bytes``.
    """
    table = _POPCOUNT.to(a.device)
    out = torch.empty(a.shape[0], b.shape[0], dtype=torch.int32, device=a.device)
    rows = max(1, chunk_bytes // max(1, b.shape[0] * b.shape[1]))
    for start in range(0, a.shape[0], rows):
        xor = a[start:start + rows, None, :] ^ b[None, :, :]
        out[start:start + rows] = table[xor.long()].sum(-1, dtype=torch.int32)
    return out
