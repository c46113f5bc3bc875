// All-pairs Hamming distance between packed codes on CUDA.
// Each block computes a 32 x 32 tile of the output: 32 rows of a and 32 rows of b are staged
// in shared memory, 8 words at a time; a thread owns one column and 4 rows of the tile.
// Both matrices are read in place at any code width and alignment (rows.cuh).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "words.cuh"

#include "../checks.h"

namespace hashkern {
namespace {

constexpr int kTile = 32;                      // output tile is kTile x kTile
constexpr int kRowsPerThread = 4;              // blockDim = (kTile, kTile / kRowsPerThread)
constexpr int kChunk = 8;                      // 64-bit words staged per step
constexpr int kThreadRows = kTile / kRowsPerThread;

template <typename RowsA, typename RowsB>
__global__ void hamming_distance_kernel(const RowsA a,                  // [na, bytes]
                                        const RowsB b,                  // [nb, bytes]
                                        int32_t* __restrict__ out,       // [na, nb]
                                        int64_t na, int64_t nb, int64_t words) {
  __shared__ uint64_t tile_a[kTile][kChunk + 1];  // +1 word of padding against bank conflicts
  __shared__ uint64_t tile_b[kTile][kChunk + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int tid = ty * kTile + tx;
  const int load_row = tid / kChunk, load_col = tid % kChunk;  // 256 threads load 32 x 8 words
  const int64_t tiles_b = (nb + kTile - 1) / kTile;
  const int64_t tiles = ((na + kTile - 1) / kTile) * tiles_b;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t i0 = (t / tiles_b) * kTile, j0 = (t % tiles_b) * kTile;
    int32_t acc[kRowsPerThread] = {};
    for (int64_t w0 = 0; w0 < words; w0 += kChunk) {
      const int64_t w = w0 + load_col;
      const int64_t ia = i0 + load_row, jb = j0 + load_row;
      tile_a[load_row][load_col] = (ia < na && w < words) ? a.word(ia, w) : 0;
      tile_b[load_row][load_col] = (jb < nb && w < words) ? b.word(jb, w) : 0;
      __syncthreads();
#pragma unroll
      for (int c = 0; c < kChunk; ++c) {
        const uint64_t bw = tile_b[tx][c];
#pragma unroll
        for (int k = 0; k < kRowsPerThread; ++k) acc[k] += __popcll(tile_a[ty + kThreadRows * k][c] ^ bw);
      }
      __syncthreads();
    }
    const int64_t j = j0 + tx;
    if (j < nb) {
#pragma unroll
      for (int k = 0; k < kRowsPerThread; ++k) {
        const int64_t i = i0 + ty + kThreadRows * k;
        if (i < na) out[i * nb + j] = acc[k];
      }
    }
  }
}


void hamming_distance_cuda(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  check_hamming_args(a, b, out);
  const int64_t na = a.size(0), nb = b.size(0);
  if (na == 0 || nb == 0) return;
  c10::cuda::CUDAGuard guard(a.device());
  const int64_t words = (a.size(1) + 7) / 8;
  const int64_t tiles = ((na + kTile - 1) / kTile) * ((nb + kTile - 1) / kTile);
  const int blocks = static_cast<int>(std::min<int64_t>(tiles, 1 << 20));
  with_rows(a, [&](auto rows_a) {
    with_rows(b, [&](auto rows_b) {
      hamming_distance_kernel<<<blocks, dim3(kTile, kThreadRows), 0, c10::cuda::getCurrentCUDAStream()>>>(
          rows_a, rows_b, out.data_ptr<int32_t>(), na, nb, words);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(hashkern, CUDA, m) { m.impl("hamming_distance", &hamming_distance_cuda); }

}  // namespace hashkern
