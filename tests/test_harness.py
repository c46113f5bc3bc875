"""The test harness itself, on a simulated GPU machine: Triton on CPU tensors skips, never errors."""
import conftest
import pytest
import torch

from hashkern._dispatch import BackendUnavailableError, OpBackends, resolve_backend

FAKE_OP = OpBackends("fake_op", preference=("triton", "torch"))


@pytest.fixture
def gpu_machine(monkeypatch):
    """A machine with CUDA: Triton compiles for the GPU, so no interpreter."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def run_hook(error: BaseException):
    """Drive conftest's pytest_pyfunc_call wrapper as pytest does, the test raising ``error``."""
    hook = conftest.pytest_pyfunc_call(None)
    next(hook)
    hook.throw(error)


def triton_on_cpu_error() -> BackendUnavailableError:
    with pytest.raises(BackendUnavailableError) as caught:
        resolve_backend("triton", FAKE_OP, torch.device("cpu"))
    return caught.value


def test_interpreter_only_without_cuda():
    assert conftest.wants_interpreter(cuda_available=False)
    assert not conftest.wants_interpreter(cuda_available=True)


def test_triton_on_cpu_tensors_is_skipped_on_a_gpu_machine(gpu_machine):
    error = triton_on_cpu_error()
    assert error.backend == "triton" and error.device.type == "cpu"
    with pytest.raises(pytest.skip.Exception, match="TRITON_INTERPRET=1"):
        run_hook(error)


def test_a_launcher_given_cpu_tensors_is_skipped_on_a_gpu_machine(gpu_machine):
    # what Triton's CUDA launcher raises for a CPU tensor (tests that call launchers directly)
    error = ValueError("Pointer argument cannot be accessed from Triton (cpu tensor?)")
    with pytest.raises(pytest.skip.Exception):
        run_hook(error)
    with pytest.raises(ValueError, match="k must be"):
        run_hook(ValueError("k must be >= 1"))
    try:  # wrapped, as torch.library.opcheck re-raises what the op raised
        try:
            raise error
        except ValueError as inner:
            raise RuntimeError("opcheck: the op raised") from inner
    except RuntimeError as wrapped:
        with pytest.raises(pytest.skip.Exception):
            run_hook(wrapped)


def test_triton_on_cpu_tensors_still_fails_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    error = triton_on_cpu_error()
    with pytest.raises(BackendUnavailableError):  # a CPU-only machine must run it: an error there is real
        run_hook(error)
    with pytest.raises(ValueError):
        run_hook(ValueError("Pointer argument cannot be accessed from Triton (cpu tensor?)"))


def test_other_errors_are_not_skipped(gpu_machine):
    with pytest.raises(RuntimeError, match="kernel failed"):
        run_hook(RuntimeError("kernel failed"))
    unbuilt = BackendUnavailableError("no cuda kernel", "cuda", torch.device("cpu"))
    with pytest.raises(BackendUnavailableError):
        run_hook(unbuilt)
    with pytest.raises(AssertionError):
        run_hook(AssertionError("wrong numbers"))


def test_triton_device_follows_the_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert conftest.triton_test_device() == torch.device("cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # asked for the interpreter on a GPU machine
    assert conftest.triton_test_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert conftest.triton_test_device() == torch.device("cpu")


def test_triton_device_runs_triton_here(triton_device):
    assert resolve_backend("triton", FAKE_OP, triton_device) == "triton"
