// MaxSim row kernels for any CPU (the compiler's baseline instruction set): one lane per "vector",
// std::fma for the same single rounding the vector units give.
#include <cmath>
#include <cstdint>
#include <limits>

#include "maxsim.h"

namespace hashkern {
namespace maxsim {
namespace portable {

template <typename T>
struct Ops {
  using V = T;
  static constexpr int W = 1, MV = 4, NR = 4;
  static V zero() { return T(0); }
  static V load(const T* p) { return *p; }
  static V set1(T x) { return x; }
  static V fma(V a, T x, V acc) { return std::fma(a, x, acc); }
  static void update(V& best, V& idx, V x, V t) {
    if (x > best) {
      best = x;
      idx = t;
    }
  }
  static void store(T* p, V x) { *p = x; }
};

#include "maxsim_isa.h"

}  // namespace portable
}  // namespace maxsim
}  // namespace hashkern
