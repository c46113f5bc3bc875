// Bit-sliced Hamming search (hamming_sliced.h) with AVX2: 256 rows per vector of plane bits.
// Only this file's functions carry the AVX2 target, and they run only where the CPU has it.
#include "hamming_sliced.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HK_HAVE_SLICED_AVX2 1
#define HK_SLICED_TARGET __attribute__((target("avx2,popcnt,bmi")))
#include <immintrin.h>

#include "popcount.h"
#endif

namespace hashkern {

#ifdef HK_HAVE_SLICED_AVX2

namespace {

struct Avx2Planes {
  using V = __m256i;
  using Mask = uint32_t;
  static constexpr int kWords = 4, kLanes = 2;
  HK_SLICED_TARGET static HK_INLINE V zero() { return _mm256_setzero_si256(); }
  HK_SLICED_TARGET static HK_INLINE V ones() { return _mm256_set1_epi32(-1); }
  HK_SLICED_TARGET static HK_INLINE V load(const uint64_t* p) { return _mm256_loadu_si256(reinterpret_cast<const V*>(p)); }
  HK_SLICED_TARGET static HK_INLINE void store(uint64_t* p, V v) { _mm256_storeu_si256(reinterpret_cast<V*>(p), v); }
  HK_SLICED_TARGET static HK_INLINE V bit_xor(V a, V b) { return _mm256_xor_si256(a, b); }
  HK_SLICED_TARGET static HK_INLINE V bit_and(V a, V b) { return _mm256_and_si256(a, b); }
  HK_SLICED_TARGET static HK_INLINE V bit_or(V a, V b) { return _mm256_or_si256(a, b); }
  HK_SLICED_TARGET static HK_INLINE V and_not(V a, V b) { return _mm256_andnot_si256(a, b); }
  HK_SLICED_TARGET static HK_INLINE V from_lanes(const __m128i* lanes) { return _mm256_set_m128i(lanes[1], lanes[0]); }
  HK_SLICED_TARGET static HK_INLINE Mask byte_signs(V v) { return static_cast<Mask>(_mm256_movemask_epi8(v)); }
  HK_SLICED_TARGET static HK_INLINE V twice_bytes(V v) { return _mm256_add_epi8(v, v); }
};

}  // namespace
}  // namespace hashkern

#include "hamming_sliced_body.h"

namespace hashkern {

const SlicedKernels* sliced_avx2_kernels() {
  static const SlicedKernels kAvx2{"avx2", 64 * Avx2Planes::kWords, 1.5, &sliced::slice_block<Avx2Planes>,
                                   &sliced::within<Avx2Planes>};
  static const bool supported = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("bmi");
  }();
  return supported ? &kAvx2 : nullptr;
}

#else  // no AVX2 compiler support: the search never takes this path

const SlicedKernels* sliced_avx2_kernels() { return nullptr; }

#endif

}  // namespace hashkern
