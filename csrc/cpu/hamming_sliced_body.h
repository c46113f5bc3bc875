// The bit-sliced search (hamming_sliced.h) as one template over a vector type, included by each
// instruction set's file, which first defines HK_SLICED_TARGET (its target attribute) and a
// vector-traits type VT in an anonymous namespace (so every instantiation is that file's own):
//   using V;  kWords: 64-bit words per vector;  kLanes: 128-bit lanes per vector;
//   using Mask: an unsigned integer of 16 * kLanes bits;
//   zero(), ones(), load(const uint64_t*), store(uint64_t*, V), bit_xor, bit_and, bit_or,
//   and_not(a, b) = ~a & b, from_lanes(const __m128i* [kLanes]) (lane 0 lowest),
//   byte_signs(V) -> Mask (bit i: the top bit of byte i), twice_bytes(V) (each byte shifted left).
// A group of rows is one vector of plane bits (64 * kWords rows); 16 * kLanes rows at a time are
// transposed by 16 x 16 SSE byte transposes and byte sign masks.
#pragma once
#ifndef HK_SLICED_TARGET
#error "define HK_SLICED_TARGET (the instruction set's target attribute) before including hamming_sliced_body.h"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "hamming_sliced.h"
#include "popcount.h"

namespace hashkern {
namespace sliced {

// Count planes: 9 hold the sums of up to 256 bits (128/256-bit codes: a query sums at most
// 128 planes, a weight 256), 11 those of up to 1536 (wider codes).
constexpr int kMaxCountPlanes = 11;
inline int count_planes(int64_t width) { return width <= 32 ? 9 : kMaxCountPlanes; }

// Carry-save adder: a + b + c = 2 high + low, per bit.
template <typename VT, typename V = typename VT::V>
HK_SLICED_TARGET HK_INLINE void csa(V& high, V& low, V a, V b, V c) {
  const V u = VT::bit_xor(a, b);
  high = VT::bit_or(VT::bit_and(a, b), VT::bit_and(u, c));
  low = VT::bit_xor(u, c);
}

// Adds carry, a bit-vector of weight 1, to one counter plane; carry becomes the carry out.
template <typename VT, typename V = typename VT::V>
HK_SLICED_TARGET HK_INLINE void half_add(V& c, V& carry) {
  const V t = VT::bit_and(c, carry);
  c = VT::bit_xor(c, carry);
  carry = t;
}

// count = Σ planes[index[i]] over i < n < 2^kPlanes, bit-sliced (Harley-Seal: 16 planes per
// round; queries are padded to whole rounds). The counter planes are locals, kept in registers
// (two counters in alternate rounds, for overlapping dependency chains, measured slower: spills).
template <typename VT, int kPlanes, typename V = typename VT::V>
HK_SLICED_TARGET HK_INLINE void sum(const uint64_t* planes, const uint16_t* index, int64_t n, V* count) {
  V c[kPlanes];  // c[l]: bit l of every row's count
#pragma GCC unroll 16
  for (int l = 0; l < kPlanes; ++l) c[l] = VT::zero();
  V& ones = c[0];
  V& twos = c[1];
  V& fours = c[2];
  V& eights = c[3];
#define HK_IN(i) VT::load(planes + VT::kWords * index[i])
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    V twos_a, twos_b, fours_a, fours_b, eights_a, eights_b, carry;
    csa<VT>(twos_a, ones, ones, HK_IN(i), HK_IN(i + 1));
    csa<VT>(twos_b, ones, ones, HK_IN(i + 2), HK_IN(i + 3));
    csa<VT>(fours_a, twos, twos, twos_a, twos_b);
    csa<VT>(twos_a, ones, ones, HK_IN(i + 4), HK_IN(i + 5));
    csa<VT>(twos_b, ones, ones, HK_IN(i + 6), HK_IN(i + 7));
    csa<VT>(fours_b, twos, twos, twos_a, twos_b);
    csa<VT>(eights_a, fours, fours, fours_a, fours_b);
    csa<VT>(twos_a, ones, ones, HK_IN(i + 8), HK_IN(i + 9));
    csa<VT>(twos_b, ones, ones, HK_IN(i + 10), HK_IN(i + 11));
    csa<VT>(fours_a, twos, twos, twos_a, twos_b);
    csa<VT>(twos_a, ones, ones, HK_IN(i + 12), HK_IN(i + 13));
    csa<VT>(twos_b, ones, ones, HK_IN(i + 14), HK_IN(i + 15));
    csa<VT>(fours_b, twos, twos, twos_a, twos_b);
    csa<VT>(eights_b, fours, fours, fours_a, fours_b);
    csa<VT>(carry, eights, eights, eights_a, eights_b);
#pragma GCC unroll 16
    for (int l = 4; l < kPlanes - 1; ++l) half_add<VT>(c[l], carry);
    c[kPlanes - 1] = VT::bit_or(c[kPlanes - 1], carry);  // n < 2^kPlanes: nothing carries out of the top
  }
  for (; i < n; ++i) {
    V carry = HK_IN(i);
#pragma GCC unroll 16
    for (int l = 0; l < kPlanes - 1; ++l) half_add<VT>(c[l], carry);
    c[kPlanes - 1] = VT::bit_or(c[kPlanes - 1], carry);
  }
#undef HK_IN
#pragma GCC unroll 16
  for (int l = 0; l < kPlanes; ++l) count[l] = c[l];
}

// Bit-sliced a - b over `planes` planes (two's complement; missing planes of a, b are 0).
template <typename VT, typename V = typename VT::V>
HK_SLICED_TARGET HK_INLINE void subtract(const V* a, int a_planes, const V* b, int b_planes, V* out, int planes) {
  V borrow = VT::zero();
  for (int k = 0; k < planes; ++k) {
    const V ak = k < a_planes ? a[k] : VT::zero();
    const V bk = k < b_planes ? b[k] : VT::zero();
    const V x = VT::bit_xor(ak, bk);
    out[k] = VT::bit_xor(x, borrow);
    borrow = VT::bit_or(VT::and_not(ak, bk), VT::and_not(x, borrow));
  }
}

// x[r] = 16 bytes of row r, r < 16 -> x[c] = byte c of rows 0..15 (an SSE byte transpose).
template <typename VT>
HK_SLICED_TARGET HK_INLINE void transpose_16x16(__m128i* x) {
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

template <typename VT>
HK_SLICED_TARGET void slice_block(const uint8_t* rows, int64_t width, int64_t len, SlicedBlock& out) {
  using V = typename VT::V;
  using Mask = typename VT::Mask;
  constexpr int64_t kGroupRows = 64 * VT::kWords, kStepRows = 16 * VT::kLanes;
  constexpr int64_t kSteps = kGroupRows / kStepRows;  // Mask words per plane
  const int64_t nbits = 8 * width, groups = (len + kGroupRows - 1) / kGroupRows;
  out.width = width;
  out.groups = groups;
  const int64_t stride = (nbits + 1) * VT::kWords;  // every group's planes end with an all-zero plane
  out.planes.resize(groups * stride);
  const int planes_per_count = count_planes(width);
  out.weights.resize(groups * planes_per_count * VT::kWords);
  alignas(32) uint8_t tail[kStepRows * kMaxSlicedWidth];  // a last, partial step of rows, zero-padded
  for (int64_t g = 0; g < groups; ++g) {
    uint64_t* group_planes = out.planes.data() + g * stride;
    std::fill(group_planes + nbits * VT::kWords, group_planes + stride, uint64_t(0));  // the others are all written
    Mask* planes = reinterpret_cast<Mask*>(group_planes);
    for (int64_t s = 0; s < kSteps; ++s) {  // kStepRows rows: one Mask word of every plane
      const int64_t r0 = g * kGroupRows + s * kStepRows;
      const uint8_t* src = tail;
      if (r0 + kStepRows <= len) {
        src = rows + r0 * width;
      } else {
        std::memset(tail, 0, kStepRows * width);
        if (r0 < len) std::memcpy(tail, rows + r0 * width, (len - r0) * width);
      }
      for (int64_t c0 = 0; c0 < width; c0 += 16) {  // 16 byte columns at a time
        __m128i x[VT::kLanes][16];
        for (int lane = 0; lane < VT::kLanes; ++lane) {
          for (int r = 0; r < 16; ++r)
            x[lane][r] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + (16 * lane + r) * width + c0));
          transpose_16x16<VT>(x[lane]);
        }
        for (int c = 0; c < 16; ++c) {
          __m128i column[VT::kLanes];
          for (int lane = 0; lane < VT::kLanes; ++lane) column[lane] = x[lane][c];
          V v = VT::from_lanes(column);
          for (int k = 7; k >= 0; --k) {  // byte bit k of the rows is code bit 8 (c0 + c) + k
            planes[(8 * (c0 + c) + k) * kSteps + s] = VT::byte_signs(v);
            v = VT::twice_bytes(v);
          }
        }
      }
    }
    V weight[kMaxCountPlanes];
    if (planes_per_count == 9) {
      sum<VT, 9>(group_planes, every_plane_index(), nbits, weight);
    } else {
      sum<VT, kMaxCountPlanes>(group_planes, every_plane_index(), nbits, weight);
    }
    for (int l = 0; l < planes_per_count; ++l)
      VT::store(out.weights.data() + (g * planes_per_count + l) * VT::kWords, weight[l]);
  }
}

