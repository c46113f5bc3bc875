// MaxSim row kernels compiled for AVX2 + FMA (chosen at run time when the CPU has them; the
// build never needs these instructions to run). 16 ymm registers: 2 x 6 accumulators.
#include <cmath>
#include <cstdint>
#include <limits>

#include "maxsim.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include <immintrin.h>

namespace hashkern {
namespace maxsim {
namespace avx2 {

template <typename T>
struct Ops;

template <>
struct Ops<float> {
  using V = __m256;
  static constexpr int W = 8, MV = 2, NR = 6;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V fma(V a, float x, V acc) { return _mm256_fmadd_ps(a, _mm256_set1_ps(x), acc); }
  static void update(V& best, V& idx, V x, V t) {
    const V gt = _mm256_cmp_ps(x, best, _CMP_GT_OQ);
    best = _mm256_blendv_ps(best, x, gt);
    idx = _mm256_blendv_ps(idx, t, gt);
  }
  static void store(float* p, V x) { _mm256_storeu_ps(p, x); }
};

template <>
struct Ops<double> {
  using V = __m256d;
  static constexpr int W = 4, MV = 2, NR = 6;
  static V zero() { return _mm256_setzero_pd(); }
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static V set1(double x) { return _mm256_set1_pd(x); }
  static V fma(V a, double x, V acc) { return _mm256_fmadd_pd(a, _mm256_set1_pd(x), acc); }
  static void update(V& best, V& idx, V x, V t) {
    const V gt = _mm256_cmp_pd(x, best, _CMP_GT_OQ);
    best = _mm256_blendv_pd(best, x, gt);
    idx = _mm256_blendv_pd(idx, t, gt);
  }
  static void store(double* p, V x) { _mm256_storeu_pd(p, x); }
};

#include "maxsim_isa.h"

}  // namespace avx2
}  // namespace maxsim
}  // namespace hashkern
#pragma GCC pop_options
#endif
