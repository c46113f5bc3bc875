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

}  // namespace hashkern
