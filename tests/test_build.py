"""What was built, the errors for what was not, and torch.compile over the compiled ops."""
import os

import pytest
import torch

import hashkern
from hashkern import _ext

COMPILED_OPS = ["pack_bits", "unpack_bits", "hamming_distance", "hamming_topk", "hamming_radius_count",
                "hamming_radius_fill"]


def test_extension_has_cpu_kernels():
    assert _ext.extension_loaded(), hashkern.build_info()
    for op in COMPILED_OPS:
        assert _ext.has_kernel(op, "cpu"), op


@pytest.mark.skipif(os.environ.get("HASHKERN_EXPECT_CUDA") != "1",
                    reason="HASHKERN_EXPECT_CUDA=1 (set by `make test`) asks that the CUDA kernels were built")
def test_cuda_kernels_were_compiled_and_linked():
    for op in COMPILED_OPS:
        assert _ext.has_kernel(op, "cuda"), f"{op}: {hashkern.build_info()}"
    print(hashkern.build_info())


def test_unbuilt_backend_error_says_how_to_build(monkeypatch):
    monkeypatch.setattr(_ext, "_load_error", "HASHKERN_NO_EXT=1 was set when hashkern was built or imported")
    codes = torch.ones(2, 8)
    with pytest.raises(RuntimeError, match="pip install --no-build-isolation"):
        hashkern.pack_bits(codes, backend="cpu")
    # auto falls back to the PyTorch path
    assert torch.equal(hashkern.pack_bits(codes), torch.full((2, 1), 255, dtype=torch.uint8))


def test_ops_compile_without_graph_breaks():
    def search(q_codes, db_codes):
        return hashkern.hamming_distance(hashkern.pack_bits(q_codes), hashkern.pack_bits(db_codes))

    compiled = torch.compile(search, backend="aot_eager", fullgraph=True)
    q, db = torch.rand(5, 70) < 0.5, torch.rand(9, 70) < 0.5
    assert torch.equal(compiled(q, db), search(q, db))


def test_direct_op_calls_check_their_arguments():
    """torch.ops.hashkern.* bypass the Python checks; the C++ checks still refuse bad shapes."""
    a = torch.zeros(3, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="same bytes per row"):
        torch.ops.hashkern.hamming_distance(a, a[:, :4].contiguous(), torch.empty(3, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="out must have shape"):
        torch.ops.hashkern.hamming_distance(a, a, torch.empty(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="bytes per row for nbits=9"):
        torch.ops.hashkern.unpack_bits(a, 9, True, torch.empty(3, 9))
    with pytest.raises(ValueError, match="out must have shape"):
        torch.ops.hashkern.pack_bits(torch.ones(2, 9), torch.empty(2, 1, dtype=torch.uint8))


def test_every_schema_has_its_kernels():
    """Each op csrc/hashkern.cpp defines is registered, with a CPU kernel (or a catch-all one for the
    developer switches, which take no tensors), so no schema is left without an implementation."""
    import pathlib
    import re

    assert _ext.extension_loaded(), hashkern.build_info()
    source = (pathlib.Path(__file__).resolve().parents[1] / "csrc" / "hashkern.cpp").read_text()
    names = re.findall(r'm\.def\("(\w+)\(', source)
    assert set(COMPILED_OPS + ["softsort_scan_fwd", "softsort_scan_bwd", "sort_rows_descending"]) <= set(names)
    for name in names:
        assert hasattr(torch.ops.hashkern, name), name
        if name.startswith("_"):
            key = "CompositeImplicitAutograd"
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"hashkern::{name}", key), name
        else:
            assert _ext.has_kernel(name, "cpu"), name
    assert torch.ops.hashkern._softsort_groups("") in ("auto", "always", "never")
    in_use, *sets = torch.ops.hashkern._cpu_kernels("")
    assert in_use in ["auto", *sets]  # "auto": chosen per code length by measuring
