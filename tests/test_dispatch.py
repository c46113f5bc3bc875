"""Backend dispatch: ``auto`` inside and outside an op's declared support matrix, with a fake op."""
import pytest
import torch

from hashkern import _dispatch
from hashkern._dispatch import Support, resolve_backend

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")

# A fake op with a Triton kernel for two dtypes up to d = 512 on sm_80+, and a float64 kernel
# that runs but that auto leaves to torch; auto also stops at d = 256 (torch is faster above).
FAKE_SUPPORT = {"triton": Support(dtypes=(torch.float32, torch.bfloat16, torch.float64), max_sizes={"d": 512},
                                  min_capability=(8, 0), auto_dtypes=(torch.float32, torch.bfloat16),
                                  auto_max_sizes={"d": 256})}


def fake_op(x: torch.Tensor, device=None, backend: str = "auto") -> str:
    """Stands in for an op module: declares its matrix, resolves, and says which path it took."""
    return resolve_backend(backend, "fake_op", device or x.device, ("triton", "torch"), support=FAKE_SUPPORT,
                           dtype=x.dtype, sizes={"d": x.shape[-1]})


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
        resolve_backend("auto", "fake_op", CUDA, ("triton", "torch"), support=FAKE_SUPPORT, dtype=torch.float32)


def test_backends_without_a_row_take_any_input(gpu):
    assert resolve_backend("auto", "fake_op", CUDA, ("triton", "torch"), dtype=torch.float16) == "triton"


def test_unavailable_backend_error_names_backend_and_device(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(_dispatch.BackendUnavailableError, match="TRITON_INTERPRET=1") as caught:
        resolve_backend("triton", "fake_op", CPU, ("triton", "torch"))
    assert caught.value.backend == "triton" and caught.value.device == CPU
    assert isinstance(caught.value, RuntimeError)  # callers catching RuntimeError keep working
