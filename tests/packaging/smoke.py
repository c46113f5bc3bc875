"""Smoke test of an installed hashkern, run by tools/check_packaging.sh in a fresh venv, outside the source tree.

    python smoke.py [--no-ext]

Checks: hashkern imports from site-packages (not a source tree), ``hashkern info`` and
``python -m hashkern info`` run, the compiled extension loaded (``--no-ext``: it did not, and
the import warned once), a packed top-k equals a NumPy reference, ``sorted_cosine`` and
``patch_similarity`` forward and backward equal their float64 references. Exit status 0 when all hold.
"""
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

with warnings.catch_warnings(record=True) as import_warnings:
    warnings.simplefilter("always")
    import hashkern
    from hashkern import _ext
    from hashkern.ops.patchsim import patch_similarity_reference
    from hashkern.ops.softsort import sorted_cosine_reference


def check_installed(expect_extension: bool) -> None:
    source_tree = Path(__file__).resolve().parents[2]
    location = Path(hashkern.__file__).resolve()
    assert source_tree not in location.parents, f"hashkern was imported from the source tree: {location}"
    ours = [w for w in import_warnings if issubclass(w.category, _ext.ExtensionWarning)]
    if expect_extension:
        assert _ext.extension_loaded(), hashkern.build_info()
        assert not ours, [str(w.message) for w in ours]
        assert _ext.build_record()["torch"] == torch.__version__, _ext.build_record()
    else:
        assert not _ext.extension_loaded()
        assert len(ours) == 1, [str(w.message) for w in ours]
        print("import warning:", ours[0].message)
    print(f"hashkern {hashkern.__version__} from {location.parent}; torch {torch.__version__}; {hashkern.build_info()}")


def check_info_commands() -> None:
    console_script = Path(sys.executable).parent / "hashkern"
    for command in ([str(console_script), "info"], [sys.executable, "-m", "hashkern", "info"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"hashkern {hashkern.__version__} "), result.stdout
    print(result.stdout, end="")
    version = subprocess.run([str(console_script), "--version"], capture_output=True, text=True, timeout=300)
    assert version.stdout.strip() == f"hashkern {hashkern.__version__}", version


def check_topk() -> None:
    rng = np.random.default_rng(0)
    q_bits = rng.integers(0, 2, size=(17, 70), dtype=np.uint8)
    db_bits = rng.integers(0, 2, size=(300, 70), dtype=np.uint8)
    q, db = hashkern.pack_bits(torch.from_numpy(q_bits).bool()), hashkern.pack_bits(torch.from_numpy(db_bits).bool())
    assert np.array_equal(q.numpy(), np.packbits(q_bits, axis=1, bitorder="little"))
    dist, idx = hashkern.hamming_topk(q, db, 10)
    distances = (q_bits[:, None, :] != db_bits[None, :, :]).sum(-1)
    nearest = np.argsort(distances, axis=1, kind="stable")[:, :10]  # ties by index, as hashkern
    assert np.array_equal(idx.numpy(), nearest), "hamming_topk indices differ from NumPy"
    assert np.array_equal(dist.numpy(), np.take_along_axis(distances, nearest, axis=1)), "distances differ"


def _forward_backward(op, inputs, weights):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = op(*leaves)
    (out * weights).sum().backward()
    return out.detach(), [x.grad for x in leaves]


def _check_against_reference(name, op, reference, inputs, tolerance):
    weights = torch.randn(op(*inputs).shape, dtype=torch.float64)
    out, grads = _forward_backward(op, inputs, weights.to(inputs[0].dtype))
    ref_out, ref_grads = _forward_backward(reference, [x.double() for x in inputs], weights)
    torch.testing.assert_close(out.double(), ref_out, atol=tolerance, rtol=tolerance, msg=f"{name} forward")
    for i, (grad, ref) in enumerate(zip(grads, ref_grads)):
        torch.testing.assert_close(grad.double(), ref, atol=tolerance, rtol=tolerance, msg=f"{name} grad {i}")


def check_differentiable_ops() -> None:
    torch.manual_seed(0)
    n, d = 12, 9
    s, z1, z2 = torch.rand(n, n), torch.randn(n, d), torch.randn(n, d)
    _check_against_reference("sorted_cosine", lambda s, z1, z2: hashkern.sorted_cosine(s, z1, z2, tau=0.3),
                             lambda s, z1, z2: sorted_cosine_reference(s, z1, z2, tau=0.3), [s, z1, z2], 1e-4)
    x1, x2 = torch.randn(3, 7, 16), torch.randn(4, 5, 16)
    _check_against_reference("patch_similarity", hashkern.patch_similarity, patch_similarity_reference, [x1, x2],
                             1e-4)


def main() -> int:
    check_installed(expect_extension="--no-ext" not in sys.argv[1:])
    check_info_commands()
    check_topk()
    check_differentiable_ops()
    print("smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
