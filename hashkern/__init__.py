"""hashkern: fused Triton and CUDA kernels for deep unsupervised hashing.

Ops (``hashkern.ops``), losses (``hashkern.losses``), models (``hashkern.models``), and the
search side: packed codes, exact Hamming top-k / radius search, ``HammingIndex`` and metrics.
Heavy pieces (models) are imported from their sub-packages, not here; the application (training,
pretraining, the demo, data loading, checkpoints and the ``hashkern`` command) is ``hashkern.training``.
"""
from hashkern import _moved
from hashkern._dispatch import explain_backend
from hashkern._ext import build_info
from hashkern.codes import hamming_distance, pack_bits, sign_ste, unpack_bits
from hashkern.index import HammingIndex, IndexFileError
from hashkern.metrics import (
    mean_average_precision,
    precision_at_radius,
    precision_recall_at_ranks,
    precision_recall_curve,
)
from hashkern.ops.mutual_attention import mutual_attention
from hashkern.ops.patchsim import patch_similarity
from hashkern.ops.search import hamming_radius, hamming_topk
from hashkern.ops.softsort import soft_sort, soft_sort_gather, sorted_cosine

__version__ = "0.1.0"

_moved.install()  # old paths such as hashkern.train keep working for one release

__all__ = [
    "build_info", "explain_backend", "sign_ste", "pack_bits", "unpack_bits", "hamming_distance",
    "hamming_topk", "hamming_radius", "HammingIndex", "IndexFileError",
    "mean_average_precision", "precision_recall_curve", "precision_recall_at_ranks", "precision_at_radius",
    "soft_sort", "soft_sort_gather", "sorted_cosine", "patch_similarity", "mutual_attention",
    "__version__",
]
