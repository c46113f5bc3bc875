// Bit-sliced Hamming search (hamming_sliced.h) with AVX2: 256 rows per vector of plane bits.
// Only this file's functions carry the AVX2 target, and they run only where the CPU has it.
#include "hamming_sliced.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "hamming_kernels.h"
#include "popcount.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HK_HAVE_SLICED 1
#include <immintrin.h>
#endif

namespace hashkern {

#ifdef HK_HAVE_SLICED

#define HK_SLICED __attribute__((target("avx2,popcnt,bmi")))

namespace {

using V = __m256i;
// Count planes: 9 hold the sums of up to 256 bits (128/256-bit codes: a query sums at most
// 128 planes, a weight 256), 11 those of up to 1536 (wider codes).
constexpr int kMaxCountPlanes = 11;
inline int count_planes(int64_t width) { return width <= 32 ? 9 : kMaxCountPlanes; }

HK_SLICED inline V vload(const uint64_t* p) { return _mm256_loadu_si256(reinterpret_cast<const V*>(p)); }
HK_SLICED inline void vstore(uint64_t* p, V v) { _mm256_storeu_si256(reinterpret_cast<V*>(p), v); }
HK_SLICED inline V vxor(V a, V b) { return _mm256_xor_si256(a, b); }
HK_SLICED inline V vand(V a, V b) { return _mm256_and_si256(a, b); }
HK_SLICED inline V vor(V a, V b) { return _mm256_or_si256(a, b); }

// Carry-save adder: a + b + c = 2 high + low, per bit.
HK_SLICED inline void csa(V& high, V& low, V a, V b, V c) {
  const V u = vxor(a, b);
  high = vor(vand(a, b), vand(u, c));
  low = vxor(u, c);
}

// Adds carry, a bit-vector of weight 1, to one counter plane; carry becomes the carry out.
HK_SLICED inline void half_add(V& c, V& carry) {
  const V t = vand(c, carry);
  c = vxor(c, carry);
  carry = t;
}

HK_SLICED inline V plane(const uint64_t* planes, const uint16_t* index, int64_t i) {
  return vload(planes + 4 * index[i]);
}

// count = Σ planes[index[i]] over i < n < 2^kPlanes, bit-sliced (Harley-Seal: 16 planes per
// round; queries are padded to whole rounds). The counter planes are locals, kept in registers
// (two counters in alternate rounds, for overlapping dependency chains, measured slower: spills).
template <int kPlanes>
HK_SLICED __attribute__((always_inline)) inline void sliced_sum(const uint64_t* planes, const uint16_t* index,
                                                             int64_t n, V* count) {
  V c[kPlanes];  // c[l]: bit l of every row's count
#pragma GCC unroll 16
  for (int l = 0; l < kPlanes; ++l) c[l] = _mm256_setzero_si256();
  V& ones = c[0];
  V& twos = c[1];
  V& fours = c[2];
  V& eights = c[3];
#define HK_IN(i) plane(planes, index, i)
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    V twos_a, twos_b, fours_a, fours_b, eights_a, eights_b, carry;
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
    c[kPlanes - 1] = vor(c[kPlanes - 1], carry);  // n < 2^kPlanes: nothing carries out of the top
  }
  for (; i < n; ++i) {
    V carry = HK_IN(i);
#pragma GCC unroll 16
    for (int l = 0; l < kPlanes - 1; ++l) half_add(c[l], carry);
    c[kPlanes - 1] = vor(c[kPlanes - 1], carry);
  }
#undef HK_IN
#pragma GCC unroll 16
  for (int l = 0; l < kPlanes; ++l) count[l] = c[l];
}

// Bit-sliced a - b over `planes` planes (two's complement; missing planes of a, b are 0).
HK_SLICED void sliced_sub(const V* a, int a_planes, const V* b, int b_planes, V* out, int planes) {
  V borrow = _mm256_setzero_si256();
  for (int k = 0; k < planes; ++k) {
    const V ak = k < a_planes ? a[k] : _mm256_setzero_si256();
    const V bk = k < b_planes ? b[k] : _mm256_setzero_si256();
    const V x = vxor(ak, bk);
    out[k] = vxor(x, borrow);
    borrow = vor(_mm256_andnot_si256(ak, bk), _mm256_andnot_si256(x, borrow));
  }
}

}  // namespace

bool sliced_search_supported(int64_t width) {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
  return avx2 && width % 16 == 0 && width <= kMaxSlicedWidth;
}

void slice_query(const uint8_t* q, int64_t width, SlicedQuery& out) {
  const int64_t nbits = 8 * width;
  int64_t weight = 0;
  for (int64_t b = 0; b < nbits; ++b) weight += (q[b >> 3] >> (b & 7)) & 1;
  // Sum over the fewer of the query's one and zero bits.
  out.complement = 2 * weight > nbits;
  out.bits.clear();
  for (int64_t b = 0; b < nbits; ++b) {
    if ((((q[b >> 3] >> (b & 7)) & 1) != 0) != out.complement) out.bits.push_back(static_cast<uint16_t>(b));
  }
  // Padded with the all-zero plane to whole rounds of 16, which are cheaper than single planes.
  while (out.bits.size() % 16 != 0) out.bits.push_back(static_cast<uint16_t>(nbits));
  out.weight = static_cast<int32_t>(weight);
}

