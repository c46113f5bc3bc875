// SoftSort scan row kernels compiled for AVX2 + FMA (chosen at run time when the CPU has them;
// the build never needs these instructions to run).
#include <algorithm>
#include <cmath>
#include <vector>

#include "softsort_scan.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define HASHKERN_SOFTSORT_AVX2 1
#endif

namespace hashkern {
namespace softsort {
namespace avx2 {
#include "softsort_scan_isa.h"
}  // namespace avx2
}  // namespace softsort
}  // namespace hashkern

#ifdef HASHKERN_SOFTSORT_AVX2
#pragma GCC pop_options
#endif
