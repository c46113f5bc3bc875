// All-pairs Hamming distance between packed codes on the CPU.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../checks.h"
#include "hamming_kernels.h"

namespace hashkern {
namespace {

// A task is kTileA rows of a against kTileB rows of b: the b tile stays in L1/L2 while the rows
// of a pass it, and tasks split both sides, so a few queries still fill every thread.
constexpr int64_t kTileA = 16;
constexpr int64_t kTileB = 1024;

void hamming_distance_cpu(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  check_hamming_args(a, b, out);
  const int64_t na = a.size(0), nb = b.size(0), width = a.size(1);
  if (na == 0 || nb == 0) return;
  const uint8_t* pa = a.const_data_ptr<uint8_t>();
  const uint8_t* pb = b.const_data_ptr<uint8_t>();
  int32_t* po = out.data_ptr<int32_t>();
  const HammingKernels kernels = kernel_choice(width).kernels;
  const int64_t tiles_b = (nb + kTileB - 1) / kTileB, tiles = (na + kTileA - 1) / kTileA * tiles_b;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t i0 = task / tiles_b * kTileA, j0 = task % tiles_b * kTileB;
      const int64_t i1 = std::min(na, i0 + kTileA), j1 = std::min(nb, j0 + kTileB);
      for (int64_t i = i0; i < i1; ++i)
        kernels.distances(pa + i * width, pb + j0 * width, width, j1 - j0, po + i * nb + j0);
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(hashkern, CPU, m) { m.impl("hamming_distance", &hamming_distance_cpu); }

}  // namespace hashkern
