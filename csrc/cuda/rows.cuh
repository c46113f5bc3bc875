// Packed code rows read as 64-bit words by the CUDA kernels, with no copy of the matrix.
// Device code only (no ATen), so tests/test_cuda_rows.py can check it on the host under ASan.
//
// A packed matrix is [n, bytes] uint8, contiguous. Word w of row j holds the row's bytes
// [8w, 8w + 8), least significant first; bytes past the row's end read as zero.
//  - WordRows: rows of whole words at an 8-byte-aligned address (bytes % 8 == 0): one load a word.
//  - ByteRows: any width and alignment (24-bit codes, 1000-bit codes, views at odd offsets): each
//    row's words are cut from the aligned words that cover it with a funnel shift, the last one
//    masked to the row. Only the matrix's own bytes are read: an aligned word that crosses its
//    first or last byte (row 0 of a misaligned view, the end of the last row) is read by bytes.
#pragma once
#include <cstdint>

namespace hashkern {

struct WordRows {
  const uint64_t* base;  // [n, words]
  int64_t words;

  __device__ __forceinline__ uint64_t word(int64_t row, int64_t w) const { return __ldg(base + row * words + w); }

  // Hamming distance of row j to the query words q [words]; kWords > 0 unrolls a fixed width.
  template <int kWords>
  __device__ __forceinline__ int distance(const uint64_t* __restrict__ q, int64_t j) const {
    const uint64_t* row = base + j * words;
    int d = 0;
    if (kWords > 0) {
#pragma unroll
      for (int w = 0; w < kWords; ++w) d += __popcll(__ldg(q + w) ^ __ldg(row + w));
    } else {
      for (int64_t w = 0; w < words; ++w) d += __popcll(__ldg(q + w) ^ __ldg(row + w));
    }
    return d;
  }
};

struct ByteRows {
  const uint8_t* base;  // [n, bytes], any alignment
  const uint8_t* end;   // base + n * bytes
  int64_t bytes;        // bytes per row
  int64_t words;        // ceil(bytes / 8)
  uint64_t tail_mask;   // the bytes of the last word that belong to the row

  // The 8-byte-aligned word at p with the bytes outside the matrix zeroed, never read.
  __device__ __forceinline__ uint64_t aligned(const uint8_t* p) const {
    const uintptr_t at = reinterpret_cast<uintptr_t>(p), lo = reinterpret_cast<uintptr_t>(base),
                    hi = reinterpret_cast<uintptr_t>(end);
    if (at >= lo && at + 8 <= hi) return __ldg(reinterpret_cast<const uint64_t*>(p));
    uint64_t word = 0;
    for (int b = 0; b < 8; ++b) {
      if (at + b >= lo && at + b < hi) word |= static_cast<uint64_t>(__ldg(reinterpret_cast<const uint8_t*>(at + b))) << (8 * b);
    }
    return word;
  }

  // A row's word from the aligned words low (holding its first byte) and high, shift = 8 * head.
  __device__ __forceinline__ uint64_t cut(uint64_t low, uint64_t high, int shift, bool last) const {
    const uint64_t word = shift == 0 ? low : (low >> shift) | (high << (64 - shift));
    return last ? word & tail_mask : word;
  }

  __device__ __forceinline__ uint64_t word(int64_t row, int64_t w) const {
    const uintptr_t first = reinterpret_cast<uintptr_t>(base + row * bytes + 8 * w);
    const int head = static_cast<int>(first & 7);
    const uint8_t* p = reinterpret_cast<const uint8_t*>(first - head);
    const bool last = w == words - 1;
    // the next aligned word is needed only when this word's bytes run into it
    const int64_t in_word = last ? bytes - 8 * w : 8;
    const uint64_t high = head + in_word > 8 ? aligned(p + 8) : 0;
    return cut(aligned(p), high, 8 * head, last);
  }

  template <int kWords>
  __device__ __forceinline__ int distance(const uint64_t* __restrict__ q, int64_t j) const {
    const uintptr_t row = reinterpret_cast<uintptr_t>(base + j * bytes);
    const int head = static_cast<int>(row & 7);
    const uint8_t* p = reinterpret_cast<const uint8_t*>(row - head);
    const int64_t covered = (head + bytes + 7) / 8;  // aligned words holding the row
    const int64_t n_words = kWords > 0 ? kWords : words;
    uint64_t low = aligned(p);
    int d = 0;
#pragma unroll
    for (int64_t w = 0; w < n_words; ++w) {
      const uint64_t high = w + 1 < covered ? aligned(p + 8 * (w + 1)) : 0;
      d += __popcll(__ldg(q + w) ^ cut(low, high, 8 * head, w == n_words - 1));
      low = high;
    }
    return d;
  }
};

// The reader of a contiguous [n, bytes] matrix whose first byte is at base.
inline ByteRows make_byte_rows(const uint8_t* base, int64_t n, int64_t bytes) {
  const int64_t words = (bytes + 7) / 8, tail = bytes - 8 * (words - 1);
  return {base, base + n * bytes, bytes, words, tail == 8 ? ~0ull : (1ull << (8 * tail)) - 1};
}

}  // namespace hashkern
