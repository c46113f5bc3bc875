// Packed code rows as whole, 8-byte-aligned 64-bit words, as the CUDA kernels read them.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/constant_pad_nd.h>

namespace hashkern {

// Zero-pads a partial last word (distances are unchanged) and copies a misaligned view.
inline at::Tensor as_words(const at::Tensor& packed) {
  const int64_t pad = (8 - packed.size(1) % 8) % 8;
  if (pad > 0) return at::constant_pad_nd(packed, {0, pad}, 0);
  if (reinterpret_cast<uintptr_t>(packed.const_data_ptr()) % 8 != 0) return packed.clone();
  return packed;
}

}  // namespace hashkern
