// Stable descending sort of every row of a float matrix, by LSD radix sort: O(n) per row where
// torch.sort takes O(n log n). The SoftSort scans sort all n rows of an [n, n] similarity matrix,
// and at n = 8192 torch.sort took a third of sorted_cosine's time. The result equals
// torch.sort(s, -1, descending=True, stable=True): NaN first, -0.0 equal to 0.0, ties in index order.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace hashkern {
namespace {

// An unsigned key whose ascending order is the values' descending order: NaN (any payload) lowest,
// -0.0 folded onto 0.0 so the two tie as they compare.
template <typename T, typename Key = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>
inline Key descending_key(T value) {
  if (std::isnan(value)) return Key(0);
  if (value == T(0)) value = T(0);
  Key bits;
  std::memcpy(&bits, &value, sizeof(T));
  constexpr Key sign = Key(1) << (8 * sizeof(T) - 1);
  const Key ascending = (bits & sign) ? ~bits : (bits | sign);
  return ~ascending;
}

// One row: keys and positions through 8-bit digits, least significant first; a digit that every
// key shares (the low mantissa bytes of Hamming similarities, say) costs only its histogram.
template <typename T>
void sort_row(const T* s, int64_t n, T* q, int64_t* idx, std::vector<uint8_t>& scratch) {
  using Key = decltype(descending_key(T(0)));
  constexpr int kDigits = sizeof(Key);
  scratch.resize(size_t(n) * 2 * (sizeof(Key) + sizeof(int32_t)));
  Key* keys = reinterpret_cast<Key*>(scratch.data());
  Key* keys_next = keys + n;
  int32_t* pos = reinterpret_cast<int32_t*>(keys_next + n);
  int32_t* pos_next = pos + n;
  std::array<std::array<int64_t, 256>, kDigits> counts{};
  for (int64_t i = 0; i < n; ++i) {
    const Key key = descending_key(s[i]);
    keys[i] = key;
    pos[i] = int32_t(i);
    for (int digit = 0; digit < kDigits; ++digit) ++counts[digit][(key >> (8 * digit)) & 0xff];
  }
  for (int digit = 0; digit < kDigits; ++digit) {
    auto& count = counts[digit];
    if (count[(keys[0] >> (8 * digit)) & 0xff] == n) continue;  // every key has this digit
    int64_t offset = 0;
    for (auto& c : count) {
      const int64_t here = c;
      c = offset;
      offset += here;
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t to = count[(keys[i] >> (8 * digit)) & 0xff]++;
      keys_next[to] = keys[i];
      pos_next[to] = pos[i];
    }
    std::swap(keys, keys_next);
    std::swap(pos, pos_next);
  }
  for (int64_t i = 0; i < n; ++i) {
    idx[i] = pos[i];
    q[i] = s[pos[i]];
  }
}

void sort_rows_descending_cpu(const at::Tensor& s, at::Tensor& q, at::Tensor& idx) {
  TORCH_CHECK_TYPE(s.scalar_type() == at::kFloat || s.scalar_type() == at::kDouble,
                   "s must be float32 or float64, got ", s.scalar_type());
  TORCH_CHECK_VALUE(s.dim() == 2 && s.is_contiguous(), "s must be a contiguous [b, n] matrix, got shape ", s.sizes());
  TORCH_CHECK_VALUE(s.size(1) < (int64_t(1) << 31), "rows longer than 2^31 - 1 are not supported");
  TORCH_CHECK_VALUE(q.sizes() == s.sizes() && q.scalar_type() == s.scalar_type() && q.is_contiguous(),
                    "q must be contiguous, shaped like s, with s's dtype");
  TORCH_CHECK_VALUE(idx.sizes() == s.sizes() && idx.scalar_type() == at::kLong && idx.is_contiguous(),
                    "idx must be contiguous int64, shaped like s");
  const int64_t b = s.size(0), n = s.size(1);
  if (b == 0 || n == 0) return;
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "sort_rows_descending", [&] {
    const scalar_t* sp = s.const_data_ptr<scalar_t>();
    scalar_t* qp = q.data_ptr<scalar_t>();
    int64_t* ip = idx.data_ptr<int64_t>();
    at::parallel_for(0, b, 1, [&](int64_t r0, int64_t r1) {
      std::vector<uint8_t> scratch;
      for (int64_t r = r0; r < r1; ++r) sort_row(sp + r * n, n, qp + r * n, ip + r * n, scratch);
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(hashkern, CPU, m) { m.impl("sort_rows_descending", &sort_rows_descending_cpu); }

}  // namespace hashkern