namespace {

// 0, 1, 2, ...: the index list that sums every plane of a group (a row's weight).
const std::array<uint16_t, 8 * kMaxSlicedWidth>& every_plane() {
  static const std::array<uint16_t, 8 * kMaxSlicedWidth> index = [] {
    std::array<uint16_t, 8 * kMaxSlicedWidth> all{};
    for (int b = 0; b < 8 * kMaxSlicedWidth; ++b) all[b] = static_cast<uint16_t>(b);
    return all;
  }();
  return index;
}

}  // namespace

// x[r] = 16 bytes of row r, r < 16 -> x[c] = byte c of rows 0..15 (an SSE byte transpose).
HK_SLICED inline void transpose_16x16(__m128i* x) {
  __m128i t[16], u[16], v[16];
  for (int k = 0; k < 8; ++k) {  // rows 2k, 2k+1 interleaved: columns 0-7, then 8-15
    t[k] = _mm_unpacklo_epi8(x[2 * k], x[2 * k + 1]);
    t[k + 8] = _mm_unpackhi_epi8(x[2 * k], x[2 * k + 1]);
  }
  for (int half = 0; half < 2; ++half) {  // u[4G + k]: rows 4k..4k+3, columns 4G..4G+3
    for (int k = 0; k < 4; ++k) {
      u[8 * half + k] = _mm_unpacklo_epi16(t[8 * half + 2 * k], t[8 * half + 2 * k + 1]);
      u[8 * half + 4 + k] = _mm_unpackhi_epi16(t[8 * half + 2 * k], t[8 * half + 2 * k + 1]);
    }
  }
  for (int g = 0; g < 4; ++g) {  // rows 0-7 / 8-15, two columns each
    v[4 * g] = _mm_unpacklo_epi32(u[4 * g], u[4 * g + 1]);
    v[4 * g + 1] = _mm_unpackhi_epi32(u[4 * g], u[4 * g + 1]);
    v[4 * g + 2] = _mm_unpacklo_epi32(u[4 * g + 2], u[4 * g + 3]);
    v[4 * g + 3] = _mm_unpackhi_epi32(u[4 * g + 2], u[4 * g + 3]);
  }
  for (int g = 0; g < 4; ++g) {
    x[4 * g] = _mm_unpacklo_epi64(v[4 * g], v[4 * g + 2]);
    x[4 * g + 1] = _mm_unpackhi_epi64(v[4 * g], v[4 * g + 2]);
    x[4 * g + 2] = _mm_unpacklo_epi64(v[4 * g + 1], v[4 * g + 3]);
    x[4 * g + 3] = _mm_unpackhi_epi64(v[4 * g + 1], v[4 * g + 3]);
  }
}

HK_SLICED void slice_block(const uint8_t* rows, int64_t width, int64_t len, SlicedBlock& out) {
  const int64_t nbits = 8 * width, groups = (len + 255) / 256;
  out.width = width;
  out.groups = groups;
  const int64_t stride = (nbits + 1) * 4;  // every group's planes end with an all-zero plane
  out.planes.resize(groups * stride);
  const int planes_per_count = count_planes(width);
  out.weights.resize(groups * planes_per_count * 4);
  alignas(32) uint8_t tail[32 * kMaxSlicedWidth];  // a last, partial set of 32 rows, zero-padded
  for (int64_t g = 0; g < groups; ++g) {
    uint64_t* group_planes = out.planes.data() + g * stride;
    std::fill(group_planes + nbits * 4, group_planes + stride, uint64_t(0));  // the others are all written
    uint32_t* planes = reinterpret_cast<uint32_t*>(group_planes);
    for (int64_t s = 0; s < 8; ++s) {  // 32 rows: one 32-bit word of every plane
      const int64_t r0 = g * 256 + s * 32;
      const uint8_t* src = tail;
      if (r0 + 32 <= len) {
        src = rows + r0 * width;
      } else {
        std::memset(tail, 0, 32 * width);
        if (r0 < len) std::memcpy(tail, rows + r0 * width, (len - r0) * width);
      }
      for (int64_t c0 = 0; c0 < width; c0 += 16) {  // 16 byte columns at a time
        __m128i lo[16], hi[16];
        for (int r = 0; r < 16; ++r) {
          lo[r] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + r * width + c0));
          hi[r] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + (r + 16) * width + c0));
        }
        transpose_16x16(lo);
        transpose_16x16(hi);
        for (int c = 0; c < 16; ++c) {
          V v = _mm256_set_m128i(hi[c], lo[c]);
          for (int k = 7; k >= 0; --k) {  // byte bit k of the rows is code bit 8 (c0 + c) + k
            planes[(8 * (c0 + c) + k) * 8 + s] = static_cast<uint32_t>(_mm256_movemask_epi8(v));
            v = _mm256_add_epi8(v, v);
          }
        }
      }
    }
    V weight[kMaxCountPlanes];
    if (planes_per_count == 9) {
      sliced_sum<9>(group_planes, every_plane().data(), nbits, weight);
    } else {
      sliced_sum<kMaxCountPlanes>(group_planes, every_plane().data(), nbits, weight);
    }
    for (int l = 0; l < planes_per_count; ++l)
      vstore(out.weights.data() + (g * planes_per_count + l) * 4, weight[l]);
  }
}

