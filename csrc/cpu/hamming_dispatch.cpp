// Which CPU Hamming kernels run: by default, per code width, the fastest measured on this
// machine (hamming_calibrate.cpp), measured at the width's first use and kept for the process;
// HASHKERN_CPU_KERNELS=<set> forces one set for every width. The op _cpu_kernels lets tests run
// every set this CPU supports in one process, _cpu_kernel_choice reports the choice per width.
#include <torch/library.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "hamming_kernels.h"
#include "hamming_sliced.h"

namespace hashkern {
namespace {

// Queries sharing a block from which a forced "avx512", "avx2" or "sse4" set takes its bit-sliced
// search (calibration measures it instead): fewer pay the block's transposition for too few queries.
constexpr int64_t kForcedSlicedMinQueries = 8;

const KernelSet* set_named(const std::string& name) {
  std::string names;
  for (const KernelSet& s : supported_sets()) {
    if (name == s.name) return &s;
    names += std::string(names.empty() ? "" : ", ") + s.name;
  }
  TORCH_CHECK_VALUE(false, "CPU kernels '", name, "' are not available on this CPU or build; available: auto, ",
                    names);
}

// nullptr: chosen by measurement ("auto").
const KernelSet* initial_set() {
  const char* forced = std::getenv("HASHKERN_CPU_KERNELS");
  if (forced == nullptr || *forced == '\0' || std::string(forced) == "auto") return nullptr;
  return set_named(forced);
}

std::atomic<const KernelSet*>& forced_set() {
  static std::atomic<const KernelSet*> set{initial_set()};
  return set;
}

struct Measured {
  KernelChoice choice;
  std::string source;
};

std::mutex& measured_mutex() {
  static std::mutex m;
  return m;
}

// Calibrated widths, kept for the process.
const Measured& measured(int64_t width) {
  static std::unordered_map<int64_t, Measured> cache;
  std::lock_guard<std::mutex> lock(measured_mutex());
  auto it = cache.find(width);
  if (it == cache.end()) {
    Measured m;
    m.choice = calibrate(width, m.source);
    it = cache.emplace(width, std::move(m)).first;
  }
  return it->second;
}

KernelChoice forced_choice(const KernelSet& set, int64_t width) {
  HammingKernels kernels = *set.kernels;
  kernels.name = set.name;
  if (set.sliced == nullptr || !sliced_width_supported(width)) return {kernels, nullptr, 0};
  return {kernels, set.sliced, kForcedSlicedMinQueries};
}

// use "" keeps the kernels, "auto" (or "best") chooses them by measurement, a name forces that set.
// Returns [the mode now in use, then every set this CPU supports, widest first].
std::vector<std::string> cpu_kernels(const std::string& use) {
  if (use == "auto" || use == "best") {
    forced_set().store(nullptr);
  } else if (!use.empty()) {
    forced_set().store(set_named(use));
  }
  const KernelSet* forced = forced_set().load();
  std::vector<std::string> names{forced ? forced->name : "auto"};
  for (const KernelSet& s : supported_sets()) names.emplace_back(s.name);
  return names;
}

// [kernels, the query count from which the bit-sliced search runs (0: never), where the choice
// came from: "forced", "measured" or "cache", the bit-sliced search's instruction set ("" when
// none)] for codes of `width` bytes.
std::vector<std::string> cpu_kernel_choice(int64_t width) {
  TORCH_CHECK_VALUE(width >= 1, "width must be at least 1 byte, got ", width);
  const KernelSet* forced = forced_set().load();
  const Measured m = forced != nullptr ? Measured{forced_choice(*forced, width), "forced"} : measured(width);
  return {m.choice.kernels.name, std::to_string(m.choice.sliced_min_queries), m.source,
          m.choice.sliced != nullptr ? m.choice.sliced->name : ""};
}

}  // namespace

const std::vector<KernelSet>& supported_sets() {
  static const std::vector<KernelSet> sets = [] {
    std::vector<KernelSet> all;
    if (avx512_kernels() != nullptr) {
      all.push_back({avx512_kernels(), "avx512", sliced_avx512_kernels()});
      all.push_back({avx512_kernels(), "avx512-rows", nullptr});
    }
    if (avx2_kernels() != nullptr) {
      all.push_back({avx2_kernels(), "avx2", sliced_avx2_kernels()});
      all.push_back({avx2_kernels(), "avx2-rows", nullptr});
    }
    if (sse4_kernels() != nullptr) {
      all.push_back({sse4_kernels(), "sse4", sliced_sse4_kernels()});
      all.push_back({sse4_kernels(), "sse4-rows", nullptr});
    }
    all.push_back({portable_kernels(), "portable", nullptr});
    return all;
  }();
  return sets;
}

KernelChoice kernel_choice(int64_t width) {
  const KernelSet* forced = forced_set().load(std::memory_order_relaxed);
  return forced != nullptr ? forced_choice(*forced, width) : measured(width).choice;
}

const HammingKernels& hamming_kernels() {
  const KernelSet* forced = forced_set().load(std::memory_order_relaxed);
  return *(forced != nullptr ? forced : &supported_sets().front())->kernels;
}

// No tensor arguments: the implementations are the catch-all (CompositeImplicitAutograd) ones.
TORCH_LIBRARY_IMPL(hashkern, CompositeImplicitAutograd, m) {
  m.impl("_cpu_kernels", &cpu_kernels);
  m.impl("_cpu_kernel_choice", &cpu_kernel_choice);
  m.impl("_cpu_identity", [] { return cpu_identity(); });
}

}  // namespace hashkern
