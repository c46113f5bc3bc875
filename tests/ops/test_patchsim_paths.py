"""The Triton path's internals on small cases: the int32 counting-sort CSR, runs of x2 images per forward
program, and the device guard around every launch."""
import contextlib

import pytest
import torch

from hashkern.ops.patchsim import patch_similarity, patch_similarity_reference

pytest.importorskip("triton")


def test_counting_sort_csr_equals_a_stable_sort(monkeypatch):
    """Histogram + scan + placement over several windows gives exactly the stable sort of the keys."""
    from hashkern.ops.patchsim import triton_launch

    monkeypatch.setattr(triton_launch, "CSR_WINDOW", 16)  # 45 rows -> 3 windows, the last one partial
    b2, R1, Q = 3, 45, 5
    keys = torch.randint(0, Q + 1, (b2, R1), dtype=torch.int32)  # Q marks padded rows
    keys[1] = 2  # one key everywhere: a single segment across windows
    order, offsets = triton_launch.argmax_csr(keys, Q)
    assert order.dtype == torch.int32 and offsets.dtype == torch.int32
    expect_order = torch.sort(keys.long(), dim=1, stable=True).indices
    assert torch.equal(order.long(), expect_order)
    counts = torch.stack([torch.bincount(k.long(), minlength=Q + 1) for k in keys])
    assert torch.equal(offsets.long(), torch.cumsum(counts, 1) - counts)


def test_large_q_falls_back_to_a_sort(monkeypatch):
    """Q past the counting sort's histogram width takes the torch sort, with the same result."""
    from hashkern.ops.patchsim import triton_launch

    keys = torch.randint(0, 10, (2, 30), dtype=torch.int32)
    expect = triton_launch.argmax_csr(keys, 9)
    monkeypatch.setattr(triton_launch, "MAX_CSR_BINS", 8)
    got = triton_launch.argmax_csr(keys, 9)
    assert torch.equal(got[0], expect[0]) and torch.equal(got[1], expect[1])