namespace {

template <int kPlanes>
HK_SLICED int64_t sliced_within_planes(const SlicedBlock& block, const SlicedQuery& query, const uint8_t* q,
                                       const uint8_t* rows, int64_t len, int32_t limit, int32_t* d, int32_t* hits) {
  const int64_t nbits = 8 * block.width, width = block.width;
  // Row j is a hit when x = w - 2 S <= c = limit - |q| (|x| <= bits). With S0 the sum over the
  // query's zero bits instead, d = 2 S0 - w + |q|: the test is x = 2 S0 - w <= c. x is a
  // (kPlanes + 2)-bit two's complement; flipping its sign plane makes x + 2^(kPlanes + 1) an
  // unsigned number, compared with the constant c + 2^(kPlanes + 1) plane by plane from the top
  // (c is clamped to x's range).
  constexpr int kDiffPlanes = kPlanes + 2;
  constexpr int32_t kOffset = 1 << (kDiffPlanes - 1);
  const int32_t c = std::min(std::max(limit - query.weight, -kOffset), kOffset - 1) + kOffset;
  const V all = _mm256_set1_epi32(-1);
  const int64_t summed = static_cast<int64_t>(query.bits.size());
  int64_t count = 0;
  for (int64_t g = 0; g < block.groups; ++g) {
    V sum[kPlanes], weight[kPlanes], twice[kPlanes + 1], x[kDiffPlanes];
    sliced_sum<kPlanes>(block.planes.data() + g * (nbits + 1) * 4, query.bits.data(), summed, sum);
    for (int l = 0; l < kPlanes; ++l) weight[l] = vload(block.weights.data() + (g * kPlanes + l) * 4);
    twice[0] = _mm256_setzero_si256();
    for (int l = 0; l < kPlanes; ++l) twice[l + 1] = sum[l];
    if (query.complement) {
      sliced_sub(twice, kPlanes + 1, weight, kPlanes, x, kDiffPlanes);
    } else {
      sliced_sub(weight, kPlanes, twice, kPlanes + 1, x, kDiffPlanes);
    }
    x[kDiffPlanes - 1] = vxor(x[kDiffPlanes - 1], all);
    V below = _mm256_setzero_si256(), equal = all;  // x < c so far / x == c so far, from the top
    for (int k = kDiffPlanes - 1; k >= 0; --k) {
      if ((c >> k) & 1) {
        below = vor(below, _mm256_andnot_si256(x[k], equal));
        equal = vand(equal, x[k]);
      } else {
        equal = _mm256_andnot_si256(x[k], equal);
      }
    }
    alignas(32) uint64_t mask[4];
    vstore(mask, vor(below, equal));
    for (int64_t word = 0; word < 4; ++word) {
      const int64_t base = g * 256 + word * 64;
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


}  // namespace

HK_SLICED int64_t sliced_within(const SlicedBlock& block, const SlicedQuery& query, const uint8_t* q,
                                const uint8_t* rows, int64_t len, int32_t limit, int32_t* d, int32_t* hits) {
  if (limit < 0) return 0;
  return count_planes(block.width) == 9
             ? sliced_within_planes<9>(block, query, q, rows, len, limit, d, hits)
             : sliced_within_planes<kMaxCountPlanes>(block, query, q, rows, len, limit, d, hits);
}

const SlicedKernels* sliced_avx2_kernels() {
  static const SlicedKernels kAvx2{"avx2", 256, 1.5, &slice_block, &sliced_within};
  return sliced_search_supported(16) ? &kAvx2 : nullptr;
}

#else  // no AVX2 compiler support: the search never takes this path

const SlicedKernels* sliced_avx2_kernels() { return nullptr; }

bool sliced_search_supported(int64_t) { return false; }
void slice_query(const uint8_t*, int64_t, SlicedQuery&) {}
void slice_block(const uint8_t*, int64_t, int64_t, SlicedBlock&) {}
int64_t sliced_within(const SlicedBlock&, const SlicedQuery&, const uint8_t*, const uint8_t*, int64_t, int32_t,
                      int32_t*, int32_t*) {
  return 0;
}

#endif

bool sliced_width_supported(int64_t width) { return width % 16 == 0 && width <= kMaxSlicedWidth; }

}  // namespace hashkern
