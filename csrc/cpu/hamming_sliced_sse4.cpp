// Bit-sliced Hamming search (hamming_sliced.h) with 128-bit SSE vectors: 128 rows per vector of
// plane bits. The same body as the AVX2 search, on half the rows per instruction: where a CPU
// splits each 256-bit operation into two 128-bit halves (AMD Zen 1) it does the same work in
// the same number of micro-ops with half the register pressure (its 11 count planes and
// temporaries fit the 16 registers), so calibration may measure it faster there. Only this
// file's functions carry the SSE4.1 target, and they run only where the CPU has it.
#include "hamming_sliced.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HK_HAVE_SLICED_SSE4 1
#define HK_SLICED_TARGET __attribute__((target("sse4.1,popcnt")))
#include <immintrin.h>

#include "popcount.h"
#endif

namespace hashkern {

#ifdef HK_HAVE_SLICED_SSE4

namespace {

struct SsePlanes {
  using V = __m128i;
  using Mask = uint16_t;
  static constexpr int kWords = 2, kLanes = 1;
  HK_SLICED_TARGET static HK_INLINE V zero() { return _mm_setzero_si128(); }
  HK_SLICED_TARGET static HK_INLINE V ones() { return _mm_set1_epi32(-1); }
  HK_SLICED_TARGET static HK_INLINE V load(const uint64_t* p) { return _mm_loadu_si128(reinterpret_cast<const V*>(p)); }
  HK_SLICED_TARGET static HK_INLINE void store(uint64_t* p, V v) { _mm_storeu_si128(reinterpret_cast<V*>(p), v); }
  HK_SLICED_TARGET static HK_INLINE V bit_xor(V a, V b) { return _mm_xor_si128(a, b); }
  HK_SLICED_TARGET static HK_INLINE V bit_and(V a, V b) { return _mm_and_si128(a, b); }
  HK_SLICED_TARGET static HK_INLINE V bit_or(V a, V b) { return _mm_or_si128(a, b); }
  HK_SLICED_TARGET static HK_INLINE V and_not(V a, V b) { return _mm_andnot_si128(a, b); }
  HK_SLICED_TARGET static HK_INLINE V from_lanes(const __m128i* lanes) { return lanes[0]; }
  HK_SLICED_TARGET static HK_INLINE Mask byte_signs(V v) { return static_cast<Mask>(_mm_movemask_epi8(v)); }
  HK_SLICED_TARGET static HK_INLINE V twice_bytes(V v) { return _mm_add_epi8(v, v); }
};

}  // namespace
}  // namespace hashkern

#include "hamming_sliced_body.h"

namespace hashkern {

const SlicedKernels* sliced_sse4_kernels() {
  static const SlicedKernels kSse4{"sse4", 64 * SsePlanes::kWords, 1.5, &sliced::slice_block<SsePlanes>,
                                   &sliced::within<SsePlanes>};
  static const bool supported = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.1") && __builtin_cpu_supports("popcnt");
  }();
  return supported ? &kSse4 : nullptr;
}

#else  // not x86-64: the search never takes this path

const SlicedKernels* sliced_sse4_kernels() { return nullptr; }

#endif

}  // namespace hashkern
