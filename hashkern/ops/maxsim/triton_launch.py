"""The Triton backend (CUDA, or CPU tensors under ``TRITON_INTERPRET=1``): patch similarity's Triton GEMM
kernels with a segmented max epilogue and their gather backward (``hashkern.ops.patchsim.triton_launch``)
on the padded documents; see ``_common.padded_backend``. This module imports triton; import it lazily."""
from __future__ import annotations

from hashkern.ops.maxsim._common import padded_backend
from hashkern.ops.patchsim.triton_launch import patch_similarity_bwd, patch_similarity_fwd

maxsim_triton_fwd, maxsim_triton_bwd = padded_backend(patch_similarity_fwd, patch_similarity_bwd)
