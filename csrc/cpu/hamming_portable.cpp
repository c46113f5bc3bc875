// Portable Hamming kernels: plain C++ (a hardware popcount where the build targets one).
#include "hamming_kernels.h"
#include "hamming_rows.h"

namespace hashkern {
namespace {

void distances_portable(const uint8_t* q, const uint8_t* db, int64_t width, int64_t n, int32_t* out) {
  rows_any_width(q, db, width, n, out);
}

int64_t collect_within_portable(const int32_t* d, int64_t n, int32_t limit, int32_t* hits) {
  return collect_within_scalar(d, n, limit, hits);
}

int64_t count_within_portable(const int32_t* d, int64_t n, int32_t limit) {
  return count_within_scalar(d, n, limit);
}

const HammingKernels kPortable{"portable", 64, &distances_portable, &collect_within_portable, &count_within_portable};

}  // namespace

const HammingKernels* portable_kernels() { return &kPortable; }

}  // namespace hashkern
