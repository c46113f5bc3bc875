// The parts of the bit-sliced search (hamming_sliced.h) that need no vector instructions: which
// widths it takes, and a query's list of bits.
#include "hamming_sliced.h"

#include <array>

namespace hashkern {

bool sliced_width_supported(int64_t width) { return width % 16 == 0 && width <= kMaxSlicedWidth; }

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

const uint16_t* every_plane_index() {
  static const std::array<uint16_t, 8 * kMaxSlicedWidth> index = [] {
    std::array<uint16_t, 8 * kMaxSlicedWidth> all{};
    for (int b = 0; b < 8 * kMaxSlicedWidth; ++b) all[b] = static_cast<uint16_t>(b);
    return all;
  }();
  return index.data();
}

}  // namespace hashkern
