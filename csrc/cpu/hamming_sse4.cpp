// SSE4.1 Hamming kernels: the AVX2 kernels' method on 128-bit vectors, for CPUs that split each
// 256-bit operation into two 128-bit halves (AMD Zen 1), where they do the same work without the
// split micro-ops and the cross-lane shuffles (vpermd, vperm2i128: several micro-ops there);
// calibration times them beside the others. Xor with the broadcast query, a nibble-table
// popcount of every byte (pshufb), then byte counts summed per row (pmaddubsw / pmaddwd /
// psadbw). Codes of 8 to 64 bits are several rows to a vector (24- and 48-bit rows first spread
// to 32 and 64 bits by a shuffle); codes of 16m bytes are vectors per row, 4 rows reduced
// together, beside 4 rows through scalar popcounts (POPCNT, on the integer units). Other
// widths, and the last rows of a block that do not fill a vector, use the shared word loops:
// nothing is read past the database. Only this file's functions carry the SSE4.1 target.
#include "hamming_kernels.h"
#include "hamming_rows.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HK_HAVE_SSE4 1
#include <immintrin.h>
#endif

namespace hashkern {

#ifdef HK_HAVE_SSE4

#define HK_SSE4 __attribute__((target("sse4.1,popcnt")))

namespace {

using X = __m128i;

HK_SSE4 HK_INLINE X popcount_bytes(X v) {
  const X table = _mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const X nibble = _mm_set1_epi8(0x0f);
  const X lo = _mm_and_si128(v, nibble);
  const X hi = _mm_and_si128(_mm_srli_epi16(v, 4), nibble);
  return _mm_add_epi8(_mm_shuffle_epi8(table, lo), _mm_shuffle_epi8(table, hi));
}

HK_SSE4 HK_INLINE X load(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const X*>(p)); }

HK_SSE4 HK_INLINE void store(int32_t* p, X v) { _mm_storeu_si128(reinterpret_cast<X*>(p), v); }

// 4 rows' per-row int32 counts from the byte counts of 4 rows of 32 bits.
HK_SSE4 HK_INLINE X sum_dwords(X byte_counts) {
  return _mm_madd_epi16(_mm_maddubs_epi16(byte_counts, _mm_set1_epi8(1)), _mm_set1_epi16(1));
}

// Two vectors of 2 qword sums each (rows 0, 1 and 2, 3) as 4 int32 in row order.
HK_SSE4 HK_INLINE X qwords_in_order(X a, X b) {
  return _mm_shuffle_epi32(_mm_or_si128(a, _mm_slli_epi64(b, 32)), _MM_SHUFFLE(3, 1, 2, 0));  // r0 r2 r1 r3
}

// 8-bit codes: 16 rows per vector, byte counts widened to int32.
HK_SSE4 int64_t rows_1(const uint8_t* q, const uint8_t* db, int64_t n, int32_t* out) {
  const X query = _mm_set1_epi8(static_cast<char>(q[0]));
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const X c = popcount_bytes(_mm_xor_si128(load(db + j), query));
    store(out + j, _mm_cvtepu8_epi32(c));
    store(out + j + 4, _mm_cvtepu8_epi32(_mm_srli_si128(c, 4)));
    store(out + j + 8, _mm_cvtepu8_epi32(_mm_srli_si128(c, 8)));
    store(out + j + 12, _mm_cvtepu8_epi32(_mm_srli_si128(c, 12)));
  }
  return j;
}

// 16-bit codes: 8 rows per vector, adjacent byte counts added as int16, widened to int32.
HK_SSE4 int64_t rows_2(const uint8_t* q, const uint8_t* db, int64_t n, int32_t* out) {
  const X query = _mm_set1_epi16(static_cast<short>(load_as<uint16_t>(q))), ones = _mm_set1_epi8(1);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const X c = _mm_maddubs_epi16(popcount_bytes(_mm_xor_si128(load(db + 2 * j), query)), ones);
    store(out + j, _mm_cvtepu16_epi32(c));
    store(out + j + 4, _mm_cvtepu16_epi32(_mm_srli_si128(c, 8)));
  }
  return j;
}

// 32-bit codes: 4 rows per vector.
HK_SSE4 int64_t rows_4(const uint8_t* q, const uint8_t* db, int64_t n, int32_t* out) {
  const X query = _mm_set1_epi32(static_cast<int>(load_as<uint32_t>(q)));
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) store(out + j, sum_dwords(popcount_bytes(_mm_xor_si128(load(db + 4 * j), query))));
  return j;
}

// 24-bit codes: 4 rows (12 bytes) spread to one row per dword, then as 32-bit codes. The load
// reads 16 bytes, into row j + 5, so the loop stops 6 rows short.
HK_SSE4 int64_t rows_3(const uint8_t* q, const uint8_t* db, int64_t n, int32_t* out) {
  const X query = _mm_set1_epi32(static_cast<int>(load_bytes<3>(q)));
  const X spread = _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1);
  int64_t j = 0;
  for (; j + 6 <= n; j += 4) {
    const X rows = _mm_shuffle_epi8(load(db + 3 * j), spread);
    store(out + j, sum_dwords(popcount_bytes(_mm_xor_si128(rows, query))));
  }
  return j;
}

// 64-bit codes: 2 rows per vector summed by psadbw; two vectors give 4 int32.
HK_SSE4 int64_t rows_8(const uint8_t* q, const uint8_t* db, int64_t n, int32_t* out) {
  const X query = _mm_set1_epi64x(static_cast<long long>(load_as<uint64_t>(q))), zero = _mm_setzero_si128();
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const X a = _mm_sad_epu8(popcount_bytes(_mm_xor_si128(load(db + 8 * j), query)), zero);
    const X b = _mm_sad_epu8(popcount_bytes(_mm_xor_si128(load(db + 8 * j + 16), query)), zero);
    store(out + j, qwords_in_order(a, b));
  }
  return j;
}

