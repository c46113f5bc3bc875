// Host side of the packed-row readers (rows.cuh): which one a matrix needs, and the queries' words.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/constant_pad_nd.h>

#include <cstdint>

#include "rows.cuh"

namespace hashkern {

// Host side: which reader a contiguous packed matrix needs.
inline bool whole_aligned_words(const at::Tensor& packed) {
  return packed.size(1) % 8 == 0 && reinterpret_cast<uintptr_t>(packed.const_data_ptr()) % 8 == 0;
}

inline WordRows word_rows(const at::Tensor& packed) {
  return {reinterpret_cast<const uint64_t*>(packed.const_data_ptr<uint8_t>()), packed.size(1) / 8};
}

inline ByteRows byte_rows(const at::Tensor& packed) {
  return make_byte_rows(packed.const_data_ptr<uint8_t>(), packed.size(0), packed.size(1));
}

// Calls fn(rows) with the fastest reader of the matrix.
template <typename Fn>
void with_rows(const at::Tensor& packed, Fn&& fn) {
  if (whole_aligned_words(packed)) return fn(word_rows(packed));
  return fn(byte_rows(packed));
}

// Small matrices (the queries), read by every warp for every row: zero-padded to whole aligned
// words once per call, so their loads stay single aligned words.
inline at::Tensor as_words(const at::Tensor& packed) {
  const int64_t pad = (8 - packed.size(1) % 8) % 8;
  if (pad > 0) return at::constant_pad_nd(packed, {0, pad}, 0);
  if (reinterpret_cast<uintptr_t>(packed.const_data_ptr()) % 8 != 0) return packed.clone();
  return packed;
}

}  // namespace hashkern
