// SoftSort gather by Laplace scans on the CPU: the problem description shared by the ISA
// variants (softsort_scan_isa.h, compiled once per instruction set) and the op glue.
//
// Row i of q is sorted descending (q[i, r] = s[i, idx[i, r]]); Zσ_r = v[idx[i, r]]. SoftSort
// with the L1 distance gathers E_r = Σ_t K[r,t] Zσ_t / Σ_t K[r,t], K[r,t] = exp(-|q_r - q_t|/τ),
// which in sorted order splits into a left scan A_r = γ_r A_{r-1} + Zσ_r and a right scan
// B_r = γ_{r+1} (B_{r+1} + Zσ_{r+1}), γ_r = exp(-(q_{r-1} - q_r)/τ) <= 1: O(n d) per row.
#pragma once
#include <cstdint>

namespace hashkern {
namespace softsort {

// Rows with few distinct values (Hamming similarities) run the grouped kernels
// (softsort_groups_isa.h): automatically when g <= n / 2 groups (measured: from there on it is the
// faster of the two) and the [g, d] tables stay small;
// tests force either kernel on every row.
constexpr int kGroupsAuto = 0, kGroupsAlways = 1, kGroupsNever = 2;
constexpr int64_t kGroupTableElements = int64_t(1) << 16;

template <typename T>
struct ScanProblem {
  const T* q;           // [b, n], each row sorted descending
  const int64_t* idx;   // [b, n], the stable sort permutation of each row of s
  const T* v;           // [bv, n, d] values, bv = 1 (shared by all rows) or b
  int64_t b, n, d;
  bool shared_v;        // bv == 1
  double tau;           // > 0
  const T* u;           // [b, d] unit anchor vectors (sorted cosine), or nullptr (gather)
  double eps;           // norm clamp of the cosine
  int groups_policy;    // kGroupsAuto, kGroupsAlways or kGroupsNever
};

template <typename T>
struct ScanForwardOut {
  T* e;      // gather: [b, n, d]
  T* c;      // cosine: [b, n], cos(E_r, u)
  T* norms;  // cosine: [b, n], |E_r| before the eps clamp
};

template <typename T>
struct ScanBackwardIn {
  const T* grad;   // gather: dE [b, n, d] (rank order); cosine: dc [b, n]
  const T* c;      // cosine: the forward's c [b, n]
  const T* norms;  // cosine: the forward's norms [b, n]
};

template <typename T>
struct ScanBackwardOut {
  T* ds;  // [b, n], in the unsorted order of s
  T* dv;  // this chunk's dv: [n, d] (shared v, the caller sums chunks) or [b, n, d]
  T* du;  // cosine: [b, d]
};

// Rows [row_begin, row_end) of the problem; one call per worker, which owns its scratch.
#define HASHKERN_SOFTSORT_SCAN_DECLARE(ns)                                                       \
  namespace ns {                                                                                 \
  void forward_rows(const ScanProblem<float>&, const ScanForwardOut<float>&, int64_t, int64_t);  \
  void forward_rows(const ScanProblem<double>&, const ScanForwardOut<double>&, int64_t, int64_t); \
  void backward_rows(const ScanProblem<float>&, const ScanBackwardIn<float>&,                    \
                     const ScanBackwardOut<float>&, int64_t, int64_t);                           \
  void backward_rows(const ScanProblem<double>&, const ScanBackwardIn<double>&,                  \
                     const ScanBackwardOut<double>&, int64_t, int64_t);                          \
  }

HASHKERN_SOFTSORT_SCAN_DECLARE(portable)
HASHKERN_SOFTSORT_SCAN_DECLARE(avx2)

}  // namespace softsort
}  // namespace hashkern
