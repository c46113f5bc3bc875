// Argument checks shared by the kernels: the Python wrappers validate first, these keep a
// direct torch.ops.hashkern call from reading out of bounds.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace hashkern {

inline void check_out(const at::Tensor& out, at::IntArrayRef shape, at::ScalarType dtype,
                      const at::Tensor& like) {
  TORCH_CHECK_VALUE(out.sizes() == shape, "out must have shape ", shape, ", got ", out.sizes());
  TORCH_CHECK_TYPE(out.scalar_type() == dtype, "out must have dtype ", dtype, ", got ",
                   out.scalar_type());
  TORCH_CHECK_VALUE(out.device() == like.device(), "out must be on ", like.device(), ", got ",
                    out.device());
  TORCH_CHECK_VALUE(out.is_contiguous(), "out must be contiguous");
}

inline void check_packed(const char* name, const at::Tensor& t) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kByte, name, " must be uint8 packed bits, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.is_contiguous(), name, " must be contiguous");
}

inline int64_t packed_width(int64_t nbits) { return (nbits + 7) / 8; }

// pack_bits: codes [..., K] -> out [..., ceil(K/8)] uint8. Returns K.
inline int64_t check_pack_args(const at::Tensor& codes, const at::Tensor& out) {
  TORCH_CHECK_VALUE(codes.dim() >= 1 && codes.size(-1) >= 1, "codes must have a last dim K >= 1");
  TORCH_CHECK_VALUE(codes.is_contiguous(), "codes must be contiguous");
  auto shape = codes.sizes().vec();
  shape.back() = packed_width(codes.size(-1));
  check_out(out, shape, at::kByte, codes);
  return codes.size(-1);
}

// unpack_bits: packed [..., ceil(nbits/8)] uint8 -> out [..., nbits] of out's dtype.
inline void check_unpack_args(const at::Tensor& packed, int64_t nbits, bool is_signed, const at::Tensor& out) {
  check_packed("packed", packed);
  TORCH_CHECK_VALUE(nbits >= 1, "nbits must be >= 1, got ", nbits);
  TORCH_CHECK_VALUE(packed.dim() >= 1 && packed.size(-1) == packed_width(nbits), "packed must have ",
                    packed_width(nbits), " bytes per row for nbits=", nbits);
  auto shape = packed.sizes().vec();
  shape.back() = nbits;
  check_out(out, shape, out.scalar_type(), packed);
  TORCH_CHECK_VALUE(!(is_signed && (out.scalar_type() == at::kBool || out.scalar_type() == at::kByte)),
                    "signed=True needs a signed out dtype, got ", out.scalar_type());
}

// hamming_distance: a [na, W], b [nb, W] uint8 on one device -> out [na, nb] int32.
inline void check_hamming_args(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out) {
  check_packed("a", a);
  check_packed("b", b);
  TORCH_CHECK_VALUE(a.dim() == 2 && b.dim() == 2, "a and b must be 2-D packed codes");
  TORCH_CHECK_VALUE(a.size(1) == b.size(1), "a and b must have the same bytes per row, got ", a.size(1),
                    " and ", b.size(1));
  TORCH_CHECK_VALUE(a.device() == b.device(), "a and b must be on the same device");
  check_out(out, {a.size(0), b.size(0)}, at::kInt, a);
}

}  // namespace hashkern
