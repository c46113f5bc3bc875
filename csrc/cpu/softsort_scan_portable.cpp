// SoftSort scan row kernels for any x86-64 / other CPU (the compiler's baseline ISA).
#include <algorithm>
#include <cmath>
#include <vector>

#include "softsort_scan.h"

namespace hashkern {
namespace softsort {
namespace portable {
#include "softsort_scan_isa.h"
}  // namespace portable
}  // namespace softsort
}  // namespace hashkern
