// MaxSim row kernels compiled for AVX-512F (chosen at run time when the CPU has it; the build
// never needs these instructions to run). 32 zmm registers: 2 x 12 accumulators, the token
// broadcast folded into each FMA.
#include <cmath>
#include <cstdint>
#include <limits>

#include "maxsim.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#include <immintrin.h>

namespace hashkern {
namespace maxsim {
namespace avx512 {

template <typename T>
struct Ops;

template <>
struct Ops<float> {
  using V = __m512;
  static constexpr int W = 16, MV = 2, NR = 12;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V fma(V a, float x, V acc) { return _mm512_fmadd_ps(a, _mm512_set1_ps(x), acc); }
  static void update(V& best, V& idx, V x, V t) {
    const __mmask16 gt = _mm512_cmp_ps_mask(x, best, _CMP_GT_OQ);
    best = _mm512_mask_blend_ps(gt, best, x);
    idx = _mm512_mask_blend_ps(gt, idx, t);
  }
  static void store(float* p, V x) { _mm512_storeu_ps(p, x); }
};

template <>
struct Ops<double> {
  using V = __m512d;
  static constexpr int W = 8, MV = 2, NR = 12;
  static V zero() { return _mm512_setzero_pd(); }
  static V load(const double* p) { return _mm512_loadu_pd(p); }
  static V set1(double x) { return _mm512_set1_pd(x); }
  static V fma(V a, double x, V acc) { return _mm512_fmadd_pd(a, _mm512_set1_pd(x), acc); }
  static void update(V& best, V& idx, V x, V t) {
    const __mmask8 gt = _mm512_cmp_pd_mask(x, best, _CMP_GT_OQ);
    best = _mm512_mask_blend_pd(gt, best, x);
    idx = _mm512_mask_blend_pd(gt, idx, t);
  }
  static void store(double* p, V x) { _mm512_storeu_pd(p, x); }
};

#include "maxsim_isa.h"

}  // namespace avx512
}  // namespace maxsim
}  // namespace hashkern
#pragma GCC pop_options
#endif
