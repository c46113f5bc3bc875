// MaxSim on the CPU: argument checks, the choice of instruction set (it follows the set chosen for
// the Hamming kernels: HASHKERN_CPU_KERNELS, or hashkern::_cpu_kernels in tests), the query
// packing, the split of documents over OpenMP threads, and the backward.
//
// Backward of score[n, j] = scale[n] sum_i max_t dot(q[n, i], tok_t) with the forward's argmax a:
//   dq[n, i]      = scale[n] sum_j grad[n, j] tok[offsets[j] + a[j, n, i]]          (j in order)
//   dtok[t]       = sum over (n, i) with offsets[j] + a[j, n, i] = t of grad[n, j] scale[n] q[n, i]
// Each dq row is summed by one thread over j in order, each document's token gradients by one
// thread over (n, i) in order: deterministic, no atomics, the same whichever forward kernel ran.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "hamming_kernels.h"
#include "maxsim.h"

namespace hashkern {
namespace maxsim {
namespace {

enum class Isa { portable, avx2, avx512 };

Isa active_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool avx512f = __builtin_cpu_supports("avx512f");
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const int bits = hamming_kernels().vector_bits;  // the Hamming set's vectors: 128-bit sets run portable
  if (bits >= 512 && avx512f) return Isa::avx512;
  if (bits >= 256 && avx2) return Isa::avx2;
#endif
  return Isa::portable;
}

template <typename T>
int panel_of(Isa isa) {
  const bool dbl = sizeof(T) == 8;
#if defined(__x86_64__) && defined(__GNUC__)
  if (isa == Isa::avx512) return avx512::panel_rows(dbl);
  if (isa == Isa::avx2) return avx2::panel_rows(dbl);
#endif
  return portable::panel_rows(dbl);
}

template <typename T>
void run_docs(Isa isa, const Problem<T>& p, int64_t b, int64_t e, T* rows, T* idx) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (isa == Isa::avx512) return avx512::forward_docs(p, b, e, rows, idx);
  if (isa == Isa::avx2) return avx2::forward_docs(p, b, e, rows, idx);
#endif
  portable::forward_docs(p, b, e, rows, idx);
}

struct Shapes {
  int64_t nq, Lq, D, nd, T, group_rows;
};

// Checks what the Python wrapper guarantees, so that a direct torch.ops call cannot read out of bounds.
Shapes check_problem(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& tokens,
                     const at::Tensor& offsets, int64_t group) {
  TORCH_CHECK_TYPE(q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble,
                   "q must be float32 or float64, got ", q.scalar_type());
  TORCH_CHECK_VALUE(q.dim() == 3 && q.size(0) >= 1 && q.size(1) >= 1 && q.size(2) >= 1 && q.is_contiguous(),
                    "q must be contiguous [nq, Lq, D] with every size >= 1, got ", q.sizes());
  TORCH_CHECK_TYPE(tokens.scalar_type() == q.scalar_type() && scale.scalar_type() == q.scalar_type(),
                   "tokens and scale must have q's dtype");
  TORCH_CHECK_VALUE(tokens.dim() == 2 && tokens.size(1) == q.size(2) && tokens.is_contiguous(),
                    "tokens must be contiguous [T, D] with q's D");
  TORCH_CHECK_VALUE(scale.dim() == 1 && scale.size(0) == q.size(0) && scale.is_contiguous(), "scale must be [nq]");
  TORCH_CHECK_TYPE(offsets.scalar_type() == at::kLong, "offsets must be int64");
  TORCH_CHECK_VALUE(offsets.dim() == 1 && offsets.size(0) >= 2 && offsets.is_contiguous(),
                    "offsets must be contiguous [nd + 1], nd >= 1");
  const int64_t nd = offsets.size(0) - 1, nq = q.size(0), Lq = q.size(1);
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  TORCH_CHECK_VALUE(off[0] == 0 && off[nd] == tokens.size(0), "offsets must start at 0 and end at T = ",
                    tokens.size(0));
  // token indices travel through the vector units as T values: exact below 2^24 (float) / 2^53 (double)
  const int64_t longest = q.scalar_type() == at::kFloat ? (int64_t(1) << 24) : (int64_t(1) << 53);
  for (int64_t j = 0; j < nd; ++j) {
    TORCH_CHECK_VALUE(off[j + 1] > off[j] && off[j + 1] - off[j] <= longest,
                      "every document needs 1 to ", longest, " tokens; document ", j, " has ", off[j + 1] - off[j]);
  }
  TORCH_CHECK_VALUE(group >= 0, "group must be >= 0");
  TORCH_CHECK_VALUE(group == 0 || nd == nq * group, "paired scoring needs nd = nq * group documents");
  return {nq, Lq, q.size(2), nd, tokens.size(0), group > 0 ? Lq : nq * Lq};
}

void check_mask(const char* name, const std::optional<at::Tensor>& mask, int64_t numel) {
  if (!mask) return;
  TORCH_CHECK_TYPE(mask->scalar_type() == at::kBool, name, " must be bool");
  TORCH_CHECK_VALUE(mask->numel() == numel && mask->is_contiguous(), name, " must be contiguous with ", numel,
                    " entries");
}

void check_buffer(const char* name, const at::Tensor& t, at::IntArrayRef shape, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(t.sizes() == shape && t.is_contiguous(), name, " must be contiguous ", shape, ", got ",
                    t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", t.scalar_type());
}

std::vector<int64_t> score_shape(const Shapes& s, int64_t group) {
  return group > 0 ? std::vector<int64_t>{s.nd} : std::vector<int64_t>{s.nq, s.nd};
}

// [groups, panels, D, P]: rows of each group transposed, zero-padded to whole panels.
template <typename T>
std::vector<T> pack_queries(const T* q, const Shapes& s, int64_t groups, int64_t panels, int P) {
  std::vector<T> pack(groups * panels * s.D * P, T(0));
  at::parallel_for(0, groups * panels, std::max<int64_t>(1, (int64_t(1) << 16) / (s.D * P)), [&](int64_t b, int64_t e) {
    for (int64_t gp = b; gp < e; ++gp) {
      const int64_t g = gp / panels, first = (gp % panels) * P;
      T* out = pack.data() + gp * s.D * P;
      for (int64_t r = first; r < std::min<int64_t>(first + P, s.group_rows); ++r) {
        const T* row = q + (g * s.group_rows + r) * s.D;
        for (int64_t k = 0; k < s.D; ++k) out[k * P + (r - first)] = row[k];
      }
    }
  });
  return pack;
}

// Documents over OpenMP threads, a few per work item handed out dynamically (lengths may vary);
// each document is scored by one thread, so the result does not depend on the split.
template <typename T>
void forward_parallel(Isa isa, const Problem<T>& p, int64_t scratch) {
  // ~1M multiply-adds per thread at least: below that, waking threads costs more than it saves
  const int64_t work = p.offsets[p.nd] * p.group_rows * p.D, per_thread = int64_t(1) << 20;
  const int threads = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>({at::get_num_threads(), p.nd, work / per_thread})));
  const int64_t chunk = std::max<int64_t>(1, p.nd / (16 * threads));
  const int64_t items = (p.nd + chunk - 1) / chunk;
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> rows(scratch), idx(scratch);
#pragma omp for schedule(dynamic, 1)
    for (int64_t c = 0; c < items; ++c) {
      run_docs<T>(isa, p, c * chunk, std::min(p.nd, (c + 1) * chunk), rows.data(), idx.data());
    }
  }
}

