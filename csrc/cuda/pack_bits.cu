// Packing ±1 / {0,1} / bool codes into bytes and back, on CUDA: one thread per output byte
// (pack) or per output element (unpack).
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../checks.h"

namespace hashkern {
namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) { return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 20)); }

template <typename scalar_t>
__global__ void pack_bits_kernel(const scalar_t* __restrict__ codes,  // [rows, nbits]
                                 uint8_t* __restrict__ out,           // [rows, width]
                                 int64_t rows, int64_t nbits, int64_t width) {
  const int64_t total = rows * width;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t row = idx / width, byte = idx % width;
    const scalar_t* src = codes + row * nbits + byte * 8;
    const int64_t count = min((int64_t)8, nbits - byte * 8);
    uint8_t value = 0;
    for (int64_t bit = 0; bit < count; ++bit) {
      value |= static_cast<uint8_t>(static_cast<float>(src[bit]) > 0.f) << bit;
    }
    out[idx] = value;
  }
}

template <typename scalar_t>
__global__ void unpack_bits_kernel(const uint8_t* __restrict__ packed,  // [rows, width]
                                   scalar_t* __restrict__ out,          // [rows, nbits]
                                   int64_t rows, int64_t nbits, int64_t width, scalar_t one,
                                   scalar_t zero) {
  const int64_t total = rows * nbits;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t row = idx / nbits, j = idx % nbits;
    out[idx] = (packed[row * width + j / 8] >> (j % 8)) & 1 ? one : zero;
  }
}

void pack_bits_cuda(const at::Tensor& codes, at::Tensor& out) {
  const int64_t nbits = check_pack_args(codes, out), width = packed_width(nbits);
  const int64_t rows = codes.numel() / nbits;
  if (rows == 0) return;
  c10::cuda::CUDAGuard guard(codes.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_ALL_TYPES_AND3(at::kBool, at::kHalf, at::kBFloat16, codes.scalar_type(), "pack_bits", [&] {
    pack_bits_kernel<scalar_t><<<blocks_for(rows * width), kThreads, 0, stream>>>(
        codes.const_data_ptr<scalar_t>(), out.data_ptr<uint8_t>(), rows, nbits, width);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void unpack_bits_cuda(const at::Tensor& packed, int64_t nbits, bool is_signed, at::Tensor& out) {
  check_unpack_args(packed, nbits, is_signed, out);
  const int64_t width = packed.size(-1);
  const int64_t rows = packed.numel() / width;
  if (rows == 0) return;
  c10::cuda::CUDAGuard guard(packed.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_ALL_TYPES_AND3(at::kBool, at::kHalf, at::kBFloat16, out.scalar_type(), "unpack_bits", [&] {
    unpack_bits_kernel<scalar_t><<<blocks_for(rows * nbits), kThreads, 0, stream>>>(
        packed.const_data_ptr<uint8_t>(), out.data_ptr<scalar_t>(), rows, nbits, width,
        static_cast<scalar_t>(1), static_cast<scalar_t>(is_signed ? -1 : 0));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(hashkern, CUDA, m) {
  m.impl("pack_bits", &pack_bits_cuda);
  m.impl("unpack_bits", &unpack_bits_cuda);
}

}  // namespace hashkern
