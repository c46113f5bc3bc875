// Bit-sliced Hamming search (hamming_sliced.h) with AVX-512: 512 rows per vector of plane bits.
// A carry-save adder is two vpternlogq (sum 0x96, carry 0xE8) where AVX2 takes five logic ops,
// so a round of 16 planes costs about 40 vector ops for 512 rows (AVX2: about 85 for 256). The
// block's transposition: four 16 x 16 byte transposes at once, one per 128-bit lane, give a
// byte column of 64 rows; gf2p8affine turns each 8 rows x 8 bits into 8 bits x 8 rows and vpermb
// gathers them into one 64-row word of 8 planes; an 8 x 8 word transpose over the group's 8
// steps gives whole 64-byte plane vectors, stored once each. Only this file's functions carry
// the AVX-512 target (F, BW, VBMI, GFNI), and they run only where the CPU has it (offered as the
// set "avx512", with the VPOPCNTDQ per-row kernels).
#include "hamming_sliced.h"

#include <algorithm>
#include <cstring>

#include "hamming_kernels.h"
#include "popcount.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HK_HAVE_SLICED_AVX512 1
// GCC 12 flags _mm512_undefined_* inside its own intrinsics (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif

namespace hashkern {

#ifdef HK_HAVE_SLICED_AVX512

#define HK_Z __attribute__((target("avx512f,avx512bw,avx512vbmi,gfni,avx2,popcnt,bmi")))

namespace {

using Z = __m512i;
constexpr int64_t kWords = 8;            // 64-bit words per plane vector
constexpr int64_t kGroupRows = 512;      // rows per plane vector
constexpr int64_t kStepRows = 64;        // rows transposed at a time: one 64-bit word of every plane
// Count planes: 9 hold the sums of up to 511 (codes up to 256 bits), 11 those of up to 2047.
constexpr int kMaxCountPlanes = 11;
inline int count_planes(int64_t width) { return width <= 32 ? 9 : kMaxCountPlanes; }

HK_Z HK_INLINE Z zload(const uint64_t* p) { return _mm512_loadu_si512(p); }
HK_Z HK_INLINE Z zero() { return _mm512_setzero_si512(); }

// Carry-save adder: a + b + c = 2 high + low, per bit (xor3 and majority, one op each).
HK_Z HK_INLINE void csa(Z& high, Z& low, Z a, Z b, Z c) {
  low = _mm512_ternarylogic_epi64(a, b, c, 0x96);
  high = _mm512_ternarylogic_epi64(a, b, c, 0xE8);
}

// Adds carry, a bit-vector of weight 1, to one counter plane; carry becomes the carry out.
HK_Z HK_INLINE void half_add(Z& c, Z& carry) {
  const Z t = _mm512_and_si512(c, carry);
  c = _mm512_xor_si512(c, carry);
  carry = t;
}

// count = Σ planes[i-th summed plane] over i < n < 2^kPlanes, bit-sliced (Harley-Seal, 16
// planes a round). The summed planes are index[0..n) or, with kAll, every plane 0..n) (a row's
// weight).
template <int kPlanes, bool kAll>
HK_Z HK_INLINE void sliced_sum(const uint64_t* planes, const uint16_t* index, int64_t n, Z* count) {
  Z c[kPlanes];  // c[l]: bit l of every row's count
#pragma GCC unroll 16
  for (int l = 0; l < kPlanes; ++l) c[l] = zero();
  Z& ones = c[0];
  Z& twos = c[1];
  Z& fours = c[2];
  Z& eights = c[3];
#define HK_IN(i) zload(planes + kWords * (kAll ? (i) : index[i]))
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    Z twos_a, twos_b, fours_a, fours_b, eights_a, eights_b, carry;
    csa(twos_a, ones, ones, HK_IN(i), HK_IN(i + 1));
    csa(twos_b, ones, ones, HK_IN(i + 2), HK_IN(i + 3));
    csa(fours_a, twos, twos, twos_a, twos_b);
    csa(twos_a, ones, ones, HK_IN(i + 4), HK_IN(i + 5));
    csa(twos_b, ones, ones, HK_IN(i + 6), HK_IN(i + 7));
    csa(fours_b, twos, twos, twos_a, twos_b);
    csa(eights_a, fours, fours, fours_a, fours_b);
    csa(twos_a, ones, ones, HK_IN(i + 8), HK_IN(i + 9));
    csa(twos_b, ones, ones, HK_IN(i + 10), HK_IN(i + 11));
    csa(fours_a, twos, twos, twos_a, twos_b);
    csa(twos_a, ones, ones, HK_IN(i + 12), HK_IN(i + 13));
    csa(twos_b, ones, ones, HK_IN(i + 14), HK_IN(i + 15));
    csa(fours_b, twos, twos, twos_a, twos_b);
    csa(eights_b, fours, fours, fours_a, fours_b);
    csa(carry, eights, eights, eights_a, eights_b);
#pragma GCC unroll 16
    for (int l = 4; l < kPlanes - 1; ++l) half_add(c[l], carry);
    c[kPlanes - 1] = _mm512_or_si512(c[kPlanes - 1], carry);  // n < 2^kPlanes: nothing carries out of the top
  }
  for (; i < n; ++i) {
    Z carry = HK_IN(i);
#pragma GCC unroll 16
    for (int l = 0; l < kPlanes - 1; ++l) half_add(c[l], carry);
    c[kPlanes - 1] = _mm512_or_si512(c[kPlanes - 1], carry);
  }
#undef HK_IN
#pragma GCC unroll 16
  for (int l = 0; l < kPlanes; ++l) count[l] = c[l];
}

// Bit-sliced a - b over `planes` planes (two's complement; missing planes of a, b are 0): the
// difference bit is xor3, the borrow out majority(~a, b, borrow).
HK_Z HK_INLINE void sliced_sub(const Z* a, int a_planes, const Z* b, int b_planes, Z* out, int planes) {
  Z borrow = zero();
  for (int k = 0; k < planes; ++k) {
    const Z ak = k < a_planes ? a[k] : zero();
    const Z bk = k < b_planes ? b[k] : zero();
    out[k] = _mm512_ternarylogic_epi64(ak, bk, borrow, 0x96);
    borrow = _mm512_ternarylogic_epi64(ak, bk, borrow, 0x8E);
  }
}

// x[r], lane L = 16 bytes of row 16 L + r -> x[c], lane L = byte c of rows 16 L .. 16 L + 15:
// a 16 x 16 byte transpose in each 128-bit lane, so byte i of x[c] is byte c of row i.
HK_Z HK_INLINE void transpose_16x16_lanes(Z* x) {
  Z t[16], u[16], v[16];
  for (int k = 0; k < 8; ++k) {  // rows 2k, 2k+1 interleaved: columns 0-7, then 8-15
    t[k] = _mm512_unpacklo_epi8(x[2 * k], x[2 * k + 1]);
    t[k + 8] = _mm512_unpackhi_epi8(x[2 * k], x[2 * k + 1]);
  }
  for (int half = 0; half < 2; ++half) {  // u[4G + k]: rows 4k..4k+3, columns 4G..4G+3
    for (int k = 0; k < 4; ++k) {
      u[8 * half + k] = _mm512_unpacklo_epi16(t[8 * half + 2 * k], t[8 * half + 2 * k + 1]);
      u[8 * half + 4 + k] = _mm512_unpackhi_epi16(t[8 * half + 2 * k], t[8 * half + 2 * k + 1]);
    }
  }
  for (int g = 0; g < 4; ++g) {  // rows 0-7 / 8-15, two columns each
    v[4 * g] = _mm512_unpacklo_epi32(u[4 * g], u[4 * g + 1]);
    v[4 * g + 1] = _mm512_unpackhi_epi32(u[4 * g], u[4 * g + 1]);
    v[4 * g + 2] = _mm512_unpacklo_epi32(u[4 * g + 2], u[4 * g + 3]);
    v[4 * g + 3] = _mm512_unpackhi_epi32(u[4 * g + 2], u[4 * g + 3]);
  }
  for (int g = 0; g < 4; ++g) {
    x[4 * g] = _mm512_unpacklo_epi64(v[4 * g], v[4 * g + 2]);
    x[4 * g + 1] = _mm512_unpackhi_epi64(v[4 * g], v[4 * g + 2]);
    x[4 * g + 2] = _mm512_unpacklo_epi64(v[4 * g + 1], v[4 * g + 3]);
    x[4 * g + 3] = _mm512_unpackhi_epi64(v[4 * g + 1], v[4 * g + 3]);
  }
}

// 16 bytes at column c0 of rows r, 16 + r, 32 + r, 48 + r of `src` as the lanes of one vector.
HK_Z HK_INLINE Z load_lanes(const uint8_t* src, int64_t width, int64_t r, int64_t c0) {
  const auto lane = [&](int64_t row) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + row * width + c0)); };
  const Z low = _mm512_inserti32x4(_mm512_castsi128_si512(lane(r)), lane(16 + r), 1);
  return _mm512_inserti32x4(_mm512_inserti32x4(low, lane(32 + r), 2), lane(48 + r), 3);
}

