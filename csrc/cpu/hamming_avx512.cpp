// AVX-512 VPOPCNTDQ Hamming kernels: xor and a vector popcount per 64-bit word (vpopcntq), the
// per-row word counts of 8 rows reduced together by a tree of unpacks and lane shuffles.
//  * 4, 8, 16 and 32 bytes: several rows to a 512-bit vector.
//  * other widths: a row's 64-byte chunks summed in one vector, the last chunk a masked load
//    (masked-out bytes are never read, so nothing past the database is touched).
// The last rows of a block that do not fill 8 go through the shared row loops, compiled for
// AVX-512 too. Only this file's functions carry the target, so the build does not need AVX-512
// and a CPU without it never runs them; the scans are the AVX2 ones.
#include "hamming_kernels.h"
#include "hamming_rows.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HK_HAVE_AVX512 1
// GCC 12 flags _mm512_undefined_* inside its own intrinsics (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif

namespace hashkern {

#ifdef HK_HAVE_AVX512

#define HK_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx2,popcnt")))

namespace {

using Z = __m512i;

HK_AVX512 HK_INLINE Z zload(const uint8_t* p) { return _mm512_loadu_si512(p); }
HK_AVX512 HK_INLINE Z popcount_xor(Z a, Z b) { return _mm512_popcnt_epi64(_mm512_xor_si512(a, b)); }
HK_AVX512 HK_INLINE void store8(int32_t* out, Z sums) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi64_epi32(sums));
}

// Adds lanes of 128 bits pairwise: [a.l0 + a.l1, a.l2 + a.l3, b.l0 + b.l1, b.l2 + b.l3].
HK_AVX512 HK_INLINE Z add_lane_pairs(Z a, Z b) {
  return _mm512_add_epi64(_mm512_shuffle_i64x2(a, b, 0x88), _mm512_shuffle_i64x2(a, b, 0xDD));
}

// The qword sums of 8 vectors, one per row, as [sum(a[0]), ..., sum(a[7])].
HK_AVX512 HK_INLINE Z sum_rows8(const Z* a) {
  Z t[4];  // t[i], lane L: [a[2i] lane L, a[2i + 1] lane L], each summed over its 2 qwords
  for (int i = 0; i < 4; ++i)
    t[i] = _mm512_add_epi64(_mm512_unpacklo_epi64(a[2 * i], a[2 * i + 1]),
                            _mm512_unpackhi_epi64(a[2 * i], a[2 * i + 1]));
  // [a0 a1 | a0 a1 | a2 a3 | a2 a3] and [a4 a5 | ...]: halves of the rows; then whole rows.
  return add_lane_pairs(add_lane_pairs(t[0], t[1]), add_lane_pairs(t[2], t[3]));
}

// 32-bit codes: 16 rows per vector.
HK_AVX512 int64_t rows_4(const uint8_t* q, const uint8_t* db, int64_t n, int32_t* out) {
  const Z query = _mm512_set1_epi32(static_cast<int>(load_as<uint32_t>(q)));
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    _mm512_storeu_si512(out + j, _mm512_popcnt_epi32(_mm512_xor_si512(zload(db + 4 * j), query)));
  return j;
}

// 64-bit codes: 8 rows per vector.
HK_AVX512 int64_t rows_8(const uint8_t* q, const uint8_t* db, int64_t n, int32_t* out) {
  const Z query = _mm512_set1_epi64(static_cast<long long>(load_as<uint64_t>(q)));
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) store8(out + j, popcount_xor(zload(db + 8 * j), query));
  return j;
}

// 128-bit codes: 4 rows per vector; the two qwords of each row added, then put in row order.
HK_AVX512 int64_t rows_16(const uint8_t* q, const uint8_t* db, int64_t n, int32_t* out) {
  const Z query = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
  const Z order = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const Z a = popcount_xor(zload(db + 16 * j), query), b = popcount_xor(zload(db + 16 * j + 64), query);
    const Z sums = _mm512_add_epi64(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));  // r0 r4 r1 r5 ...
    store8(out + j, _mm512_permutexvar_epi64(order, sums));
  }
  return j;
}

