"""The PyTorch backend (any device): patch similarity's chunked GEMM with a segmented max
(``hashkern.ops.patchsim.torch_impl``) on the padded documents; see ``_common.padded_backend``."""
from __future__ import annotations

from hashkern.ops.maxsim._common import padded_backend
from hashkern.ops.patchsim.torch_impl import patch_similarity_torch_bwd, patch_similarity_torch_fwd

maxsim_torch_fwd, maxsim_torch_bwd = padded_backend(patch_similarity_torch_fwd, patch_similarity_torch_bwd)