// 48-bit codes: 2 rows (12 bytes) spread to one row per qword, then as 64-bit codes. The second
// load of a step reads 16 bytes from row j + 2, into row j + 4, so the loop stops 5 rows short.
HK_SSE4 int64_t rows_6(const uint8_t* q, const uint8_t* db, int64_t n, int32_t* out) {
  const X query = _mm_set1_epi64x(static_cast<long long>(load_bytes<6>(q))), zero = _mm_setzero_si128();
  const X spread = _mm_setr_epi8(0, 1, 2, 3, 4, 5, -1, -1, 6, 7, 8, 9, 10, 11, -1, -1);
  int64_t j = 0;
  for (; j + 5 <= n; j += 4) {
    X s[2];
    for (int i = 0; i < 2; ++i) {
      const X rows = _mm_shuffle_epi8(load(db + 6 * (j + 2 * i)), spread);
      s[i] = _mm_sad_epu8(popcount_bytes(_mm_xor_si128(rows, query)), zero);
    }
    store(out + j, qwords_in_order(s[0], s[1]));
  }
  return j;
}

// Wide codes: each step also takes kScalarRows rows through scalar popcounts, which run on the
// integer units beside the vector ones.
constexpr int kScalarRows = 4;

// Codes of 16m bytes (128, 256, ... bits), m <= 31: byte counts of a row's m vectors added as
// bytes (at most 8m <= 248 each), summed by psadbw into 2 qwords; 4 rows reduced together.
HK_SSE4 HK_INLINE X row_partials(const uint8_t* q, const uint8_t* row, int64_t chunks) {
  X bytes = popcount_bytes(_mm_xor_si128(load(row), load(q)));
  for (int64_t c = 1; c < chunks; ++c)
    bytes = _mm_add_epi8(bytes, popcount_bytes(_mm_xor_si128(load(row + 16 * c), load(q + 16 * c))));
  return _mm_sad_epu8(bytes, _mm_setzero_si128());
}

template <int kChunks>
HK_SSE4 HK_INLINE int64_t rows_16m(const uint8_t* q, const uint8_t* db, int64_t width, int64_t n, int32_t* out) {
  const int64_t chunks = kChunks > 0 ? kChunks : width / 16;
  int64_t j = 0;
  constexpr int kScalar = kChunks > 0 ? kScalarRows : 0;  // the generic scalar loop is too slow to help
  for (; j + 4 + kScalar <= n; j += 4 + kScalar) {
    X s[4];  // s[i]: the two qword halves of row i
    for (int i = 0; i < 4; ++i) s[i] = row_partials(q, db + (j + i) * width, chunks);
    for (int i = 4; i < 4 + kScalar; ++i) out[j + i] = row_distance<16 * kChunks>(q, db + (j + i) * width, width);
    const X t01 = _mm_or_si128(s[0], _mm_slli_epi64(s[1], 32));  // r0 r1 | r0 r1 (low, high halves)
    const X t23 = _mm_or_si128(s[2], _mm_slli_epi64(s[3], 32));  // r2 r3 | r2 r3
    store(out + j, _mm_add_epi32(_mm_unpacklo_epi64(t01, t23), _mm_unpackhi_epi64(t01, t23)));
  }
  return j;
}

HK_SSE4 void distances_sse4(const uint8_t* q, const uint8_t* db, int64_t width, int64_t n, int32_t* out) {
  int64_t done = 0;
  switch (width) {
    case 1: done = rows_1(q, db, n, out); break;
    case 2: done = rows_2(q, db, n, out); break;
    case 3: done = rows_3(q, db, n, out); break;
    case 4: done = rows_4(q, db, n, out); break;
    case 6: done = rows_6(q, db, n, out); break;
    case 8: done = rows_8(q, db, n, out); break;
    case 16: done = rows_16m<1>(q, db, width, n, out); break;
    case 32: done = rows_16m<2>(q, db, width, n, out); break;
    case 64: done = rows_16m<4>(q, db, width, n, out); break;
    case 96: done = rows_16m<6>(q, db, width, n, out); break;
    case 128: done = rows_16m<8>(q, db, width, n, out); break;
    case 192: done = rows_16m<12>(q, db, width, n, out); break;
    default:
      if (width % 16 == 0 && width <= 16 * 31) done = rows_16m<0>(q, db, width, n, out);
      break;
  }
  rows_any_width(q, db + done * width, width, n - done, out + done);
}

// The shared scans, vectorised by the compiler for SSE4.1.
HK_SSE4 int64_t collect_within_sse4(const int32_t* d, int64_t n, int32_t limit, int32_t* hits) {
  return collect_within_scalar(d, n, limit, hits);
}

HK_SSE4 int64_t count_within_sse4(const int32_t* d, int64_t n, int32_t limit) {
  return count_within_scalar(d, n, limit);
}

}  // namespace

const HammingKernels* sse4_kernels() {
  static const HammingKernels kSse4{"sse4", 128, &distances_sse4, &collect_within_sse4, &count_within_sse4};
  static const bool supported = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.1") && __builtin_cpu_supports("popcnt");
  }();
  return supported ? &kSse4 : nullptr;
}
#else
const HammingKernels* sse4_kernels() { return nullptr; }
#endif

}  // namespace hashkern