void maxsim_fwd_cpu(const at::Tensor& q, const std::optional<at::Tensor>& q_mask, const at::Tensor& scale,
                    const at::Tensor& tokens, const at::Tensor& offsets, const std::optional<at::Tensor>& tok_mask,
                    int64_t group, at::Tensor& scores, at::Tensor& argmax) {
  const Shapes s = check_problem(q, scale, tokens, offsets, group);
  check_mask("q_mask", q_mask, s.nq * s.Lq);
  check_mask("token_mask", tok_mask, s.T);
  check_buffer("scores", scores, score_shape(s, group), q.scalar_type());
  const bool with_argmax = argmax.numel() > 0;
  if (with_argmax) check_buffer("argmax", argmax, {s.nd, s.group_rows}, at::kInt);
  const Isa isa = active_isa();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "maxsim_fwd", [&] {
    const int P = panel_of<scalar_t>(isa);
    const int64_t groups = group > 0 ? s.nq : 1, panels = (s.group_rows + P - 1) / P;
    const std::vector<scalar_t> pack = pack_queries(q.const_data_ptr<scalar_t>(), s, groups, panels, P);
    const Problem<scalar_t> p{pack.data(), panels, s.group_rows, s.Lq, s.D,
                              q_mask ? reinterpret_cast<const uint8_t*>(q_mask->const_data_ptr<bool>()) : nullptr,
                              scale.const_data_ptr<scalar_t>(), tokens.const_data_ptr<scalar_t>(),
                              offsets.const_data_ptr<int64_t>(),
                              tok_mask ? reinterpret_cast<const uint8_t*>(tok_mask->const_data_ptr<bool>()) : nullptr,
                              s.nd, group, scores.data_ptr<scalar_t>(),
                              with_argmax ? argmax.data_ptr<int32_t>() : nullptr};
    forward_parallel<scalar_t>(isa, p, panels * P);
  });
}

