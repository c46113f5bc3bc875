// SoftSort gather and sorted cosine by Laplace scans on the CPU: argument checks, the choice
// of instruction set (once per call, from the CPU's features), the grouped-kernel policy and the
// split of rows over threads.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <atomic>
#include <string>
#include <vector>

#include "hamming_kernels.h"
#include "softsort_scan.h"

namespace hashkern {
namespace softsort {
namespace {

// The scans follow the instruction set chosen for the Hamming kernels (HASHKERN_CPU_KERNELS, or
// hashkern::_cpu_kernels in tests): sets of 256-bit vectors or wider run the AVX2 + FMA scans
// where the CPU has them, "portable" and "sse4" the portable ones.
bool use_avx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has && hamming_kernels().vector_bits >= 256;
#else
  return false;
#endif
}

std::atomic<int>& groups_policy() {
  static std::atomic<int> policy{kGroupsAuto};
  return policy;
}

// Tests run every row through one kernel: "always" the grouped one, "never" the position scans,
// "auto" chooses per row; "" keeps the policy. Returns the policy now in use.
std::string softsort_groups(const std::string& use) {
  static const char* names[] = {"auto", "always", "never"};
  if (!use.empty()) {
    int chosen = -1;
    for (int i = 0; i < 3; ++i) chosen = use == names[i] ? i : chosen;
    TORCH_CHECK_VALUE(chosen >= 0, "use must be 'auto', 'always' or 'never', got '", use, "'");
    groups_policy().store(chosen);
  }
  return names[groups_policy().load()];
}

void check_problem(const at::Tensor& q, const at::Tensor& idx, const at::Tensor& v, double tau,
                   const std::optional<at::Tensor>& u) {
  TORCH_CHECK_TYPE(q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble,
                   "q must be float32 or float64, got ", q.scalar_type());
  TORCH_CHECK_VALUE(q.dim() == 2 && q.size(1) >= 1 && q.is_contiguous(), "q must be contiguous [b, n], n >= 1");
  TORCH_CHECK_TYPE(idx.scalar_type() == at::kLong, "idx must be int64");
  TORCH_CHECK_VALUE(idx.sizes() == q.sizes() && idx.is_contiguous(), "idx must be contiguous, shaped like q");
  TORCH_CHECK_TYPE(v.scalar_type() == q.scalar_type(), "v must have q's dtype");
  TORCH_CHECK_VALUE(v.dim() == 3 && (v.size(0) == 1 || v.size(0) == q.size(0)) && v.size(1) == q.size(1) &&
                        v.size(2) >= 1 && v.is_contiguous(),
                    "v must be contiguous [1 or b, n, d], d >= 1");
  TORCH_CHECK_VALUE(tau > 0, "tau must be > 0, got ", tau);
  if (u) {
    TORCH_CHECK_VALUE(u->scalar_type() == q.scalar_type() && u->dim() == 2 && u->size(0) == q.size(0) &&
                          u->size(1) == v.size(2) && u->is_contiguous(),
                      "u must be contiguous [b, d] with q's dtype");
    TORCH_CHECK_VALUE(v.size(0) == 1, "the sorted cosine takes shared values v [1, n, d]");
  }
  // idx must index into [0, n): checked so that a direct torch.ops call cannot read out of bounds.
  const int64_t* ip = idx.const_data_ptr<int64_t>();
  const int64_t count = idx.numel(), n = q.size(1);
  bool in_range = true;
  for (int64_t i = 0; i < count; ++i) in_range &= static_cast<uint64_t>(ip[i]) < static_cast<uint64_t>(n);
  TORCH_CHECK_VALUE(in_range, "idx entries must lie in [0, n)");
}

void check_like(const char* name, const at::Tensor& t, at::IntArrayRef shape, const at::Tensor& q) {
  TORCH_CHECK_VALUE(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == q.scalar_type(), name, " must have q's dtype");
  TORCH_CHECK_VALUE(t.is_contiguous(), name, " must be contiguous");
}

template <typename T>
ScanProblem<T> problem(const at::Tensor& q, const at::Tensor& idx, const at::Tensor& v, double tau,
                       const std::optional<at::Tensor>& u, double eps) {
  return ScanProblem<T>{q.const_data_ptr<T>(), idx.const_data_ptr<int64_t>(), v.const_data_ptr<T>(),
                        q.size(0), q.size(1), v.size(2), v.size(0) == 1, tau,
                        u ? u->const_data_ptr<T>() : nullptr, eps, groups_policy().load()};
}

// Fixed row blocks, one per thread: the result depends on the thread count, not on scheduling.
template <typename F>
void for_row_blocks(int64_t rows, F&& body) {
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(rows, at::get_num_threads()));
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) body(blk, rows * blk / blocks, rows * (blk + 1) / blocks);
  });
}

