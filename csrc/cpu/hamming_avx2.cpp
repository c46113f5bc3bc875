// AVX2 Hamming kernels. Narrow codes (8, 16, 32 and 64 bits) are many rows to a 32-byte
// vector: xor with the broadcast query, a nibble-table popcount of every byte (vpshufb), then
// byte counts summed per row (vpmaddubsw / vpmaddwd / vpsadbw): 32, 16, 8 or 4 rows per
// vector. Wider codes use the shared word loops (scalar popcount of 64-bit words). The last
// rows of a block that do not fill a vector go through the scalar loop: nothing is read past
// the database. Only this file's functions carry the AVX2 target.
#include "hamming_kernels.h"
#include "hamming_rows.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HK_HAVE_AVX2 1
#include <immintrin.h>
#endif

namespace hashkern {

#ifdef HK_HAVE_AVX2

#define HK_AVX2 __attribute__((target("avx2,bmi,bmi2,popcnt")))

namespace {

HK_AVX2 HK_INLINE __m256i popcount_bytes(__m256i v) {
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                         2, 3, 2, 3, 3, 4);
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i lo = _mm256_and_si256(v, nibble);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
  return _mm256_add_epi8(_mm256_shuffle_epi8(table, lo), _mm256_shuffle_epi8(table, hi));
}

HK_AVX2 HK_INLINE __m256i load(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

HK_AVX2 HK_INLINE void store(int32_t* p, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }

// 8-bit codes: 32 rows per vector, byte counts widened to int32.
HK_AVX2 int64_t rows_1(const uint8_t* q, const uint8_t* db, int64_t n, int32_t* out) {
  const __m256i query = _mm256_set1_epi8(static_cast<char>(q[0]));
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    const __m256i c = popcount_bytes(_mm256_xor_si256(load(db + j), query));
    const __m128i lo = _mm256_castsi256_si128(c), hi = _mm256_extracti128_si256(c, 1);
    store(out + j, _mm256_cvtepu8_epi32(lo));
    store(out + j + 8, _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
    store(out + j + 16, _mm256_cvtepu8_epi32(hi));
    store(out + j + 24, _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
  }
  return j;
}

// 16-bit codes: 16 rows per vector, adjacent byte counts added as int16, widened to int32.
HK_AVX2 int64_t rows_2(const uint8_t* q, const uint8_t* db, int64_t n, int32_t* out) {
  uint16_t q16;
  __builtin_memcpy(&q16, q, 2);
  const __m256i query = _mm256_set1_epi16(static_cast<short>(q16)), ones = _mm256_set1_epi8(1);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m256i c = _mm256_maddubs_epi16(popcount_bytes(_mm256_xor_si256(load(db + 2 * j), query)), ones);
    store(out + j, _mm256_cvtepu16_epi32(_mm256_castsi256_si128(c)));
    store(out + j + 8, _mm256_cvtepu16_epi32(_mm256_extracti128_si256(c, 1)));
  }
  return j;
}

// 32-bit codes: 8 rows per vector, four byte counts summed to one int32 each.
HK_AVX2 int64_t rows_4(const uint8_t* q, const uint8_t* db, int64_t n, int32_t* out) {
  uint32_t q32;
  __builtin_memcpy(&q32, q, 4);
  const __m256i query = _mm256_set1_epi32(static_cast<int>(q32));
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256i c = popcount_bytes(_mm256_xor_si256(load(db + 4 * j), query));
    store(out + j, _mm256_madd_epi16(_mm256_maddubs_epi16(c, ones8), ones16));
  }
  return j;
}

// 64-bit codes: 4 rows per vector summed by vpsadbw; two vectors give 8 int32 in row order.
HK_AVX2 int64_t rows_8(const uint8_t* q, const uint8_t* db, int64_t n, int32_t* out) {
  uint64_t q64;
  __builtin_memcpy(&q64, q, 8);
  const __m256i query = _mm256_set1_epi64x(static_cast<long long>(q64)), zero = _mm256_setzero_si256();
  const __m256i order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256i a = _mm256_sad_epu8(popcount_bytes(_mm256_xor_si256(load(db + 8 * j), query)), zero);
    const __m256i b = _mm256_sad_epu8(popcount_bytes(_mm256_xor_si256(load(db + 8 * j + 32), query)), zero);
    // a holds rows 0-3 and b rows 4-7 in the low dword of each qword: interleave, then reorder.
    store(out + j, _mm256_permutevar8x32_epi32(_mm256_or_si256(a, _mm256_slli_epi64(b, 32)), order));
  }
  return j;
}

HK_AVX2 void distances_avx2(const uint8_t* q, const uint8_t* db, int64_t width, int64_t n, int32_t* out) {
  int64_t done = 0;
  switch (width) {
    case 1: done = rows_1(q, db, n, out); break;
    case 2: done = rows_2(q, db, n, out); break;
    case 4: done = rows_4(q, db, n, out); break;
    case 8: done = rows_8(q, db, n, out); break;
    default: break;
  }
  rows_any_width(q, db + done * width, width, n - done, out + done);
}

// Bit i set where d[i] < above, for 8 distances.
HK_AVX2 HK_INLINE uint32_t below_mask(const int32_t* d, __m256i above) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(d));
  return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(above, v))));
}

// 32 distances per step compared at once; the first hit is found from the compare masks.
HK_AVX2 int64_t next_within_avx2(const int32_t* d, int64_t from, int64_t n, int32_t limit) {
  const __m256i above = _mm256_set1_epi32(limit + 1);  // d <= limit  <=>  limit + 1 > d
  int64_t j = from;
  for (; j + 32 <= n; j += 32) {
    const uint32_t mask = below_mask(d + j, above) | (below_mask(d + j + 8, above) << 8) |
                          (below_mask(d + j + 16, above) << 16) | (below_mask(d + j + 24, above) << 24);
    if (mask != 0) return j + __builtin_ctz(mask);
  }
  for (; j + 8 <= n; j += 8) {
    const uint32_t mask = below_mask(d + j, above);
    if (mask != 0) return j + __builtin_ctz(mask);
  }
  return next_within_scalar(d, j, n, limit);
}

}  // namespace

const HammingKernels* avx2_kernels() {
  static const HammingKernels kAvx2{"avx2", &distances_avx2, &next_within_avx2};
  static const bool supported = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
  }();
  return supported ? &kAvx2 : nullptr;
}
#else
const HammingKernels* avx2_kernels() { return nullptr; }
#endif

}  // namespace hashkern