// 8 x 8 transpose of 64-bit words: out[b] word s = in[s] word b.
HK_Z HK_INLINE void transpose_8x8_words(const Z* in, Z* out) {
  Z a[8], c[8];
  for (int k = 0; k < 4; ++k) {  // a[2k]: words 0,2,4,6 of in[2k], in[2k+1] interleaved; a[2k+1]: 1,3,5,7
    a[2 * k] = _mm512_unpacklo_epi64(in[2 * k], in[2 * k + 1]);
    a[2 * k + 1] = _mm512_unpackhi_epi64(in[2 * k], in[2 * k + 1]);
  }
  const Z even = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13), odd = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
  for (int h = 0; h < 2; ++h) {  // c[4h + w]: word w (and w + 4) of in[4h .. 4h + 3]
    for (int w = 0; w < 2; ++w) {
      c[4 * h + w] = _mm512_permutex2var_epi64(a[4 * h + w], even, a[4 * h + 2 + w]);
      c[4 * h + 2 + w] = _mm512_permutex2var_epi64(a[4 * h + w], odd, a[4 * h + 2 + w]);
    }
  }
  for (int w = 0; w < 4; ++w) {
    out[w] = _mm512_shuffle_i64x2(c[w], c[4 + w], 0x44);
    out[w + 4] = _mm512_shuffle_i64x2(c[w], c[4 + w], 0xEE);
  }
}

