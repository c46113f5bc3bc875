// Row loops shared by every instruction set: out[j] = popcount(q xor db[j]) with the row width
// fixed at compile time for the common code lengths (8 to 512 bits) and every width under 8
// bytes, and a word loop for the rest. Always inlined into each instruction set's kernel, where
// the compiler vectorises them as that set allows (AVX-512 VPOPCNTDQ: vector popcounts).
#pragma once
#include <cstdint>

#include "popcount.h"

namespace hashkern {

template <int kWidth>
HK_INLINE void rows_fixed(const uint8_t* __restrict__ q, const uint8_t* __restrict__ db, int64_t width,
                          int64_t n, int32_t* __restrict__ out) {
  for (int64_t j = 0; j < n; ++j) out[j] = row_distance<kWidth>(q, db + j * width, width);
}

HK_INLINE void rows_any_width(const uint8_t* __restrict__ q, const uint8_t* __restrict__ db, int64_t width,
                              int64_t n, int32_t* __restrict__ out) {
  switch (width) {
    case 1: return rows_fixed<1>(q, db, width, n, out);
    case 2: return rows_fixed<2>(q, db, width, n, out);
    case 3: return rows_fixed<3>(q, db, width, n, out);
    case 4: return rows_fixed<4>(q, db, width, n, out);
    case 5: return rows_fixed<5>(q, db, width, n, out);
    case 6: return rows_fixed<6>(q, db, width, n, out);
    case 7: return rows_fixed<7>(q, db, width, n, out);
    case 8: return rows_fixed<8>(q, db, width, n, out);
    case 16: return rows_fixed<16>(q, db, width, n, out);
    case 32: return rows_fixed<32>(q, db, width, n, out);
    case 64: return rows_fixed<64>(q, db, width, n, out);
    default: return rows_fixed<0>(q, db, width, n, out);
  }
}

// Indices of the distances <= limit, 16 at a time: a group without a hit (the usual case) costs
// one branch-free test, which the compiler vectorises.
HK_INLINE int64_t collect_within_scalar(const int32_t* d, int64_t n, int32_t limit, int32_t* hits) {
  int64_t count = 0, j = 0;
  for (; j + 16 <= n; j += 16) {
    int any = 0;
    for (int i = 0; i < 16; ++i) any |= d[j + i] <= limit;
    if (!any) continue;
    for (int i = 0; i < 16; ++i) {
      hits[count] = static_cast<int32_t>(j + i);
      count += d[j + i] <= limit;
    }
  }
  for (; j < n; ++j) {
    hits[count] = static_cast<int32_t>(j);
    count += d[j] <= limit;
  }
  return count;
}

HK_INLINE int64_t count_within_scalar(const int32_t* d, int64_t n, int32_t limit) {
  int64_t count = 0;
  for (int64_t j = 0; j < n; ++j) count += d[j] <= limit;
  return count;
}

}  // namespace hashkern
