// Hamming distance between two packed rows, for a row width in bytes known at compile time
// (kWidth > 0: the loads and the loop are fixed) or not (kWidth == 0). Rows need not be aligned
// (any byte width, any storage offset), so words are read with memcpy of a constant size,
// which compiles to one plain load on x86-64 and AArch64. Every helper is always inlined, so a
// kernel compiled for another instruction set (a target attribute) gets its own copy of them.
#pragma once
#include <cstdint>
#include <cstring>

#define HK_INLINE inline __attribute__((always_inline))

namespace hashkern {

template <typename T>
HK_INLINE uint64_t load_as(const uint8_t* p) {
  T v;
  __builtin_memcpy(&v, p, sizeof(T));
  return v;
}

// The first kBytes (1..8) bytes at p, zero-extended, as at most three loads of 4, 2 and 1
// bytes (a 3-byte memcpy would go through the stack and stall on store forwarding).
template <int kBytes>
HK_INLINE uint64_t load_bytes(const uint8_t* p) {
  if constexpr (kBytes == 8) return load_as<uint64_t>(p);
  uint64_t w = 0;
  int at = 0;
  if constexpr ((kBytes & 4) != 0) w = load_as<uint32_t>(p), at = 4;
  if constexpr ((kBytes & 2) != 0) w |= load_as<uint16_t>(p + at) << (8 * at), at += 2;
  if constexpr ((kBytes & 1) != 0) w |= load_as<uint8_t>(p + at) << (8 * at);
  return w;
}

HK_INLINE int32_t popcount64(uint64_t x) { return __builtin_popcountll(x); }

// popcount(a xor b) over `width` bytes. Widths of 8 bytes or more end with one word that
// overlaps the previous one, shifted so the bytes counted already drop out: no tail loop.
template <int kWidth>
HK_INLINE int32_t row_distance(const uint8_t* a, const uint8_t* b, int64_t width) {
  if constexpr (kWidth > 0 && kWidth < 8) {
    return popcount64(load_bytes<kWidth>(a) ^ load_bytes<kWidth>(b));
  } else {
    const int64_t w = kWidth > 0 ? kWidth : width;  // >= 8 here: narrower widths are compile-time
    int32_t d = 0, d1 = 0, d2 = 0, d3 = 0;  // four sums: no chain of dependent adds
    int64_t i = 0;
    for (; i + 32 <= w; i += 32) {
      d += popcount64(load_as<uint64_t>(a + i) ^ load_as<uint64_t>(b + i));
      d1 += popcount64(load_as<uint64_t>(a + i + 8) ^ load_as<uint64_t>(b + i + 8));
      d2 += popcount64(load_as<uint64_t>(a + i + 16) ^ load_as<uint64_t>(b + i + 16));
      d3 += popcount64(load_as<uint64_t>(a + i + 24) ^ load_as<uint64_t>(b + i + 24));
    }
    d += d1 + d2 + d3;
    for (; i + 8 <= w; i += 8) d += popcount64(load_as<uint64_t>(a + i) ^ load_as<uint64_t>(b + i));
    if (w % 8 != 0) {
      const uint64_t last = load_as<uint64_t>(a + w - 8) ^ load_as<uint64_t>(b + w - 8);
      d += popcount64(last >> (8 * (8 - w % 8)));
    }
    return d;
  }
}

}  // namespace hashkern
