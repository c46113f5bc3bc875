// Calibration: which Hamming kernels are fastest for one code width on this CPU, measured.
//
// Every supported set computes the distances of kQueries queries to kRows random codes (which
// stay in L1/L2, as a search's block does) and scans them at a limit about 1% of the rows meet
// (a streaming top-k's usual selectivity); candidates take turns, kReps times, and each keeps
// its best time. Where the bit-sliced search applies (codes of 16m bytes up to 1536 bits), each
// of its vector widths this CPU runs (AVX-512: 512-row planes, AVX2: 256, SSE4.1: 128) is timed
// too, its transposition of the block and its per-query cost: the one cheaper for a full query
// tile is kept, and it pays from the query count at which the per-query saving covers the
// transposition. In a search the block comes from memory: the transposition waits for that read,
// while the per-row kernels overlap it with their arithmetic, so both first passes over a block
// are timed on rows flushed from the caches, and the crossover weighs the transposition's extra
// time over the per-row kernels' (measured end to end on a Xeon of family 6 model 167, the cached
// timing put it at 13 queries at 1024 bits where the search paid from about 40; notes/search.md).
// A few milliseconds per width; any choice is exact.
//
// HASHKERN_CPU_CALIBRATION=<file> keeps the answers across processes: lines of
// "<version>\t<cpu identity>\t<width>\t<kernels>\t<sliced kernels or ->\t<sliced queries>".
// Only lines of this calibration version and this CPU's identity (vendor, family, model, vector
// flags) are used.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "hamming_kernels.h"
#include "hamming_sliced.h"