void softsort_scan_fwd_cpu(const at::Tensor& q, const at::Tensor& idx, const at::Tensor& v, double tau,
                           const std::optional<at::Tensor>& u, double eps, at::Tensor& out, at::Tensor& norms) {
  check_problem(q, idx, v, tau, u);
  const int64_t b = q.size(0), n = q.size(1), d = v.size(2);
  if (u) {
    check_like("out", out, {b, n}, q);
    check_like("norms", norms, {b, n}, q);
  } else {
    check_like("out", out, {b, n, d}, q);
  }
  if (b == 0) return;
  const bool avx2 = use_avx2();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "softsort_scan_fwd", [&] {
    const auto p = problem<scalar_t>(q, idx, v, tau, u, eps);
    ScanForwardOut<scalar_t> o{u ? nullptr : out.data_ptr<scalar_t>(), u ? out.data_ptr<scalar_t>() : nullptr,
                               u ? norms.data_ptr<scalar_t>() : nullptr};
    for_row_blocks(b, [&](int64_t, int64_t r0, int64_t r1) {
      avx2 ? avx2::forward_rows(p, o, r0, r1) : portable::forward_rows(p, o, r0, r1);
    });
  });
}

void softsort_scan_bwd_cpu(const at::Tensor& q, const at::Tensor& idx, const at::Tensor& v, double tau,
                           const std::optional<at::Tensor>& u, double eps, const at::Tensor& grad,
                           const std::optional<at::Tensor>& c, const std::optional<at::Tensor>& norms,
                           at::Tensor& ds, at::Tensor& dv, at::Tensor& du) {
  check_problem(q, idx, v, tau, u);
  const int64_t b = q.size(0), n = q.size(1), d = v.size(2);
  if (u) {
    TORCH_CHECK_VALUE(c.has_value() && norms.has_value(), "the cosine backward needs the forward's c and norms");
    check_like("grad", grad, {b, n}, q);
    check_like("c", *c, {b, n}, q);
    check_like("norms", *norms, {b, n}, q);
    check_like("du", du, {b, d}, q);
  } else {
    check_like("grad", grad, {b, n, d}, q);
  }
  check_like("ds", ds, {b, n}, q);
  check_like("dv", dv, v.sizes(), q);
  const bool shared = v.size(0) == 1;
  dv.zero_();
  if (u) du.zero_();
  if (b == 0) return;
  const bool avx2 = use_avx2();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "softsort_scan_bwd", [&] {
    const auto p = problem<scalar_t>(q, idx, v, tau, u, eps);
    const ScanBackwardIn<scalar_t> in{grad.const_data_ptr<scalar_t>(), u ? c->const_data_ptr<scalar_t>() : nullptr,
                                      u ? norms->const_data_ptr<scalar_t>() : nullptr};
    // Shared v: each block accumulates its own dv, summed in block order afterwards.
    const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(b, at::get_num_threads()));
    std::vector<scalar_t> partial(shared ? blocks * n * d : 0, scalar_t(0));
    for_row_blocks(b, [&](int64_t blk, int64_t r0, int64_t r1) {
      scalar_t* dv_blk = shared ? partial.data() + blk * n * d : dv.data_ptr<scalar_t>();
      const ScanBackwardOut<scalar_t> o{ds.data_ptr<scalar_t>(), dv_blk, u ? du.data_ptr<scalar_t>() : nullptr};
      avx2 ? avx2::backward_rows(p, in, o, r0, r1) : portable::backward_rows(p, in, o, r0, r1);
    });
    if (shared) {
      scalar_t* out = dv.data_ptr<scalar_t>();
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const scalar_t* part = partial.data() + blk * n * d;
        at::parallel_for(0, n * d, 1 << 14, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) out[i] += part[i];
        });
      }
    }
  });
}

}  // namespace

// No tensor arguments: the implementation is the catch-all (CompositeImplicitAutograd) one.
TORCH_LIBRARY_IMPL(hashkern, CompositeImplicitAutograd, m) { m.impl("_softsort_groups", &softsort_groups); }

TORCH_LIBRARY_IMPL(hashkern, CPU, m) {
  m.impl("softsort_scan_fwd", &softsort_scan_fwd_cpu);
  m.impl("softsort_scan_bwd", &softsort_scan_bwd_cpu);
}

}  // namespace softsort
}  // namespace hashkern
