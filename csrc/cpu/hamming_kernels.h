// The CPU Hamming kernels of one instruction set, and the set in use.
//
// Search and distance ops work a block of database rows at a time: `distances` writes the
// block's distances to one query into a small buffer that stays in L1, and the selection takes
// the few that can matter from it with `collect_within`. Each instruction set (portable C++, AVX2, AVX-512 VPOPCNTDQ) lives in
// its own file, compiled with target attributes, so the build never needs those instructions;
// the best one the CPU has is chosen once at load time (HASHKERN_CPU_KERNELS=portable|avx2|
// avx512 overrides it, and tests switch with the op hashkern::_cpu_kernels).
#pragma once
#include <cstdint>

namespace hashkern {

struct HammingKernels {
  const char* name;
  // q [width], db [n, width] uint8 -> out [n] int32: popcount(q xor db[j]).
  void (*distances)(const uint8_t* q, const uint8_t* db, int64_t width, int64_t n, int32_t* out);
  // Every j < n with d[j] <= limit, ascending, into hits [n]; returns how many (limit may be
  // -1: none qualifies).
  int64_t (*collect_within)(const int32_t* d, int64_t n, int32_t limit, int32_t* hits);
  // How many of d [n] are <= limit.
  int64_t (*count_within)(const int32_t* d, int64_t n, int32_t limit);
};

// The kernels of each instruction set; nullptr where this build or this CPU lacks it.
const HammingKernels* portable_kernels();
const HammingKernels* avx2_kernels();
const HammingKernels* avx512_kernels();

// The kernels in use (one atomic load).
const HammingKernels& hamming_kernels();

}  // namespace hashkern