namespace hashkern {
namespace {

constexpr const char* kVersion = "hashkern-cpu-calibration-3";  // bump when the kernels change
constexpr int64_t kRows = 2048, kQueries = 8;
constexpr int kReps = 5;

std::vector<uint8_t> random_bytes(int64_t n, uint64_t seed) {
  std::vector<uint8_t> out(n);
  for (int64_t i = 0; i < n; ++i) {  // xorshift64*: fixed, so every process times the same codes
    seed ^= seed >> 12, seed ^= seed << 25, seed ^= seed >> 27;
    out[i] = static_cast<uint8_t>((seed * 0x2545F4914F6CDD1DULL) >> 56);
  }
  return out;
}

template <typename F>
double seconds(F&& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

KernelChoice choice_of(const KernelSet& set, const SlicedKernels* sliced, int64_t sliced_min_queries) {
  HammingKernels kernels = *set.kernels;
  kernels.name = set.name;
  // The scans do not depend on the width: the widest set's.
  kernels.collect_within = supported_sets().front().kernels->collect_within;
  kernels.count_within = supported_sets().front().kernels->count_within;
  return {kernels, sliced_min_queries > 0 ? sliced : nullptr, sliced_min_queries};
}

// Evicts `bytes` from every cache level, as a block a search has not read yet is.
void evict(const std::vector<uint8_t>& bytes) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  for (size_t i = 0; i < bytes.size(); i += 64) _mm_clflush(bytes.data() + i);
  _mm_mfence();
#else
  (void)bytes;
#endif
}

struct Sample {
  int64_t width;
  std::vector<uint8_t> q, db;
  int32_t limit;  // about 1% of the rows lie within it: a streaming top-k's usual selectivity
};

// Seconds per row that one query's distances take on rows evicted from the caches, beyond
// `row_seconds` (their time on cached rows): the read a search's first query of a block waits for.
double cold_read_seconds(const HammingKernels& k, const Sample& s, double row_seconds) {
  std::vector<int32_t> d(kRows);
  double best = 1e30;
  for (int rep = 0; rep < kReps; ++rep) {
    evict(s.db);
    best = std::min(best, seconds([&] { k.distances(s.q.data(), s.db.data(), s.width, kRows, d.data()); }));
  }
  return std::max(0.0, best / kRows - row_seconds);
}

// Seconds per (query, row) of each set's distances + scan, best of kReps, in turns.
std::vector<double> time_sets(const std::vector<const KernelSet*>& sets, const Sample& s) {
  std::vector<double> best(sets.size(), 1e30);
  std::vector<int32_t> d(kRows), hits(kRows);
  volatile int64_t sink = 0;
  for (int rep = 0; rep <= kReps; ++rep) {  // rep 0 warms the caches
    for (size_t c = 0; c < sets.size(); ++c) {
      const HammingKernels& k = *sets[c]->kernels;
      const double t = seconds([&] {
        for (int64_t i = 0; i < kQueries; ++i) {
          k.distances(s.q.data() + i * s.width, s.db.data(), s.width, kRows, d.data());
          sink = sink + k.collect_within(d.data(), kRows, s.limit, hits.data());
        }
      });
      if (rep > 0) best[c] = std::min(best[c], t / (kQueries * kRows));
    }
  }
  return best;
}

struct SlicedCost {
  double slice = 1e30, within = 1e30;  // seconds per row: transposition of rows read from memory, search per query
  // Per (query, row) over a full query tile.
  double per_pair() const { return slice / kSlicedTile + within; }
};

// The best times of one bit-sliced search on the sample.
SlicedCost time_sliced(const SlicedKernels& sliced, const Sample& s) {
  SlicedBlock planes;
  std::vector<SlicedQuery> queries(kQueries);
  for (int64_t i = 0; i < kQueries; ++i) slice_query(s.q.data() + i * s.width, s.width, queries[i]);
  std::vector<int32_t> d(kRows), hits(kRows);
  volatile int64_t sink = 0;
  SlicedCost best;
  for (int rep = 0; rep <= kReps; ++rep) {
    evict(s.db);
    const double ts = seconds([&] { sliced.slice_block(s.db.data(), s.width, kRows, planes); });
    const double tw = seconds([&] {
      for (int64_t i = 0; i < kQueries; ++i)
        sink = sink + sliced.within(planes, queries[i], s.q.data() + i * s.width, s.db.data(), kRows, s.limit,
                                    d.data(), hits.data());
    });
    if (rep == 0) continue;
    best.slice = std::min(best.slice, ts / kRows);
    best.within = std::min(best.within, tw / (kQueries * kRows));
  }
  // Inside a search the sliced scan shares the caches with the selection and computes each
  // hit's distance apart: it has to win by the factor its end-to-end runs showed (hamming_sliced.h).
  best.within *= sliced.search_overhead;
  return best;
}

// The query count from which a bit-sliced search of cost `cost` beats the per-row kernels, which
// take `row_seconds` per (query, row) and `read_seconds` per row for each tile of kRowTile
// queries (its first query's read of the block), or 0.
int64_t sliced_min_queries(const SlicedCost& cost, double row_seconds, double read_seconds) {
  const double row_in_tiles = row_seconds + read_seconds / kRowTile;  // per (query, row) over full tiles
  if (cost.within >= row_in_tiles) return 0;
  // Within one per-row tile both read the block once; beyond it the per-row kernels read it per tile.
  const double in_one_tile = std::max(0.0, cost.slice - read_seconds) / (row_seconds - cost.within);
  const double needed = std::ceil(cost.within < row_seconds && in_one_tile <= kRowTile
                                      ? in_one_tile
                                      : cost.slice / (row_in_tiles - cost.within));
  return needed > kSlicedTile ? 0 : std::max<int64_t>(1, static_cast<int64_t>(needed));
}

KernelChoice measure(int64_t width) {
  Sample s{width, random_bytes(kQueries * width, 0x9E3779B97F4A7C15ULL + width),
           random_bytes(kRows * width, 0xD1B54A32D192ED03ULL + width), 0};
  std::vector<int32_t> d(kRows);
  portable_kernels()->distances(s.q.data(), s.db.data(), width, kRows, d.data());
  std::nth_element(d.begin(), d.begin() + kRows / 100, d.end());
  s.limit = d[kRows / 100];
  // Distinct distance kernels only: "avx2" and "avx2-rows" share theirs; the bit-sliced
  // searches of the sets that take one.
  std::vector<const KernelSet*> sets;
  std::vector<const SlicedKernels*> sliced;
  for (const KernelSet& set : supported_sets()) {
    if (set.sliced == nullptr) sets.push_back(&set);
    if (set.sliced != nullptr && sliced_width_supported(width)) sliced.push_back(set.sliced);
  }
  const std::vector<double> t = time_sets(sets, s);
  const size_t best = std::min_element(t.begin(), t.end()) - t.begin();
  const SlicedKernels* best_sliced = nullptr;
  SlicedCost best_cost;
  for (const SlicedKernels* candidate : sliced) {
    const SlicedCost cost = time_sliced(*candidate, s);
    if (cost.per_pair() < best_cost.per_pair()) best_sliced = candidate, best_cost = cost;
  }
  if (best_sliced == nullptr) return choice_of(*sets[best], nullptr, 0);
  const double read = cold_read_seconds(*sets[best]->kernels, s, t[best]);
  return choice_of(*sets[best], best_sliced, sliced_min_queries(best_cost, t[best], read));
}

const char* cache_path() {
  const char* path = std::getenv("HASHKERN_CPU_CALIBRATION");
  return path != nullptr && *path != '\0' ? path : nullptr;
}

std::string cache_key(int64_t width) {
  return std::string(kVersion) + "\t" + cpu_identity() + "\t" + std::to_string(width) + "\t";
}

// This CPU's cached answer for `width`, if the file has a usable one.
bool read_cached(int64_t width, KernelChoice& out) {
  const char* path = cache_path();
  if (path == nullptr) return false;
  std::ifstream file(path);
  const std::string key = cache_key(width);
  std::string line;
  bool found = false;
  while (std::getline(file, line)) {  // the last matching line wins
    if (line.compare(0, key.size(), key) != 0) continue;
    std::istringstream rest(line.substr(key.size()));
    std::string name, sliced_name;
    int64_t sliced = -1;
    if (!(rest >> name >> sliced_name >> sliced) || sliced < 0 || (sliced > 0 && !sliced_width_supported(width)))
      continue;
    const SlicedKernels* search = nullptr;
    for (const KernelSet& set : supported_sets()) {
      if (set.sliced != nullptr && sliced_name == set.sliced->name) search = set.sliced;
    }
    if (sliced > 0 && search == nullptr) continue;  // a search this CPU or build lacks
    for (const KernelSet& set : supported_sets()) {
      if (name == set.name && set.sliced == nullptr) out = choice_of(set, search, sliced), found = true;
    }
  }
  return found;
}

void append_cached(int64_t width, const KernelChoice& choice) {
  const char* path = cache_path();
  if (path == nullptr) return;
  // One short line in append mode: concurrent processes do not interleave it. A cache that
  // cannot be written only costs the next process a measurement.
  if (std::FILE* f = std::fopen(path, "a")) {
    const std::string line = cache_key(width) + choice.kernels.name + "\t" +
                             (choice.sliced != nullptr ? choice.sliced->name : "-") + "\t" +
                             std::to_string(choice.sliced_min_queries) + "\n";
    std::fputs(line.c_str(), f);
    std::fclose(f);
  }
}

}  // namespace

std::string cpu_identity() {
  std::string vendor = "unknown", flags;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  int family = 0, model = 0;
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx)) {
    char name[13] = {};
    std::memcpy(name, &ebx, 4), std::memcpy(name + 4, &edx, 4), std::memcpy(name + 8, &ecx, 4);
    vendor = name;
  }
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
    family = (eax >> 8) & 0xf;
    model = (eax >> 4) & 0xf;
    if (family == 0xf) family += (eax >> 20) & 0xff;
    if (family == 0x6 || family >= 0xf) model |= ((eax >> 16) & 0xf) << 4;
  }
  __builtin_cpu_init();
#define HK_FLAG(f) \
  if (__builtin_cpu_supports(f)) flags += std::string(flags.empty() ? "" : ",") + f;
  HK_FLAG("popcnt") HK_FLAG("sse4.1") HK_FLAG("avx2") HK_FLAG("bmi") HK_FLAG("avx512f") HK_FLAG("avx512bw") HK_FLAG("avx512vl")
  HK_FLAG("avx512vpopcntdq")
#undef HK_FLAG
  return vendor + " family " + std::to_string(family) + " model " + std::to_string(model) + " flags " +
         (flags.empty() ? "none" : flags);
#else
  return vendor + " flags none";
#endif
}

KernelChoice calibrate(int64_t width, std::string& source) {
  KernelChoice choice;
  if (read_cached(width, choice)) {
    source = "cache";
    return choice;
  }
  choice = measure(width);
  source = "measured";
  append_cached(width, choice);
  return choice;
}

}  // namespace hashkern