void maxsim_bwd_cpu(const at::Tensor& grad, const at::Tensor& q, const at::Tensor& scale, const at::Tensor& tokens,
                    const at::Tensor& offsets, int64_t group, const at::Tensor& argmax, at::Tensor& dq,
                    at::Tensor& dtokens) {
  const Shapes s = check_problem(q, scale, tokens, offsets, group);
  check_buffer("grad", grad, score_shape(s, group), q.scalar_type());
  check_buffer("argmax", argmax, {s.nd, s.group_rows}, at::kInt);
  check_buffer("dq", dq, q.sizes(), q.scalar_type());
  check_buffer("dtokens", dtokens, tokens.sizes(), q.scalar_type());
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  const int32_t* am = argmax.const_data_ptr<int32_t>();
  bool in_range = true;
  for (int64_t j = 0; j < s.nd; ++j) {
    for (int64_t r = 0; r < s.group_rows; ++r) {
      const int32_t a = am[j * s.group_rows + r];
      in_range &= a >= -1 && a < off[j + 1] - off[j];
    }
  }
  TORCH_CHECK_VALUE(in_range, "argmax entries must lie in [-1, document length)");
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "maxsim_bwd", [&] {
    using T = scalar_t;
    const T *g = grad.const_data_ptr<T>(), *qd = q.const_data_ptr<T>(), *sc = scale.const_data_ptr<T>(),
            *tok = tokens.const_data_ptr<T>();
    T *dqd = dq.data_ptr<T>(), *dtd = dtokens.data_ptr<T>();
    const int64_t D = s.D, Lq = s.Lq, docs_per_query = group > 0 ? group : s.nd;
    // grains of ~64K multiply-adds: small problems stay on one thread
    const int64_t grain_q = std::max<int64_t>(1, (int64_t(1) << 16) / (docs_per_query * Lq * D));
    const int64_t grain_d = std::max<int64_t>(1, (int64_t(1) << 16) / (s.group_rows * D));
    at::parallel_for(0, s.nq, grain_q, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        T* out = dqd + n * Lq * D;
        std::fill(out, out + Lq * D, T(0));
        const int64_t local = group > 0 ? 0 : n * Lq;  // the query's first row within its group
        for (int64_t k = 0; k < docs_per_query; ++k) {
          const int64_t j = group > 0 ? n * group + k : k;
          const T w = g[group > 0 ? j : n * s.nd + j] * sc[n];
          for (int64_t i = 0; i < Lq; ++i) {
            const int32_t a = am[j * s.group_rows + local + i];
            if (a < 0) continue;
            const T* x = tok + (off[j] + a) * D;
            T* o = out + i * D;
            for (int64_t d = 0; d < D; ++d) o[d] += w * x[d];
          }
        }
      }
    });
    at::parallel_for(0, s.nd, grain_d, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) {
        std::fill(dtd + off[j] * D, dtd + off[j + 1] * D, T(0));
        const int64_t first = group > 0 ? j / group : 0, last = group > 0 ? first + 1 : s.nq;
        for (int64_t n = first; n < last; ++n) {
          const T w = g[group > 0 ? j : n * s.nd + j] * sc[n];
          const int64_t local = group > 0 ? 0 : n * Lq;
          for (int64_t i = 0; i < Lq; ++i) {
            const int32_t a = am[j * s.group_rows + local + i];
            if (a < 0) continue;
            const T* x = qd + (n * Lq + i) * D;
            T* o = dtd + (off[j] + a) * D;
            for (int64_t d = 0; d < D; ++d) o[d] += w * x[d];
          }
        }
      }
    });
  });
}

// Which instruction set the MaxSim kernels run now ("portable", "avx2" or "avx512").
std::string maxsim_isa() {
  switch (active_isa()) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "portable";
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(hashkern, CompositeImplicitAutograd, m) { m.impl("_maxsim_isa", &maxsim_isa); }

TORCH_LIBRARY_IMPL(hashkern, CPU, m) {
  m.impl("maxsim", &maxsim_fwd_cpu);
  m.impl("maxsim_backward", &maxsim_bwd_cpu);
}

}  // namespace maxsim
}  // namespace hashkern
