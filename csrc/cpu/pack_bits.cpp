// Packing ±1 / {0,1} / bool codes into bytes and back, on the CPU.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../checks.h"

namespace hashkern {
namespace {

void pack_bits_cpu(const at::Tensor& codes, at::Tensor& out) {
  const int64_t nbits = check_pack_args(codes, out);
  const int64_t width = packed_width(nbits);
  const int64_t rows = codes.numel() / nbits;
  uint8_t* dst = out.data_ptr<uint8_t>();
  AT_DISPATCH_ALL_TYPES_AND3(at::kBool, at::kHalf, at::kBFloat16, codes.scalar_type(), "pack_bits", [&] {
    const scalar_t* src = codes.const_data_ptr<scalar_t>();
    at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* row = src + r * nbits;
        uint8_t* packed = dst + r * width;
        for (int64_t byte = 0; byte < width; ++byte) {
          const int64_t first = byte * 8;
          const int64_t count = std::min<int64_t>(8, nbits - first);
          uint8_t value = 0;
          for (int64_t bit = 0; bit < count; ++bit) {
            value |= static_cast<uint8_t>(static_cast<float>(row[first + bit]) > 0.f) << bit;
          }
          packed[byte] = value;
        }
      }
    });
  });
}

void unpack_bits_cpu(const at::Tensor& packed, int64_t nbits, bool is_signed, at::Tensor& out) {
  check_unpack_args(packed, nbits, is_signed, out);
  const int64_t width = packed.size(-1);
  const int64_t rows = width == 0 ? 0 : packed.numel() / width;
  const uint8_t* src = packed.const_data_ptr<uint8_t>();
  AT_DISPATCH_ALL_TYPES_AND3(at::kBool, at::kHalf, at::kBFloat16, out.scalar_type(), "unpack_bits", [&] {
    scalar_t* dst = out.data_ptr<scalar_t>();
    const scalar_t one = static_cast<scalar_t>(1);
    scalar_t zero = static_cast<scalar_t>(0);
    if (is_signed) zero = static_cast<scalar_t>(-1);
    at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        for (int64_t j = 0; j < nbits; ++j) {
          dst[r * nbits + j] = (src[r * width + j / 8] >> (j % 8)) & 1 ? one : zero;
        }
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(hashkern, CPU, m) {
  m.impl("pack_bits", &pack_bits_cpu);
  m.impl("unpack_bits", &unpack_bits_cpu);
}

}  // namespace hashkern
