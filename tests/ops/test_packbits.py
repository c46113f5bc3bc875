import pytest
import torch

from hashkern import pack_bits, unpack_bits
from hashkern.ops.packbits import pack_bits_reference, packed_width, unpack_bits_reference

NBITS = [1, 7, 8, 63, 64, 65, 1024]
BACKENDS = ["auto", "torch"]


def random_codes(shape, device, kind="pm1"):
    bits = torch.rand(shape, device=device) < 0.5
    if kind == "bool":
        return bits
    if kind == "01":
        return bits.to(torch.int64)
    return torch.where(bits, 1.0, -1.0)


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip_is_exact(nbits, backend, device, poisoned):
    codes = random_codes((37, nbits), device)
    packed = pack_bits(codes, out=poisoned((37, packed_width(nbits)), torch.uint8, device), backend=backend)
    assert torch.equal(packed, pack_bits_reference(codes))
    restored = unpack_bits(packed, nbits, out=poisoned((37, nbits), torch.float32, device), backend=backend)
    assert torch.equal(restored, codes)


@pytest.mark.parametrize("nbits", NBITS)
def test_bit_order_and_zero_padding(nbits, device):
    codes = random_codes((5, nbits), device)
    packed = pack_bits(codes).cpu()
    for j in range(nbits):
        assert torch.equal((packed[:, j // 8] >> (j % 8)) & 1, (codes[:, j] > 0).to(torch.uint8).cpu())
    spare = 8 * packed.shape[1] - nbits
    if spare:
        assert torch.all(packed[:, -1] >> (8 - spare) == 0)


@pytest.mark.parametrize("kind", ["pm1", "01", "bool"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8,
                                   torch.int32])
def test_input_encodings_and_dtypes_agree(kind, dtype, device):
    bits = random_codes((4, 3, 19), device, "bool")
    codes = bits if kind == "bool" else (torch.where(bits, 1, -1 if kind == "pm1" else 0)).to(dtype)
    assert torch.equal(pack_bits(codes), pack_bits_reference(bits))


@pytest.mark.parametrize("dtype,signed", [(torch.bool, False), (torch.uint8, False), (torch.int8, True),
                                          (torch.float16, True), (torch.float64, False)])
def test_unpack_dtypes(dtype, signed, device):
    packed = pack_bits(random_codes((6, 13), device))
    got = unpack_bits(packed, 13, dtype=dtype, signed=signed)
    assert got.dtype == dtype
    assert torch.equal(got, unpack_bits_reference(packed, 13, dtype, signed))


def test_batched_and_non_contiguous_input(device):
    codes = random_codes((3, 40, 24), device).transpose(1, 2)  # [3, 24, 40], non-contiguous
    assert not codes.is_contiguous()
    packed = pack_bits(codes)
    assert packed.shape == (3, 24, 5)
    assert torch.equal(packed, pack_bits_reference(codes.contiguous()))
    assert torch.equal(unpack_bits(packed, 40), codes)


def test_empty_batch(device):
    assert pack_bits(torch.ones(0, 9, device=device)).shape == (0, 2)
    assert unpack_bits(torch.zeros(0, 2, dtype=torch.uint8, device=device), 9).shape == (0, 9)


@pytest.mark.parametrize("values", [[0.5, 1.0], [2.0, -2.0], [-1.0, 0.0, 1.0], [float("nan"), 1.0]])
def test_non_binary_values_are_refused(values):
    with pytest.raises(ValueError, match="codes must hold binary values"):
        pack_bits(torch.tensor([values]))


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="codes must be a torch.Tensor"):
        pack_bits([[1, -1]])
    with pytest.raises(ValueError, match="last dimension K >= 1"):
        pack_bits(torch.ones(3, 0))
    with pytest.raises(ValueError, match="last dimension K >= 1"):
        pack_bits(torch.tensor(1.0))
    with pytest.raises(TypeError, match="packed must have dtype uint8"):
        unpack_bits(torch.zeros(2, 1, dtype=torch.int32), 8)
    with pytest.raises(ValueError, match="nbits must be >= 1"):
        unpack_bits(torch.zeros(2, 1, dtype=torch.uint8), 0)
    with pytest.raises(ValueError, match="2 bytes per row for nbits=9"):
        unpack_bits(torch.zeros(2, 1, dtype=torch.uint8), 9)
    with pytest.raises(ValueError, match="signed=True"):
        unpack_bits(torch.zeros(2, 1, dtype=torch.uint8), 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="out must have shape"):
        pack_bits(torch.ones(2, 9), out=torch.empty(2, 1, dtype=torch.uint8))
    with pytest.raises(ValueError, match="backend must be one of"):
        pack_bits(torch.ones(2, 9), backend="fast")
    with pytest.raises(ValueError, match="backend='cuda' needs cuda tensors"):
        pack_bits(torch.ones(2, 9), backend="cuda")


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_overlapping_the_input_is_refused(backend):
    packed = torch.randint(0, 256, (40, 8), dtype=torch.uint8)
    wide = torch.zeros(40 * 64, dtype=torch.uint8)
    wide[:320] = packed.view(-1)
    with pytest.raises(ValueError, match="out shares memory with packed"):
        unpack_bits(wide[:320].view(40, 8), 64, dtype=torch.uint8, signed=False, out=wide.view(40, 64),
                    backend=backend)
    codes = torch.ones(8, 64, dtype=torch.uint8)
    with pytest.raises(ValueError, match="out shares memory with codes"):
        pack_bits(codes, out=codes.view(-1)[:64].view(8, 8), backend=backend)
    disjoint = torch.zeros(40 * 64 + 320, dtype=torch.uint8)
    disjoint[-320:] = packed.view(-1)
    got = unpack_bits(disjoint[-320:].view(40, 8), 64, dtype=torch.uint8, signed=False,
                      out=disjoint[: 40 * 64].view(40, 64), backend=backend)
    assert torch.equal(got, unpack_bits_reference(packed, 64, torch.uint8, False))


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64, torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_wide_unsigned_and_float8_codes(dtype, backend):
    """README: any real dtype. These have no aminmax / kernel dispatch in torch; they round-trip exactly."""
    bits = torch.rand(9, 70) < 0.5
    codes = bits.to(dtype)
    packed = pack_bits(codes, backend=backend)
    assert torch.equal(packed, pack_bits_reference(bits))
    restored = unpack_bits(packed, 70, dtype=dtype, signed=False, backend=backend)
    assert restored.dtype == dtype and torch.equal(restored.to(torch.float64), bits.to(torch.float64))
    if dtype.is_floating_point:
        signed = unpack_bits(pack_bits(torch.where(bits, 1.0, -1.0).to(dtype)), 70, dtype=dtype, backend=backend)
        assert torch.equal(signed.to(torch.float64), torch.where(bits, 1.0, -1.0).double())
    else:
        with pytest.raises(ValueError, match="signed=True gives -1 values"):
            unpack_bits(packed, 70, dtype=dtype, backend=backend)
        big = codes.clone()
        big[3, 5] = 2**15 + 1  # not a bit: refused, not wrapped into one
        with pytest.raises(ValueError, match="codes must hold binary values"):
            pack_bits(big, backend=backend)


def test_signed_must_be_a_bool():
    packed = torch.zeros(2, 1, dtype=torch.uint8)
    for bad in ("False", 0, None):
        with pytest.raises(TypeError, match="signed must be True or False"):
            unpack_bits(packed, 5, signed=bad)