@pytest.mark.parametrize("reduce", ["maxmean", "softmaxmean"])
def test_forward_programs_over_runs_of_images(monkeypatch, reduce):
    """Two x2 images per program (5 images: the last run holds one), Q = 21 across 32-wide column chunks:
    images that straddle chunks merge their running max."""
    from hashkern.ops.patchsim import triton_launch

    monkeypatch.setattr(triton_launch, "images_per_program", lambda b2, Q, block_n: 2)
    x1 = torch.randn(3, 11, 20, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(5, 21, 20, dtype=torch.float64, requires_grad=True)
    mask2 = torch.rand(5, 21) > 0.3
    mask2[:, 20] = True
    s = patch_similarity(x1, x2, reduce=reduce, mask2=mask2, temperature=0.2, backend="triton")
    ref = patch_similarity_reference(x1, x2, reduce=reduce, mask2=mask2, temperature=0.2)
    torch.testing.assert_close(s, ref, atol=1e-10, rtol=1e-10)
    grads = torch.autograd.grad(s.sum(), (x1, x2))
    for got, expect in zip(grads, torch.autograd.grad(ref.sum(), (x1, x2))):
        torch.testing.assert_close(got, expect, atol=1e-10, rtol=1e-10)


def test_images_per_program_wastes_little():
    from hashkern.ops.patchsim.triton_launch import images_per_program

    for b2, Q, block_n in [(256, 196, 64), (512, 49, 64), (3, 7, 32), (1, 500, 64)]:
        n = images_per_program(b2, Q, block_n)
        assert 1 <= n <= b2
        assert n * Q >= min(b2 * Q, 4 * block_n) or n == b2
        assert -(-n * Q // block_n) * block_n <= 1.1 * n * Q or n * Q < 4 * block_n


def test_every_launch_runs_under_the_device_guard(monkeypatch):
    """Each Triton launch of the op enters on_device_of(its tensors) (cuda:1 tensors launch on cuda:1)."""
    from hashkern.ops.patchsim import triton_launch

    entered = []

    @contextlib.contextmanager
    def recording_guard(tensor):
        entered.append(tensor.device)
        yield

    monkeypatch.setattr(triton_launch, "on_device_of", recording_guard)
    for reduce in ("maxmean", "softmaxmean"):
        x1 = torch.randn(2, 3, 8, requires_grad=True)
        x2 = torch.randn(2, 4, 8, requires_grad=True)
        patch_similarity(x1, x2, reduce=reduce, backend="triton").sum().backward()
    assert len(entered) >= 2 + 1 + 2  # forward x 2, dS chunk, dx1, CSR, dx2
    assert all(device == x1.device for device in entered)


def test_device_guard_selects_the_tensors_device(monkeypatch):
    from types import SimpleNamespace

    from hashkern.ops._device_guard import on_device_of

    chosen = []
    monkeypatch.setattr(torch.cuda, "device", lambda device: chosen.append(device) or contextlib.nullcontext())
    with on_device_of(SimpleNamespace(device=torch.device("cuda:1"))):
        pass
    assert chosen == [torch.device("cuda:1")]
    with on_device_of(torch.zeros(1)):  # CPU: nothing to select
        pass
    assert chosen == [torch.device("cuda:1")]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cuda_hub_at_scale_matches_torch_path(dtype):
    """b = 64, P = Q = 196: every patch of every x1 image picks the same x2 patch (12,544-row segments, split
    into pieces), against the torch path in float64."""
    x1 = torch.rand(64, 196, 128, device="cuda") + 0.5
    x2 = torch.randn(64, 196, 128, device="cuda")
    x2[:, 7] = 3.0
    a1, a2 = x1.to(dtype).requires_grad_(), x2.to(dtype).requires_grad_()
    s = patch_similarity(a1, a2, normalize=False, backend="triton")
    r1, r2 = a1.detach().double().requires_grad_(), a2.detach().double().requires_grad_()
    ref = patch_similarity(r1, r2, normalize=False, backend="torch")
    torch.testing.assert_close(s.double(), ref, atol=3e-2 * ref.abs().max().item(), rtol=0)
    grad = torch.randn_like(ref)
    for got, expect in zip(torch.autograd.grad(s, (a1, a2), grad.float()), torch.autograd.grad(ref, (r1, r2), grad)):
        torch.testing.assert_close(got.double(), expect, atol=3e-2 * expect.abs().max().item(), rtol=0)


@pytest.mark.gpu
@pytest.mark.xdist_group("gpu_heavy")  # 45-55 GB of GPU memory
def test_cuda_offsets_past_int32():
    """b1 P D > 2^31 elements (x1 is 4.3 GB in bf16): int64 addresses in the forward, dx1 and dx2."""
    x1 = torch.randn(14_300, 196, 768, device="cuda", dtype=torch.bfloat16)
    assert x1.numel() > 2**31
    x2 = torch.randn(1, 3, 768, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    x1.requires_grad_()
    s = patch_similarity(x1, x2, backend="triton")
    d1, d2 = torch.autograd.grad(s.sum(), (x1, x2))
    tail = slice(14_290, None)  # images whose patches lie past element 2^31
    r1, r2 = x1.detach()[tail].float().requires_grad_(), x2.detach().float().requires_grad_()
    ref = patch_similarity(r1, r2, backend="torch")
    torch.testing.assert_close(s[tail], ref, atol=2e-2, rtol=0)
    e1, _ = torch.autograd.grad(ref.sum(), (r1, r2))
    torch.testing.assert_close(d1[tail].float(), e1, atol=2e-2, rtol=0)
    assert torch.isfinite(d2).all()


@pytest.mark.gpu
def test_cuda_softmaxmean_low_temperature_bf16():
    """T = 1e-3 in bf16 (1 / T = 1000 scales rounding errors of the similarities): finite, near float64."""
    x1 = torch.randn(32, 49, 192, device="cuda").bfloat16().requires_grad_()
    x2 = torch.randn(32, 49, 192, device="cuda").bfloat16().requires_grad_()
    s = patch_similarity(x1, x2, reduce="softmaxmean", temperature=1e-3, backend="triton")
    r1, r2 = x1.detach().double().requires_grad_(), x2.detach().double().requires_grad_()
    ref = patch_similarity(r1, r2, reduce="softmaxmean", temperature=1e-3, backend="torch")
    torch.testing.assert_close(s.double(), ref, atol=3e-2, rtol=0)
    d1, d2 = torch.autograd.grad(s.sum(), (x1, x2))
    assert torch.isfinite(d1.float()).all() and torch.isfinite(d2.float()).all()


def test_forward_variant_choice(monkeypatch):
    """"gemm" runs maxmean with x2 images of at most MAX_EPILOGUE_Q patches; softmaxmean and larger Q stay fused."""
    from hashkern.ops.patchsim import triton_launch as L

    monkeypatch.setattr(L, "FORWARD_VARIANT", "gemm")
    assert L.forward_variant(196, "maxmean") == "gemm"
    assert L.forward_variant(196, "softmaxmean") == "fused"
    assert L.forward_variant(L.MAX_EPILOGUE_Q + 1, "maxmean") == "fused"
    monkeypatch.setattr(L, "FORWARD_VARIANT", "auto")
    assert L.forward_variant(196, "maxmean") == L.AUTO_FORWARD
    monkeypatch.setattr(L, "FORWARD_VARIANT", "fast")
    with pytest.raises(ValueError, match="FORWARD_VARIANT must be one of"):
        L.forward_variant(196, "maxmean")


def test_gemm_chunks_cover_every_pair_once():
    from hashkern.ops.patchsim import triton_launch as L

    R1, b2, Q = 1000, 37, 49
    seen = torch.zeros(R1, b2, dtype=torch.int32)
    for r0, r1, m0, m1 in L.gemm_chunks(R1, b2, Q, limit=20_000, columns=512):
        assert (r1 - r0) * (m1 - m0) * Q <= 20_000 and m1 - m0 == min(11, b2 - m0)
        seen[r0:r1, m0:m1] += 1
    assert (seen == 1).all()
