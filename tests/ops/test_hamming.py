import pytest
import torch

from hashkern import hamming_distance, pack_bits
from hashkern.ops.hamming import hamming_distance_reference

NBITS = [1, 7, 8, 63, 64, 65, 1024]


def random_packed(n, nbits, device, distinct=None):
    """Packed random ±1 codes; ``distinct`` draws rows from that many codes (heavy ties)."""
    rows = n if distinct is None else distinct
    codes = torch.where(torch.rand(rows, nbits, device=device) < 0.5, 1.0, -1.0)
    if distinct is not None:
        codes = codes[torch.randint(distinct, (n,), device=device)]
    return pack_bits(codes), codes


def test_matches_sign_dot_product_definition(device):
    a, codes_a = random_packed(9, 100, device)
    b, codes_b = random_packed(11, 100, device)
    expected = ((100 - codes_a @ codes_b.T) / 2).round().to(torch.int32)
    assert torch.equal(hamming_distance(a, b), expected)


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("backend", ["auto", "torch", "compiled"])
def test_matches_reference_exactly(nbits, backend, device, poisoned):
    # "compiled" names the device's kernel (cpu / cuda): a build without it fails, not falls back
    backend = device.type if backend == "compiled" else backend
    a, _ = random_packed(45, nbits, device)
    b, _ = random_packed(70, nbits, device, distinct=5)
    out = hamming_distance(a, b, out=poisoned((45, 70), torch.int32, device), backend=backend)
    assert torch.equal(out, hamming_distance_reference(a, b))
    assert out.min() >= 0 and out.max() <= nbits


@pytest.mark.parametrize("na,nb", [(1, 1), (1, 33), (33, 1), (65, 1030), (0, 4), (4, 0)])
def test_odd_and_empty_shapes(na, nb, device):
    a, _ = random_packed(na, 24, device)
    b, _ = random_packed(nb, 24, device)
    assert torch.equal(hamming_distance(a, b), hamming_distance_reference(a, b))


def test_identical_rows_have_distance_zero(device):
    a, _ = random_packed(20, 130, device)
    assert torch.all(hamming_distance(a, a).diagonal() == 0)


def test_non_contiguous_and_offset_inputs(device):
    a, _ = random_packed(30, 200, device)
    b, _ = random_packed(30, 200, device)
    a_view = a[1::2]            # strided rows
    b_view = b[3:]              # storage offset not a multiple of 8 bytes
    assert torch.equal(hamming_distance(a_view, b_view), hamming_distance_reference(a_view, b_view))
    wide = torch.cat([a, b], dim=1)[:, :a.shape[1]]  # non-contiguous columns
    assert torch.equal(hamming_distance(wide, b), hamming_distance_reference(a, b))


def test_bad_input_is_refused():
    a = torch.zeros(3, 8, dtype=torch.uint8)
    with pytest.raises(TypeError, match="a_packed must have dtype uint8"):
        hamming_distance(a.float(), a)
    with pytest.raises(ValueError, match="b_packed must be 2-D"):
        hamming_distance(a, a[0])
    with pytest.raises(ValueError, match="same bytes per row"):
        hamming_distance(a, torch.zeros(3, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="at least one byte"):
        hamming_distance(a[:, :0], a[:, :0])
    with pytest.raises(TypeError, match="out must have dtype"):
        hamming_distance(a, a, out=torch.empty(3, 3))


@pytest.mark.gpu
def test_different_devices_are_refused():
    a = torch.zeros(3, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="same device"):
        hamming_distance(a, a.cuda())


def test_different_devices_are_refused_on_meta():
    a = torch.zeros(3, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="same device"):
        hamming_distance(a, a.to("meta"))


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_out_overlapping_an_input_is_refused(backend):
    """The compiled kernel reads rows it already overwrote when out aliases an input (716 wrong of 1600)."""
    storage = torch.zeros(40 * 40 * 4 + 64, dtype=torch.uint8)
    a = storage[:320].view(40, 8)
    a.copy_(torch.randint(0, 256, (40, 8), dtype=torch.uint8))
    aliased = storage[: 40 * 40 * 4].view(torch.int32)  # starts where a starts
    for a_arg, b_arg, name in ((a, a[:7], "a_packed"), (a[:9].clone(), a, "b_packed")):
        out = aliased[: a_arg.shape[0] * b_arg.shape[0]].view(a_arg.shape[0], b_arg.shape[0])
        with pytest.raises(ValueError, match=f"out shares memory with {name}"):
            hamming_distance(a_arg, b_arg, out=out, backend=backend)
    # A view of the same storage that does not overlap is fine and exact.
    big = torch.zeros(400 * 4 + 320, dtype=torch.uint8)
    a2 = big[-320:].view(40, 8)
    a2.copy_(a)
    out = big[: 400 * 4].view(torch.int32).view(40, 10)
    assert torch.equal(hamming_distance(a2, a2[:10], out=out, backend=backend),
                       hamming_distance_reference(a, a[:10]))