HK_Z void slice_block_avx512(const uint8_t* rows, int64_t width, int64_t len, SlicedBlock& out) {
  const int64_t nbits = 8 * width, groups = (len + kGroupRows - 1) / kGroupRows;
  out.width = width;
  out.groups = groups;
  const int64_t stride = (nbits + 1) * kWords;  // every group's planes end with an all-zero plane
  out.planes.resize(groups * stride);
  const int planes_per_count = count_planes(width);
  out.weights.resize(groups * planes_per_count * kWords);
  alignas(64) uint8_t tail[kStepRows * kMaxSlicedWidth];  // a last, partial step of rows, zero-padded
  constexpr int64_t kSteps = kGroupRows / kStepRows;
  // gf2p8affine with a row's bytes as the matrix: byte b of each word gathers bit b of its 8 bytes.
  const Z bit_of_each_byte = _mm512_set1_epi64(static_cast<long long>(0x8040201008040201ULL));
  // Byte 8b + j <- byte 8j + b: word b holds bit b of all 64 rows.
  alignas(64) static constexpr uint8_t kGather[64] = {
      0, 8, 16, 24, 32, 40, 48, 56, 1, 9, 17, 25, 33, 41, 49, 57, 2, 10, 18, 26, 34, 42, 50, 58,
      3, 11, 19, 27, 35, 43, 51, 59, 4, 12, 20, 28, 36, 44, 52, 60, 5, 13, 21, 29, 37, 45, 53, 61,
      6, 14, 22, 30, 38, 46, 54, 62, 7, 15, 23, 31, 39, 47, 55, 63};
  const Z gather = _mm512_load_si512(kGather);
  Z staged[16][kSteps];  // [column][step]: 8 planes' words of one 64-row step
  alignas(64) static const uint8_t kNoRows[kStepRows * kMaxSlicedWidth] = {};  // steps past the last row
  for (int64_t g = 0; g < groups; ++g) {
    uint64_t* planes = out.planes.data() + g * stride;
    std::fill(planes + nbits * kWords, planes + stride, uint64_t(0));  // the others are all written
    const uint8_t* step_rows[kSteps];
    for (int64_t s = 0; s < kSteps; ++s) {
      const int64_t r0 = g * kGroupRows + s * kStepRows;
      step_rows[s] = r0 + kStepRows <= len ? rows + r0 * width : r0 >= len ? kNoRows : tail;
      if (step_rows[s] == tail) {
        std::memset(tail, 0, kStepRows * width);
        std::memcpy(tail, rows + r0 * width, (len - r0) * width);
      }
    }
    for (int64_t c0 = 0; c0 < width; c0 += 16) {  // 16 byte columns at a time
      for (int64_t s = 0; s < kSteps; ++s) {
        Z x[16];
        // Rows in reverse order within each 8 (r ^ 7): gf2p8affine counts a word's bytes from the top.
        for (int r = 0; r < 16; ++r) x[r] = load_lanes(step_rows[s], width, r ^ 7, c0);
        transpose_16x16_lanes(x);
        for (int c = 0; c < 16; ++c)
          staged[c][s] = _mm512_permutexvar_epi8(gather, _mm512_gf2p8affine_epi64_epi8(bit_of_each_byte, x[c], 0));
      }
      for (int c = 0; c < 16; ++c) {  // word s of plane 8 (c0 + c) + b: step s's word b
        Z words[8];
        transpose_8x8_words(staged[c], words);
        for (int b = 0; b < 8; ++b) _mm512_storeu_si512(planes + (8 * (c0 + c) + b) * kWords, words[b]);
      }
    }
    Z weight[kMaxCountPlanes];
    if (planes_per_count == 9) {
      sliced_sum<9, true>(planes, nullptr, nbits, weight);
    } else {
      sliced_sum<kMaxCountPlanes, true>(planes, nullptr, nbits, weight);
    }
    for (int l = 0; l < planes_per_count; ++l)
      _mm512_storeu_si512(out.weights.data() + (g * planes_per_count + l) * kWords, weight[l]);
  }
}

