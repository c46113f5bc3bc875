// Chooses the CPU Hamming kernels once: the widest instruction set the CPU has, unless
// HASHKERN_CPU_KERNELS names another. The op _cpu_kernels lets tests run every set this CPU
// supports in one process.
#include <torch/library.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "hamming_kernels.h"

namespace hashkern {
namespace {

// Best first.
std::vector<const HammingKernels*> supported_kernels() {
  std::vector<const HammingKernels*> all;
  for (const HammingKernels* k : {avx512_kernels(), avx2_kernels(), portable_kernels()}) {
    if (k != nullptr) all.push_back(k);
  }
  return all;
}

const HammingKernels* kernels_named(const std::string& name) {
  std::string names;
  for (const HammingKernels* k : supported_kernels()) {
    if (name == k->name) return k;
    names += names.empty() ? k->name : std::string(", ") + k->name;
  }
  TORCH_CHECK_VALUE(false, "CPU kernels '", name, "' are not available on this CPU or build; available: ", names);
}

const HammingKernels* initial_kernels() {
  const char* forced = std::getenv("HASHKERN_CPU_KERNELS");
  if (forced != nullptr && *forced != '\0') return kernels_named(forced);
  return supported_kernels().front();
}

std::atomic<const HammingKernels*>& active() {
  static std::atomic<const HammingKernels*> kernels{initial_kernels()};
  return kernels;
}

// use "" keeps the kernels, "best" picks the widest again, a name picks that set.
// Returns [the kernels now in use, then every set this CPU supports, best first].
std::vector<std::string> cpu_kernels(const std::string& use) {
  if (use == "best") {
    active().store(supported_kernels().front());
  } else if (!use.empty()) {
    active().store(kernels_named(use));
  }
  std::vector<std::string> names{hamming_kernels().name};
  for (const HammingKernels* k : supported_kernels()) names.emplace_back(k->name);
  return names;
}

}  // namespace

const HammingKernels& hamming_kernels() { return *active().load(std::memory_order_relaxed); }

// No tensor arguments: the implementation is the catch-all (CompositeImplicitAutograd) one.
TORCH_LIBRARY_IMPL(hashkern, CompositeImplicitAutograd, m) { m.impl("_cpu_kernels", &cpu_kernels); }

}  // namespace hashkern