template <typename VT, int kPlanes>
HK_SLICED_TARGET int64_t within_planes(const SlicedBlock& block, const SlicedQuery& query, const uint8_t* q,
                                       const uint8_t* rows, int64_t len, int32_t limit, int32_t* d, int32_t* hits) {
  using V = typename VT::V;
  constexpr int64_t kGroupRows = 64 * VT::kWords;
  const int64_t nbits = 8 * block.width, width = block.width;
  // Row j is a hit when x = w - 2 S <= c = limit - |q| (|x| <= bits). With S0 the sum over the
  // query's zero bits instead, d = 2 S0 - w + |q|: the test is x = 2 S0 - w <= c. x is a
  // (kPlanes + 2)-bit two's complement; flipping its sign plane makes x + 2^(kPlanes + 1) an
  // unsigned number, compared with the constant c + 2^(kPlanes + 1) plane by plane from the top
  // (c is clamped to x's range).
  constexpr int kDiffPlanes = kPlanes + 2;
  constexpr int32_t kOffset = 1 << (kDiffPlanes - 1);
  const int32_t c = std::min(std::max(limit - query.weight, -kOffset), kOffset - 1) + kOffset;
  const V all = VT::ones();
  const int64_t summed = static_cast<int64_t>(query.bits.size());
  int64_t count = 0;
  for (int64_t g = 0; g < block.groups; ++g) {
    V total[kPlanes], weight[kPlanes], twice[kPlanes + 1], x[kDiffPlanes];
    sum<VT, kPlanes>(block.planes.data() + g * (nbits + 1) * VT::kWords, query.bits.data(), summed, total);
    for (int l = 0; l < kPlanes; ++l) weight[l] = VT::load(block.weights.data() + (g * kPlanes + l) * VT::kWords);
    twice[0] = VT::zero();
    for (int l = 0; l < kPlanes; ++l) twice[l + 1] = total[l];
    if (query.complement) {
      subtract<VT>(twice, kPlanes + 1, weight, kPlanes, x, kDiffPlanes);
    } else {
      subtract<VT>(weight, kPlanes, twice, kPlanes + 1, x, kDiffPlanes);
    }
    x[kDiffPlanes - 1] = VT::bit_xor(x[kDiffPlanes - 1], all);
    V below = VT::zero(), equal = all;  // x < c so far / x == c so far, from the top
    for (int k = kDiffPlanes - 1; k >= 0; --k) {
      if ((c >> k) & 1) {
        below = VT::bit_or(below, VT::and_not(x[k], equal));
        equal = VT::bit_and(equal, x[k]);
      } else {
        equal = VT::and_not(x[k], equal);
      }
    }
    alignas(32) uint64_t mask[VT::kWords];
    VT::store(mask, VT::bit_or(below, equal));
    for (int64_t word = 0; word < VT::kWords; ++word) {
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

template <typename VT>
HK_SLICED_TARGET int64_t within(const SlicedBlock& block, const SlicedQuery& query, const uint8_t* q,
                                const uint8_t* rows, int64_t len, int32_t limit, int32_t* d, int32_t* hits) {
  if (limit < 0) return 0;
  return count_planes(block.width) == 9 ? within_planes<VT, 9>(block, query, q, rows, len, limit, d, hits)
                                        : within_planes<VT, kMaxCountPlanes>(block, query, q, rows, len, limit, d, hits);
}

}  // namespace sliced
}  // namespace hashkern
