"""Backend dispatch: ``auto`` inside and outside an op's declared support matrix, with a fake op."""
import pytest
import torch

from hashkern import _dispatch
from hashkern._dispatch import OpBackends, Support, resolve_backend

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")

# A fake op with a Triton kernel for two dtypes up to d = 512 on sm_80+, and a float64 kernel
# that runs but that auto leaves to torch; auto also stops at d = 256 (torch is faster above).
FAKE_SUPPORT = {"triton": Support(dtypes=(torch.float32, torch.bfloat16, torch.float64), max_sizes={"d": 512},
                                  min_capability=(8, 0), auto_dtypes=(torch.float32, torch.bfloat16),
                                  auto_max_sizes={"d": 256})}
FAKE_OP = OpBackends("fake_op", preference=("triton", "torch"), support=FAKE_SUPPORT)
NO_MATRIX = OpBackends("fake_op", preference=("triton", "torch"))


def fake_op(x: torch.Tensor, device=None, backend: str = "auto") -> str:
    """Stands in for an op module: declares its matrix, resolves, and says which path it took."""
    return resolve_backend(backend, FAKE_OP, device or x.device, dtype=x.dtype, sizes={"d": x.shape[-1]})


@pytest.fixture
def gpu(monkeypatch):
    """A simulated GPU of compute capability 9.0 (Triton is importable here; nothing launches)."""
    pytest.importorskip("triton")
    capability = {"value": (9, 0)}
    monkeypatch.setattr(_dispatch, "cuda_capability", lambda index: capability["value"])
    return capability


def test_auto_takes_triton_inside_the_matrix(gpu):
    for dtype in (torch.float32, torch.bfloat16):
        for d in (1, 64, 256):
            assert fake_op(torch.empty(3, d, dtype=dtype), CUDA) == "triton"


def test_auto_takes_torch_outside_the_matrix(gpu):
    assert fake_op(torch.empty(3, 64, dtype=torch.float16), CUDA) == "torch"   # dtype with no kernel
    assert fake_op(torch.empty(3, 64, dtype=torch.float64), CUDA) == "torch"   # runs, but not auto's
    assert fake_op(torch.empty(3, 257, dtype=torch.float32), CUDA) == "torch"  # auto's size cap
    assert fake_op(torch.empty(3, 4096, dtype=torch.float32), CUDA) == "torch"  # the hard limit
    gpu["value"] = (7, 5)  # an architecture the kernel is not built for
    assert fake_op(torch.empty(3, 64, dtype=torch.float32), CUDA) == "torch"
    gpu["value"] = (8, 0)
    assert fake_op(torch.empty(3, 64, dtype=torch.float32), CUDA) == "triton"


def test_named_backend_runs_up_to_its_hard_limits(gpu):
    # float64 and d in (256, 512] are outside auto's choice, but the kernel takes them when asked.
    assert fake_op(torch.empty(3, 64, dtype=torch.float64), CUDA, backend="triton") == "triton"
    assert fake_op(torch.empty(3, 512, dtype=torch.float32), CUDA, backend="triton") == "triton"
    with pytest.raises(ValueError, match=r"d = 513 is above its limit 512.*backend='torch'"):
        fake_op(torch.empty(3, 513, dtype=torch.float32), CUDA, backend="triton")
    with pytest.raises(ValueError, match="dtype float16 is not one of float32, bfloat16, float64"):
        fake_op(torch.empty(3, 8, dtype=torch.float16), CUDA, backend="triton")
    gpu["value"] = (7, 0)
    with pytest.raises(ValueError, match="compute capability 7.0 is below 8.0"):
        fake_op(torch.empty(3, 8, dtype=torch.float32), CUDA, backend="triton")
    assert fake_op(torch.empty(3, 4096, dtype=torch.float16), CUDA, backend="torch") == "torch"


