// All-pairs Hamming distance between packed codes on the CPU.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../checks.h"
#include "popcount.h"

namespace hashkern {
namespace {

// Rows of b per tile: a tile of b stays in L1/L2 while a block of a's rows streams past it.
constexpr int64_t kTileB = 512;

template <int kWords>
void hamming_tiles(const uint8_t* a, const uint8_t* b, int32_t* out, int64_t na, int64_t nb,
                   int64_t width) {
  const int64_t words = width / 8, tail = width % 8;
  at::parallel_for(0, na, 16, [&](int64_t begin, int64_t end) {
    for (int64_t j0 = 0; j0 < nb; j0 += kTileB) {
      const int64_t j1 = std::min(nb, j0 + kTileB);
      for (int64_t i = begin; i < end; ++i) {
        const uint8_t* row = a + i * width;
        int32_t* dst = out + i * nb;
        for (int64_t j = j0; j < j1; ++j) {
          dst[j] = hamming_row<kWords>(row, b + j * width, words, tail);
        }
      }
    }
  });
}

void hamming_distance_cpu(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  check_hamming_args(a, b, out);
  const int64_t na = a.size(0), nb = b.size(0), width = a.size(1);
  if (na == 0 || nb == 0) return;
  const uint8_t* pa = a.const_data_ptr<uint8_t>();
  const uint8_t* pb = b.const_data_ptr<uint8_t>();
  int32_t* po = out.data_ptr<int32_t>();
  switch (width) {  // 64, 128 and 256-bit codes unroll fully
    case 8: return hamming_tiles<1>(pa, pb, po, na, nb, width);
    case 16: return hamming_tiles<2>(pa, pb, po, na, nb, width);
    case 32: return hamming_tiles<4>(pa, pb, po, na, nb, width);
    default: return hamming_tiles<0>(pa, pb, po, na, nb, width);
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(hashkern, CPU, m) { m.impl("hamming_distance", &hamming_distance_cpu); }

}  // namespace hashkern
