"""Every Triton kernel the ops launch compiles for sm_80 and sm_90 (see tools/triton_aot.py).

The ops run once here under the interpreter, forward and backward, in each input dtype; the
launches they make are compiled ahead of time for real GPUs. Numerics are checked elsewhere.
"""
import os

import pytest
import torch

from tools.triton_aot import SHARED_LIMIT, compile_for_gpus, record_launches

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="records launches under the Triton interpreter (CPU-only machines)")
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def exercise_softsort(dtype):
    from hashkern.ops.softsort import soft_sort_gather, sorted_cosine

    for n, d in [(5, 3), (40, 64)]:
        s = torch.rand(2, n).to(dtype).requires_grad_()
        v = torch.randn(n, d).to(dtype).requires_grad_()
        soft_sort_gather(s, v, 0.1, backend="triton").float().sum().backward()
        s = torch.rand(n, n).to(dtype).requires_grad_()
        z1, z2 = (torch.randn(n, d).to(dtype).requires_grad_() for _ in range(2))
        sorted_cosine(s, z1, z2, 0.1, backend="triton").float().sum().backward()


def exercise_patchsim(dtype):
    from hashkern.ops.patchsim import patch_similarity

    for (b, P, D) in [(2, 7, 33), (2, 49, 128)]:
        for reduce in ("maxmean", "softmaxmean"):
            x1, x2 = (torch.randn(b, P, D).to(dtype).requires_grad_() for _ in range(2))
            mask = torch.ones(b, P, dtype=torch.bool)
            mask[:, -1] = False
            patch_similarity(x1, x2, reduce=reduce, mask1=mask, mask2=mask, backend="triton").float().sum().backward()


@pytest.fixture(scope="module")
def reports():
    with record_launches() as launches:
        for dtype in DTYPES:
            exercise_softsort(dtype)
            exercise_patchsim(dtype)
    assert launches, "no Triton launch was recorded"
    return compile_for_gpus(launches)


def test_every_launch_compiles_for_sm80_and_sm90(reports):
    failures = [f"{r['kernel']} sm_{r['arch']} {r['constexprs']} {r['options']}: {r['error']}"
                for r in reports if not r["ok"]]
    assert not failures, "\n\n".join(failures)


def test_shared_memory_fits(reports):
    over = [f"{r['kernel']} sm_{r['arch']} {r['constexprs']}: {r['shared']} bytes"
            for r in reports if r["ok"] and r["shared"] > SHARED_LIMIT[r["arch"]]]
    assert not over, "\n".join(over)


def test_half_precision_forward_kernels_use_tensor_cores(reports):
    """bf16/fp16 forward kernels multiply tiles with mma/wgmma, not scalar FMAs (a dot under 16 wide falls back)."""
    half = [r for r in reports if r["ok"] and "fwd" in r["kernel"]
            and any(t in ("*bf16", "*fp16") for t in r["signature"].values())]
    assert half, "no half-precision forward launch was recorded"
    scalar = [f"{r['kernel']} sm_{r['arch']} {r['constexprs']}" for r in half if not r["tensor_cores"]]
    assert not scalar, "\n".join(scalar)
