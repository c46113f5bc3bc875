// The CPU Hamming kernels of one instruction set, and the choice made for each code width.
//
// Search and distance ops work a block of database rows at a time: `distances` writes the
// block's distances to one query into a small buffer that stays in L1, and the selection takes
// the few that can matter from it with `collect_within`. Each instruction set (portable C++,
// SSE4.1, AVX2, AVX-512 VPOPCNTDQ) lives in its own file, compiled with target attributes, so
// the build never needs those instructions. Which one runs is decided per code width by timing the
// candidates this CPU supports at the width's first use (hamming_calibrate.cpp), unless
// HASHKERN_CPU_KERNELS (or the op hashkern::_cpu_kernels, which tests use) forces one set.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace hashkern {

struct HammingKernels {
  const char* name;
  // Its vectors' width in bits (64: scalar): the other ops' kernels follow it (maxsim, soft sort
  // scans: portable below 256, AVX2 from 256, AVX-512 at 512, where the CPU has them).
  int vector_bits;
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
const HammingKernels* sse4_kernels();
const HammingKernels* avx2_kernels();
const HammingKernels* avx512_kernels();

struct SlicedKernels;

// What runs for codes of one width: the distance kernels, and which bit-sliced search
// (hamming_sliced.h) takes over from how many queries sharing a block of rows (0: never).
struct KernelChoice {
  HammingKernels kernels;
  const SlicedKernels* sliced = nullptr;
  int64_t sliced_min_queries = 0;
};

// The choice for codes of `width` bytes: the forced set, or the measured one (cached).
KernelChoice kernel_choice(int64_t width);

// The forced set, or the widest this CPU has when the kernels are chosen by measurement (the
// soft sort's scans follow its vector_bits).
const HammingKernels& hamming_kernels();

// Every set this CPU and build support, widest first. Each entry is a set of kernels plus the
// bit-sliced search it takes, if any ("avx512", "avx2" and "sse4" take theirs; "avx512-rows",
// "avx2-rows" and "sse4-rows" are the same per-row kernels without it).
struct KernelSet {
  const HammingKernels* kernels;
  const char* name;
  const SlicedKernels* sliced;
};
const std::vector<KernelSet>& supported_sets();

// Calibration (hamming_calibrate.cpp): times every supported set on a sample of `width`-byte
// codes and returns the fastest, with the bit-sliced search that is fastest for this width and
// the query count from which it wins.
// `source` says where the answer came from: "measured", or "cache" (the file named by
// HASHKERN_CPU_CALIBRATION, for this CPU; a measured answer is appended to it).
KernelChoice calibrate(int64_t width, std::string& source);

// "<vendor> family <f> model <m> flags <the vector flags the kernels use>".
std::string cpu_identity();

}  // namespace hashkern