template <int kPlanes>
HK_Z int64_t within_planes(const SlicedBlock& block, const SlicedQuery& query, const uint8_t* q, const uint8_t* rows,
                           int64_t len, int32_t limit, int32_t* d, int32_t* hits) {
  const int64_t nbits = 8 * block.width, width = block.width;
  // Row j is a hit when x = w - 2 S <= c = limit - |q| (|x| <= bits), or with S0 over the
  // query's zero bits x = 2 S0 - w <= c. x is a (kPlanes + 2)-bit two's complement; flipping its
  // sign plane makes x + 2^(kPlanes + 1) unsigned, compared with c + 2^(kPlanes + 1) plane by
  // plane from the top (c clamped to x's range).
  constexpr int kDiffPlanes = kPlanes + 2;
  constexpr int32_t kOffset = 1 << (kDiffPlanes - 1);
  const int32_t c = std::min(std::max(limit - query.weight, -kOffset), kOffset - 1) + kOffset;
  const Z all = _mm512_set1_epi64(-1);
  const int64_t summed = static_cast<int64_t>(query.bits.size());
  int64_t count = 0;
  for (int64_t g = 0; g < block.groups; ++g) {
    Z sum[kPlanes], weight[kPlanes], twice[kPlanes + 1], x[kDiffPlanes];
    sliced_sum<kPlanes, false>(block.planes.data() + g * (nbits + 1) * kWords, query.bits.data(), summed, sum);
    for (int l = 0; l < kPlanes; ++l) weight[l] = zload(block.weights.data() + (g * kPlanes + l) * kWords);
    twice[0] = zero();
    for (int l = 0; l < kPlanes; ++l) twice[l + 1] = sum[l];
    if (query.complement) {
      sliced_sub(twice, kPlanes + 1, weight, kPlanes, x, kDiffPlanes);
    } else {
      sliced_sub(weight, kPlanes, twice, kPlanes + 1, x, kDiffPlanes);
    }
    x[kDiffPlanes - 1] = _mm512_xor_si512(x[kDiffPlanes - 1], all);
    Z below = zero(), equal = all;  // x < c so far / x == c so far, from the top
    for (int k = kDiffPlanes - 1; k >= 0; --k) {
      if ((c >> k) & 1) {
        below = _mm512_ternarylogic_epi64(below, x[k], equal, 0xF2);  // below | (~x & equal)
        equal = _mm512_and_si512(equal, x[k]);
      } else {
        equal = _mm512_andnot_si512(x[k], equal);
      }
    }
    const Z within = _mm512_or_si512(below, equal);
    __mmask8 words = _mm512_test_epi64_mask(within, within);  // the 64-row words with a hit
    if (words == 0) continue;
    alignas(64) uint64_t mask[kWords];
    _mm512_store_si512(mask, within);
    while (words) {
      const int word = __builtin_ctz(words);
      words &= words - 1;
      const int64_t base = g * kGroupRows + word * 64;
      uint64_t m = mask[word];
      if (base + 64 > len) m &= base >= len ? 0 : (~uint64_t(0) >> (64 - (len - base)));
      while (m) {
        const int64_t j = base + __builtin_ctzll(m);
        m &= m - 1;
        d[j] = row_distance<0>(q, rows + j * width, width);
        hits[count++] = static_cast<int32_t>(j);
      }
    }
  }
  return count;
}

HK_Z int64_t within_avx512(const SlicedBlock& block, const SlicedQuery& query, const uint8_t* q, const uint8_t* rows,
                           int64_t len, int32_t limit, int32_t* d, int32_t* hits) {
  if (limit < 0) return 0;
  return count_planes(block.width) == 9
             ? within_planes<9>(block, query, q, rows, len, limit, d, hits)
             : within_planes<kMaxCountPlanes>(block, query, q, rows, len, limit, d, hits);
}

}  // namespace

const SlicedKernels* sliced_avx512_kernels() {
  static const SlicedKernels kAvx512{"avx512", kGroupRows, 1.0, &slice_block_avx512, &within_avx512};
  static const bool supported = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("gfni") && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("bmi");
  }();
  return supported ? &kAvx512 : nullptr;
}

#else  // no AVX-512 compiler support: the search never takes this path

const SlicedKernels* sliced_avx512_kernels() { return nullptr; }

#endif

}  // namespace hashkern
