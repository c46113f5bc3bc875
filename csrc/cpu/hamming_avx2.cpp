// AVX2 Hamming kernels. Codes of 8 to 64 bits are several rows to a 32-byte vector (24- and
// 48-bit rows first spread to 32 and 64 bits by a shuffle): xor with the broadcast query, a
// nibble-table popcount of every byte (vpshufb), then byte counts summed per row (vpmaddubsw /
// vpmaddwd / vpsadbw). 128 bits and multiples of 256 bits: vectors per row, 8 rows reduced
// together. Other widths use the shared word loops (scalar popcount of 64-bit words). The last
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

#define HK_AVX2 __attribute__((target("avx2,popcnt")))

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

// Two 16-byte loads, at p and p + 12, into the two lanes of a vector.
HK_AVX2 HK_INLINE __m256i load_12_12(const uint8_t* p) {
  return _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(p + 12), reinterpret_cast<const __m128i*>(p));
}

// 24-bit codes: 8 rows (24 bytes, 12 per lane) spread to one row per dword, then as 32-bit
// codes. The upper load reads 16 bytes from row j + 4, so the loop stops 10 rows short.
HK_AVX2 int64_t rows_3(const uint8_t* q, const uint8_t* db, int64_t n, int32_t* out) {
  const uint32_t q32 = q[0] | (q[1] << 8) | (q[2] << 16);
  const __m256i query = _mm256_set1_epi32(static_cast<int>(q32));
  const __m256i spread = _mm256_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1, 0, 1, 2, -1, 3, 4, 5,
                                          -1, 6, 7, 8, -1, 9, 10, 11, -1);
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  int64_t j = 0;
  for (; j + 10 <= n; j += 8) {
    const __m256i rows = _mm256_shuffle_epi8(load_12_12(db + 3 * j), spread);
    const __m256i c = popcount_bytes(_mm256_xor_si256(rows, query));
    store(out + j, _mm256_madd_epi16(_mm256_maddubs_epi16(c, ones8), ones16));
  }
  return j;
}

// 48-bit codes: 4 rows (24 bytes, 12 per lane) spread to one row per qword, then as 64-bit
// codes. The last load of a step reads 16 bytes from row j + 6, so the loop stops 9 rows short.
HK_AVX2 int64_t rows_6(const uint8_t* q, const uint8_t* db, int64_t n, int32_t* out) {
  const __m256i query = _mm256_set1_epi64x(static_cast<long long>(load_bytes<6>(q)));
  const __m256i zero = _mm256_setzero_si256();
  const __m256i spread = _mm256_setr_epi8(0, 1, 2, 3, 4, 5, -1, -1, 6, 7, 8, 9, 10, 11, -1, -1, 0, 1, 2, 3, 4, 5, -1,
                                          -1, 6, 7, 8, 9, 10, 11, -1, -1);
  const __m256i order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  int64_t j = 0;
  for (; j + 9 <= n; j += 8) {
    __m256i s[2];
    for (int i = 0; i < 2; ++i) {
      const __m256i rows = _mm256_shuffle_epi8(load_12_12(db + 6 * (j + 4 * i)), spread);
      s[i] = _mm256_sad_epu8(popcount_bytes(_mm256_xor_si256(rows, query)), zero);
    }
    store(out + j, _mm256_permutevar8x32_epi32(_mm256_or_si256(s[0], _mm256_slli_epi64(s[1], 32)), order));
  }
  return j;
}

// Wide codes: each step also takes kScalarRows rows through scalar popcounts, which run on the
// integer units beside the vector ones (~25% faster than vectors alone on AMD Zen 3).
constexpr int kScalarRows = 4;

// 128-bit codes: 2 rows per vector; the per-qword sums of 8 rows are interleaved, added in
// pairs and put back in row order.
HK_AVX2 int64_t rows_16(const uint8_t* q, const uint8_t* db, int64_t n, int32_t* out) {
  const __m256i query = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
  const __m256i zero = _mm256_setzero_si256(), order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int64_t j = 0;
  for (; j + 8 + kScalarRows <= n; j += 8 + kScalarRows) {
    __m256i s[4];  // s[i]: the two halves of rows 2i and 2i + 1
    for (int i = 0; i < 4; ++i)
      s[i] = _mm256_sad_epu8(popcount_bytes(_mm256_xor_si256(load(db + 16 * (j + 2 * i)), query)), zero);
    for (int i = 8; i < 8 + kScalarRows; ++i) out[j + i] = row_distance<16>(q, db + (j + i) * 16, 16);
    const __m256i t01 = _mm256_or_si256(s[0], _mm256_slli_epi64(s[1], 32));  // r0 r2 r0 r2 | r1 r3 r1 r3
    const __m256i t23 = _mm256_or_si256(s[2], _mm256_slli_epi64(s[3], 32));  // r4 r6 r4 r6 | r5 r7 r5 r7
    const __m256i sum = _mm256_add_epi32(_mm256_unpacklo_epi64(t01, t23), _mm256_unpackhi_epi64(t01, t23));
    store(out + j, _mm256_permutevar8x32_epi32(sum, order));  // r0 r2 r4 r6 | r1 r3 r5 r7 -> r0..r7
  }
  return j;
}

