// Bit-sliced Hamming search for codes of 16m bytes up to 1536 bits, used by the streaming top-k
// where calibration measured it faster than the per-row kernels.
//
// A block of database rows is transposed into bit planes, one vector of rows at a time (512 rows
// with AVX-512, 256 with AVX2, 128 with SSE): bit i of plane b is bit b of row i. For a query q with set bits B,
// the distances of all rows of a group are
//   d = w + |q| - 2 S,   w = Σ_b plane_b (each row's weight),   S = Σ_{b in B} plane_b,
// or d = 2 S0 - w + |q| with S0 over q's zero bits when those are fewer, summed bit-sliced with
// carry-save adders: about min(|B|, bits - |B|) / 16 * 85 logic operations per group of rows
// (AVX-512's three-input logic: about 40 per 512 rows),
// where a per-row popcount costs several instructions per row and 64 bits. The rows with
// d <= limit come out as a bit mask, and only they get their exact distance. The transposition
// is shared by the queries of a tile. Exact: the mask is computed in integer logic.
// The search body is one template over the vector type (hamming_sliced_body.h), compiled once
// per instruction set (hamming_sliced_avx2.cpp, hamming_sliced_sse4.cpp); AVX-512 has its own
// unit (hamming_sliced_avx512.cpp: ternary logic, GFNI transposition).
#pragma once
#include <cstdint>
#include <vector>

namespace hashkern {

// The widest codes it takes, in bytes.
constexpr int64_t kMaxSlicedWidth = 192;

// Planes of a block of database rows of `width` bytes (16m, up to kMaxSlicedWidth); reused
// block after block.
struct SlicedBlock {
  int64_t width = 0, groups = 0;
  std::vector<uint64_t> planes;   // [groups][8 * width + 1][words]: a vector of rows per group, then a zero plane
  std::vector<uint64_t> weights;  // [groups][9 or 11][words]: each row's popcount, bit-sliced
};

// The bits a query's distances are summed over, ascending: its one bits, or its zero bits when
// those are fewer (complement), padded with the zero plane's index; weight = |q|.
struct SlicedQuery {
  std::vector<uint16_t> bits;
  int32_t weight = 0;
  bool complement = false;
};

// Queries that share one transposed block (the search's query tile when it slices).
constexpr int64_t kSlicedTile = 128;
// Queries that share one block of rows in the per-row search (its query tile).
constexpr int64_t kRowTile = 32;

// The bit-sliced search of one vector width.
struct SlicedKernels {
  const char* name;    // the instruction set: "avx512", "avx2" or "sse4" (512-, 256-, 128-row planes)
  int64_t group_rows;  // rows per plane vector
  // Its cost per pair inside a search over its cost measured alone, as calibration assumes it:
  // measured end to end on a Xeon of family 6 model 167 (N = 10^6, nq = 1000 and 16, one core),
  // AVX2 gained about 1.5x less on the per-row kernels than measured alone, AVX-512 no less.
  double search_overhead;
  // Transposes rows [0, len) of `width` bytes (len <= a search block) into `out`.
  void (*slice_block)(const uint8_t* rows, int64_t width, int64_t len, SlicedBlock& out);
  // Every j < len with popcount(q xor rows[j]) <= limit, ascending, into hits; d[j] is set for
  // each hit. Returns how many (limit < 0: none).
  int64_t (*within)(const SlicedBlock& block, const SlicedQuery& query, const uint8_t* q, const uint8_t* rows,
                    int64_t len, int32_t limit, int32_t* d, int32_t* hits);
};

// Each vector width's search; nullptr where this build or this CPU lacks it.
const SlicedKernels* sliced_avx2_kernels();
const SlicedKernels* sliced_sse4_kernels();
const SlicedKernels* sliced_avx512_kernels();

// Whether codes of `width` bytes can take the bit-sliced search (16m bytes, at most 192).
bool sliced_width_supported(int64_t width);

void slice_query(const uint8_t* q, int64_t width, SlicedQuery& out);

// 0, 1, 2, ..., 8 * kMaxSlicedWidth - 1: the index list that sums every plane (a row's weight).
const uint16_t* every_plane_index();

}  // namespace hashkern
