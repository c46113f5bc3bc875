// AVX-512 VPOPCNTDQ Hamming kernels: the shared row loops compiled for AVX-512, where the
// compiler turns each fixed-width loop into vector popcounts (vpopcntq / vpopcntd) over 8 or 16
// rows at once; the scans are the AVX2 ones. Only this file's functions carry the target, so
// the build does not need AVX-512 and a CPU without it never runs them.
#include "hamming_kernels.h"
#include "hamming_rows.h"

namespace hashkern {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
namespace {

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx2,popcnt"))) void distances_avx512(
    const uint8_t* q, const uint8_t* db, int64_t width, int64_t n, int32_t* out) {
  rows_any_width(q, db, width, n, out);
}

bool cpu_has_avx512_popcount() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vpopcntdq");
}

}  // namespace

const HammingKernels* avx512_kernels() {
  static const HammingKernels* kernels = [] {
    const HammingKernels* avx2 = avx2_kernels();
    static HammingKernels k{"avx512", &distances_avx512, avx2 ? avx2->collect_within : nullptr,
                            avx2 ? avx2->count_within : nullptr};
    return cpu_has_avx512_popcount() && avx2 ? &k : nullptr;
  }();
  return kernels;
}
#else
const HammingKernels* avx512_kernels() { return nullptr; }
#endif

}  // namespace hashkern