// Codes of 32m bytes (256, 512, ... bits), m <= 31: byte counts of a row's m vectors added as
// bytes (at most 8m <= 248 each), summed by vpsadbw into 4 qwords; 8 rows reduced together.
HK_AVX2 HK_INLINE __m256i row_partials(const uint8_t* q, const uint8_t* row, int64_t chunks) {
  __m256i bytes = popcount_bytes(_mm256_xor_si256(load(row), load(q)));
  for (int64_t c = 1; c < chunks; ++c)
    bytes = _mm256_add_epi8(bytes, popcount_bytes(_mm256_xor_si256(load(row + 32 * c), load(q + 32 * c))));
  return _mm256_sad_epu8(bytes, _mm256_setzero_si256());
}

// Rows a, b, c, d as 4 qword partial sums each -> [a01 b01 c01 d01 | a23 b23 c23 d23].
HK_AVX2 HK_INLINE __m256i fold4(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i ab = _mm256_or_si256(a, _mm256_slli_epi64(b, 32)), cd = _mm256_or_si256(c, _mm256_slli_epi64(d, 32));
  return _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
}

template <int kChunks>
HK_AVX2 HK_INLINE int64_t rows_32m(const uint8_t* q, const uint8_t* db, int64_t width, int64_t n, int32_t* out) {
  const int64_t chunks = kChunks > 0 ? kChunks : width / 32;
  int64_t j = 0;
  constexpr int kScalar = kChunks > 0 ? kScalarRows : 0;  // the generic scalar loop is too slow to help
  for (; j + 8 + kScalar <= n; j += 8 + kScalar) {
    __m256i s[8];
    for (int i = 0; i < 8; ++i) s[i] = row_partials(q, db + (j + i) * width, chunks);
    for (int i = 8; i < 8 + kScalar; ++i) out[j + i] = row_distance<32 * kChunks>(q, db + (j + i) * width, width);
    const __m256i lo = fold4(s[0], s[1], s[2], s[3]), hi = fold4(s[4], s[5], s[6], s[7]);
    store(out + j, _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20), _mm256_permute2x128_si256(lo, hi, 0x31)));
  }
  return j;
}

HK_AVX2 void distances_avx2(const uint8_t* q, const uint8_t* db, int64_t width, int64_t n, int32_t* out) {
  int64_t done = 0;
  switch (width) {
    case 1: done = rows_1(q, db, n, out); break;
    case 2: done = rows_2(q, db, n, out); break;
    case 3: done = rows_3(q, db, n, out); break;
    case 4: done = rows_4(q, db, n, out); break;
    case 6: done = rows_6(q, db, n, out); break;
    case 8: done = rows_8(q, db, n, out); break;
    case 16: done = rows_16(q, db, n, out); break;
    case 32: done = rows_32m<1>(q, db, width, n, out); break;
    case 64: done = rows_32m<2>(q, db, width, n, out); break;
    default:
      if (width % 32 == 0 && width <= 32 * 31) done = rows_32m<0>(q, db, width, n, out);
      break;
  }
  rows_any_width(q, db + done * width, width, n - done, out + done);
}

// Bit i set where d[i] < above, for 8 distances.
HK_AVX2 HK_INLINE uint32_t below_mask(const int32_t* d, __m256i above) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(d));
  return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(above, v))));
}

// 32 distances per step compared at once; the indices of the hits come from the mask bits.
HK_AVX2 int64_t collect_within_avx2(const int32_t* d, int64_t n, int32_t limit, int32_t* hits) {
  const __m256i above = _mm256_set1_epi32(limit + 1);  // d <= limit  <=>  limit + 1 > d
  int64_t count = 0, j = 0;
  for (; j + 32 <= n; j += 32) {
    uint32_t mask = below_mask(d + j, above) | (below_mask(d + j + 8, above) << 8) |
                    (below_mask(d + j + 16, above) << 16) | (below_mask(d + j + 24, above) << 24);
    for (; mask != 0; mask &= mask - 1) hits[count++] = static_cast<int32_t>(j + __builtin_ctz(mask));
  }
  for (; j < n; ++j) {
    hits[count] = static_cast<int32_t>(j);
    count += d[j] <= limit;
  }
  return count;
}

HK_AVX2 int64_t count_within_avx2(const int32_t* d, int64_t n, int32_t limit) {
  const __m256i above = _mm256_set1_epi32(limit + 1);
  __m256i counts = _mm256_setzero_si256();  // per lane, minus the hits (a true compare is -1)
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(d + j));
    counts = _mm256_add_epi32(counts, _mm256_cmpgt_epi32(above, v));
  }
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), counts);
  int64_t count = 0;
  for (int32_t lane : lanes) count -= lane;
  return count + count_within_scalar(d + j, n - j, limit);
}

}  // namespace

const HammingKernels* avx2_kernels() {
  static const HammingKernels kAvx2{"avx2", 256, &distances_avx2, &collect_within_avx2, &count_within_avx2};
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
