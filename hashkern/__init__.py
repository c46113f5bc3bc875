"""hashkern: fused Triton and CUDA kernels for deep unsupervised hashing."""
from hashkern._ext import build_info
from hashkern.codes import hamming_distance, pack_bits, sign_ste, unpack_bits

__version__ = "0.1.0"

__all__ = ["build_info", "hamming_distance", "pack_bits", "sign_ste", "unpack_bits", "__version__"]