// 256-bit codes: 2 rows per vector.
HK_AVX512 int64_t rows_32(const uint8_t* q, const uint8_t* db, int64_t n, int32_t* out) {
  const Z query = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)));
  const Z order = _mm512_setr_epi64(0, 2, 1, 3, 4, 6, 5, 7);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    Z p[4];  // p[i]: the qword counts of rows 2i and 2i + 1
    for (int i = 0; i < 4; ++i) p[i] = popcount_xor(zload(db + 32 * (j + 2 * i)), query);
    const Z t0 = _mm512_add_epi64(_mm512_unpacklo_epi64(p[0], p[1]), _mm512_unpackhi_epi64(p[0], p[1]));
    const Z t1 = _mm512_add_epi64(_mm512_unpacklo_epi64(p[2], p[3]), _mm512_unpackhi_epi64(p[2], p[3]));
    store8(out + j, _mm512_permutexvar_epi64(order, add_lane_pairs(t0, t1)));  // r0 r2 r1 r3 r4 r6 r5 r7
  }
  return j;
}

// Any width: each row's 64-byte chunks counted into one vector, 8 rows reduced together.
// kWidth > 0 fixes the width at compile time; otherwise kFull >= 0 fixes the number of whole
// chunks (the loop unrolls) and kFull < 0 leaves both to run time.
template <int kWidth, int kFull = -1>
HK_AVX512 HK_INLINE int64_t rows_chunks(const uint8_t* q, const uint8_t* db, int64_t width, int64_t n, int32_t* out) {
  const int64_t w = kWidth > 0 ? kWidth : width, full = kWidth > 0 ? w / 64 : kFull >= 0 ? kFull : w / 64;
  const int64_t rest = w % 64;
  // Rows of 64 bytes or more end with the row's last 64 bytes, the ones counted already masked
  // out after the load (a plain load: masked loads across cache lines are slow); shorter rows
  // take one masked load.
  const bool overlap = full > 0;
  const int64_t tail_at = overlap ? w - 64 : 0;
  const __mmask64 tail = rest == 0 ? 0 : overlap ? ~__mmask64(0) << (64 - rest) : ~__mmask64(0) >> (64 - rest);
  const Z q_tail = _mm512_maskz_loadu_epi8(tail, q + tail_at);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    Z acc[8];
    for (int i = 0; i < 8; ++i) {
      const uint8_t* row = db + (j + i) * w;
      Z s = _mm512_setzero_si512();
      for (int64_t c = 0; c < full; ++c) s = _mm512_add_epi64(s, popcount_xor(zload(row + 64 * c), zload(q + 64 * c)));
      if (rest != 0) {
        const Z last = overlap ? _mm512_maskz_mov_epi8(tail, zload(row + tail_at)) : _mm512_maskz_loadu_epi8(tail, row);
        s = _mm512_add_epi64(s, popcount_xor(last, q_tail));
      }
      acc[i] = s;
    }
    store8(out + j, sum_rows8(acc));
  }
  return j;
}

HK_AVX512 void distances_avx512(const uint8_t* q, const uint8_t* db, int64_t width, int64_t n, int32_t* out) {
  int64_t done = 0;
  switch (width) {
    case 1: case 2: case 3: case 5: case 6: case 7: break;  // the shared loops, vectorised by the compiler
    case 4: done = rows_4(q, db, n, out); break;
    case 8: done = rows_8(q, db, n, out); break;
    case 16: done = rows_16(q, db, n, out); break;
    case 32: done = rows_32(q, db, n, out); break;
    case 64: done = rows_chunks<64>(q, db, width, n, out); break;
    case 96: done = rows_chunks<96>(q, db, width, n, out); break;
    case 128: done = rows_chunks<128>(q, db, width, n, out); break;
    case 192: done = rows_chunks<192>(q, db, width, n, out); break;
    case 256: done = rows_chunks<256>(q, db, width, n, out); break;
    default:
      switch (width / 64) {
        case 0: done = rows_chunks<0, 0>(q, db, width, n, out); break;
        case 1: done = rows_chunks<0, 1>(q, db, width, n, out); break;
        case 2: done = rows_chunks<0, 2>(q, db, width, n, out); break;
        case 3: done = rows_chunks<0, 3>(q, db, width, n, out); break;
        default: done = rows_chunks<0>(q, db, width, n, out); break;
      }
      break;
  }
  rows_any_width(q, db + done * width, width, n - done, out + done);
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
    static HammingKernels k{"avx512", 512, &distances_avx512, avx2 ? avx2->collect_within : nullptr,
                            avx2 ? avx2->count_within : nullptr};
    return cpu_has_avx512_popcount() && avx2 ? &k : nullptr;
  }();
  return kernels;
}
#else
const HammingKernels* avx512_kernels() { return nullptr; }
#endif

}  // namespace hashkern
