"""Plain-PyTorch packing of binary codes: the oracle for the kernels, and their fallback."""
import torch

_BIT_WEIGHTS = [1 << bit for bit in range(8)]


def pack_bits_reference(codes: torch.Tensor) -> torch.Tensor:
    """codes [..., K] (value > 0 or True is a 1 bit) -> [..., ceil(K/8)] uint8, bit j in byte j//8, bit j%8."""
    nbits = codes.shape[-1]
    width = (nbits + 7) // 8
    bits = (codes > 0).to(torch.uint8)
    bits = torch.nn.functional.pad(bits, (0, 8 * width - nbits))
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=codes.device)
    return (bits.reshape(*codes.shape[:-1], width, 8) * weights).sum(-1, dtype=torch.uint8)


def unpack_bits_reference(packed: torch.Tensor, nbits: int, dtype: torch.dtype = torch.float32,
                          signed: bool = True) -> torch.Tensor:
    """packed [..., ceil(K/8)] uint8 -> [..., K]: ±1 when ``signed``, else {0, 1} (bool: False/True)."""
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(-1) & weights) != 0
    bits = bits.reshape(*packed.shape[:-1], -1)[..., :nbits]
    if dtype == torch.bool:
        return bits
    bits = bits.to(dtype)
    return 2 * bits - 1 if signed else bits
