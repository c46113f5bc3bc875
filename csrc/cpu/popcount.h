// Hamming distance between two packed rows: 64-bit popcount over whole words, then the
// tail bytes. Rows need not be 8-byte aligned (any byte width, any storage offset), so words
// are read with memcpy, which compiles to a plain load on x86-64 and AArch64.
#pragma once
#include <cstdint>
#include <cstring>

namespace hashkern {

inline uint64_t load_word(const uint8_t* p) {
  uint64_t w;
  std::memcpy(&w, p, sizeof(w));
  return w;
}

inline uint64_t load_tail(const uint8_t* p, int64_t nbytes) {
  uint64_t w = 0;
  std::memcpy(&w, p, static_cast<size_t>(nbytes));
  return w;
}

// kWords > 0: a width known at compile time (the loop unrolls); kWords == 0: any width.
template <int kWords>
inline int32_t hamming_row(const uint8_t* a, const uint8_t* b, int64_t words, int64_t tail) {
  int32_t d = 0;
  const int64_t n = kWords > 0 ? kWords : words;
  for (int64_t w = 0; w < n; ++w) {
    d += __builtin_popcountll(load_word(a + 8 * w) ^ load_word(b + 8 * w));
  }
  if (kWords == 0 && tail > 0) {
    d += __builtin_popcountll(load_tail(a + 8 * n, tail) ^ load_tail(b + 8 * n, tail));
  }
  return d;
}

}  // namespace hashkern