def test_interpreter_has_no_architecture(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(_dispatch, "cuda_capability", lambda index: pytest.fail("read a GPU's capability"))
    assert fake_op(torch.empty(3, 64, dtype=torch.float32), backend="triton") == "triton"
    assert fake_op(torch.empty(3, 64, dtype=torch.float16)) == "torch"  # dtype and sizes still apply


def test_a_declared_size_must_be_passed(gpu):
    with pytest.raises(TypeError, match="limits size 'd'"):
        resolve_backend("auto", FAKE_OP, CUDA, dtype=torch.float32)


def test_backends_without_a_row_take_any_input(gpu):
    assert resolve_backend("auto", NO_MATRIX, CUDA, dtype=torch.float16) == "triton"


def test_unavailable_backend_error_names_backend_and_device(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(_dispatch.BackendUnavailableError, match="TRITON_INTERPRET=1") as caught:
        resolve_backend("triton", NO_MATRIX, CPU)
    assert caught.value.backend == "triton" and caught.value.device == CPU
    assert isinstance(caught.value, RuntimeError)  # callers catching RuntimeError keep working


def test_auto_passes_over_nondeterministic_backends_in_deterministic_mode(gpu):
    racy = OpBackends("racy_op", preference=("triton", "torch"), nondeterministic={"triton": ("cuda",)})
    assert resolve_backend("auto", racy, CUDA) == "triton"
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert resolve_backend("auto", racy, CUDA) == "torch"
        assert resolve_backend("triton", racy, CUDA) == "triton"  # named: the backend decides (the launcher refuses)
    finally:
        torch.use_deterministic_algorithms(previous)


def test_preference_per_device(gpu, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    per_device = OpBackends("fake_op", preference=("torch", "triton"),
                            preference_by_device={"cuda": ("triton", "torch")})
    assert resolve_backend("auto", per_device, CUDA) == "triton"
    assert resolve_backend("auto", per_device, CPU) == "torch"
    assert resolve_backend("triton", per_device, CPU) == "triton"
    with pytest.raises(ValueError, match="not implemented for fake_op; choose from"):
        resolve_backend("cpu", per_device, CPU)


def test_a_declaration_names_only_known_backends():
    with pytest.raises(ValueError, match="unknown backend 'trition'"):
        OpBackends("fake_op", preference=("trition", "torch"))


def test_explain_backend_says_why_auto_passed_over_each_backend(monkeypatch):
    import hashkern
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(4, 4)
    trail = hashkern.explain_backend("sorted_cosine", x)
    if hashkern._ext.has_kernel("softsort_scan_fwd", "cpu"):
        assert trail == [("cpu", None)]
    monkeypatch.setattr(hashkern._ext, "_load_error", "not built")
    trail = dict(hashkern.explain_backend("sorted_cosine", x))
    assert "built without the cpu kernel of softsort_scan_fwd" in trail["cpu"]
    assert "TRITON_INTERPRET=1" in trail["triton"] or "not installed" in trail["triton"]
    assert trail["torch"] is None
    assert dict(hashkern.explain_backend("hamming_topk", "cpu"))["cuda"].startswith("the cuda kernels need cuda")
    with pytest.raises(ValueError, match="op must be one of"):
        hashkern.explain_backend("no_such_op", x)


def test_explain_backend_follows_patch_similarity_to_maxsim(monkeypatch):
    """auto runs patch_similarity's maxmean (its default) as maxsim, whose C++ kernel leads on the CPU:
    explain_backend names the backend that really runs, for maxmean and for softmaxmean."""
    import sys

    import hashkern
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    taken = []
    for name in ("hashkern.ops.maxsim", "hashkern.ops.patchsim"):
        def spy(backend, backends, device, _real=resolve_backend, **kwargs):
            taken.append(_real(backend, backends, device, **kwargs))
            return taken[-1]
        monkeypatch.setattr(sys.modules[name], "resolve_backend", spy)
    x1, x2 = torch.randn(2, 3, 4), torch.randn(3, 5, 4)
    for arguments in ({}, {"reduce": "maxmean"}, {"reduce": "softmaxmean"}):
        hashkern.patch_similarity(x1, x2, **arguments)
        assert hashkern.explain_backend("patch_similarity", x1, **arguments)[-1] == (taken[-1], None), arguments
    if hashkern._ext.has_kernel("maxsim", "cpu"):
        assert hashkern.explain_backend("patch_similarity", x1) == [("cpu", None)]
    assert hashkern.explain_backend("patch_similarity", x1, reduce="softmaxmean") == [("torch", None)]
    with pytest.raises(TypeError, match="takes no argument \\['normalize'\\]; only 'reduce'"):
        hashkern.explain_backend("patch_similarity", x1, normalize=False)
    with pytest.raises(TypeError, match="takes no argument"):
        hashkern.explain_backend("sorted_cosine", x1, reduce="mean")


def test_explain_backend_reports_the_support_matrix_and_determinism(gpu):
    import hashkern
    assert hashkern.explain_backend("patch_similarity", CUDA) == [("triton", None)]
    gpu["value"] = (7, 5)
    assert hashkern.explain_backend("patch_similarity", CUDA) == [
        ("triton", "the GPU's compute capability 7.5 is below 8.0"), ("torch", None)]
    gpu["value"] = (9, 0)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        trail = dict(hashkern.explain_backend("soft_sort_gather", CUDA))
    finally:
        torch.use_deterministic_algorithms(previous)
    assert "not deterministic on cuda" in trail["triton"] and trail["torch"] is None


def test_auto_logs_what_it_passed_over(gpu, caplog):
    racy = OpBackends("racy_op", preference=("triton", "torch"), support={"triton": Support(min_capability=(9, 5))})
    with caplog.at_level("DEBUG", logger="hashkern.dispatch"):
        assert resolve_backend("auto", racy, CUDA) == "torch"
    assert "racy_op on cuda:0: auto takes torch (passed over triton: the GPU's compute capability 9.0 is below 9.5)" \
        in caplog.text
