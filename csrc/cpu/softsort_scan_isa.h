// The row kernels of the SoftSort scans, compiled once per instruction set: each includer
// opens a namespace (portable, avx2) and may set `#pragma GCC target` first. No torch headers.
//
// Per row (an anchor), in sorted order r, with Zσ_r = v[idx[r]] and γ_r = exp(-(q_{r-1} - q_r)/τ):
//   forward   R: B_r (exclusive right scan), b_r (its scan of ones)   F: A_r, a_r and
//             E_r = (A_r + B_r) / (a_r + b_r)
//   backward  the gradients of the definition (autograd through |q_k - s_j| with sign(0) = 0):
//             with G_r = dE_r / den_r and H_r = (dE_r . E_r) / den_r,
//               dv[σ(t)]  = Σ_k K[k,t] G_k                      (left + right scans of G)
//               dq_r      = -(G_r.(SR(Z) - SL(Z))_r - H_r (SR(1) - SL(1))_r) / τ
//               dkey_t    = (Z_t.(SL(G) - SR(G))_t - (SL(H) - SR(H))_t) / τ
//             where SL / SR are the strict one-sided sums (q_t > q_r / q_t < q_r): the
//             inclusive/exclusive scans minus the tie group's own prefix/suffix sums, so tied
//             values contribute sign(0) = 0. ds[σ(r)] = dq_r + dkey_r.
//             R: B, b   F: A, E, G, left scans, dv's left part   R: right scans, dv's right part.
// Every recurrence factor is γ <= 1 or a tie flag in {0, 1}: nothing can overflow.
//
// Glossary of the scan state names (the torch and Triton scans use the same names). Per sorted
// position r: g = γ_r, t = tie_r (1 when q_{r-1} == q_r, i.e. r continues a tie group), Z = Zσ_r.
//   A, a_vec, a   left scan (inclusive) of Z, of ones: A_r = γ_r A_{r-1} + Z_r
//   B, w, bs, b   right scan (exclusive) of Z, of ones: B_r = γ_{r+1} (B_{r+1} + Z_{r+1})
//   G, H, hs      G_r = dE_r / den_r ([d]), H_r = (dE_r . E_r) / den_r (scalar), den_r = a_r + b_r
//   delta         dE_r . E_r (the numerator of H_r)
//   gp_z, gp      tie-group prefix (inclusive) of Z, of ones: gp_r = t_r gp_{r-1} + 1
//   il_g, il_h    inclusive left scans of G and H: il_g_r = γ_r il_g_{r-1} + G_r
//   gp_g, gp_h    tie-group prefix (inclusive) of G and H: gp_g_r = t_r gp_g_{r-1} + G_r
//   er_g, er_h    exclusive right scans of G and H: er_g_{r-1} = γ_r (er_g_r + G_r)
//   gs_g, gs_h    tie-group suffix (exclusive) of G and H: gs_g_{r-1} = t_r (gs_g_r + G_r)
//   gs_z, gs      tie-group suffix (exclusive) of Z, of ones
//   pq, q2        the left / right pass parts of G_r.(SR(Z) - SL(Z))_r (dq_r before / τ)
//   pk, k2        the left / right pass parts of Z_r.(SL(G) - SR(G))_r (dkey_r before / τ)
//   acc           ds of the left pass per position, finished (and divided by τ) by the right pass
// Subtracting a tie-group prefix/suffix from a Laplace scan leaves the strict sums SL / SR.

template <typename T>
struct Row {
  const T* q;
  const int64_t* idx;
  const T* v;  // [n, d] this row's values (unsorted)
  int64_t n, d;
  const T* z(int64_t r) const { return v + idx[r] * d; }
};

// gamma[r] = exp(-(q[r-1] - q[r]) / tau) (gamma[0] unused), tie[r] = (q[r-1] == q[r]).
// The gap is divided in double, so a tiny tau that fp32 cannot hold still gives 0, not NaN.
template <typename T>
inline void row_decays(const T* q, int64_t n, double tau, T* gamma, uint8_t* tie) {
  gamma[0] = T(0);
  tie[0] = 0;
  for (int64_t r = 1; r < n; ++r) {
    const double gap = double(q[r - 1]) - double(q[r]);
    gamma[r] = gap > 0 ? T(std::exp(-gap / tau)) : T(1);
    tie[r] = q[r - 1] == q[r];
  }
}

// Right scan: out[r] = B_r (vectors, [n, d]) and bs[r] = b_r.
template <typename T>
inline void right_scan(const Row<T>& row, const T* gamma, T* out, T* bs) {
  const int64_t n = row.n, d = row.d;
  T* b_vec = out + (n - 1) * d;
  std::fill(b_vec, b_vec + d, T(0));
  bs[n - 1] = T(0);
  for (int64_t r = n - 1; r > 0; --r) {
    const T g = gamma[r];
    const T* z = row.z(r);
    T* prev = out + (r - 1) * d;
#pragma omp simd
    for (int64_t k = 0; k < d; ++k) prev[k] = g * (b_vec[k] + z[k]);
    bs[r - 1] = g * (bs[r] + T(1));
    b_vec = prev;
  }
}

// Forward of one row. Gather (u == nullptr): out[r] = E_r, with out holding B first, so no
// [n, d] scratch is needed. Cosine: c[r] = E_r.u / max(|E_r|, eps), norms[r] = |E_r|, B in w.
template <typename T>
void forward_row(const Row<T>& row, const T* gamma, const T* u, T eps, T* out, T* c, T* norms, T* w, T* bs,
                 T* a_vec) {
  const int64_t n = row.n, d = row.d;
  T* right = u ? w : out;
  right_scan(row, gamma, right, bs);
  std::fill(a_vec, a_vec + d, T(0));
  T a = T(0);
  for (int64_t r = 0; r < n; ++r) {
    const T g = gamma[r];
    const T* z = row.z(r);
    T* br = right + r * d;
    a = g * a + T(1);
    const T inv = T(1) / (a + bs[r]);
    if (!u) {
#pragma omp simd
      for (int64_t k = 0; k < d; ++k) {
        const T ak = g * a_vec[k] + z[k];
        a_vec[k] = ak;
        br[k] = (ak + br[k]) * inv;
      }
      continue;
    }
    T ee = T(0), eu = T(0);
#pragma omp simd reduction(+ : ee, eu)
    for (int64_t k = 0; k < d; ++k) {
      const T ak = g * a_vec[k] + z[k];
      a_vec[k] = ak;
      const T e = (ak + br[k]) * inv;
      ee += e * e;
      eu += e * u[k];
    }
    const T norm = std::sqrt(ee);
    norms[r] = norm;
    c[r] = eu / std::max(norm, eps);
  }
}

// Scratch of one row's backward: w [n, d]; five [d] running vectors; three [n] scalars.
template <typename T>
struct BackwardScratch {
  T *w, *a_vec, *gp_z, *il_g, *gp_g, *bs, *hs, *acc;
  T* er_g() { return a_vec; }  // the right pass reuses the left pass's vectors
  T* gs_g() { return gp_z; }
  T* gs_z() { return il_g; }
};

// The cosine's dE = alpha u + beta E for dc at c = E.u / max(|E|, eps); delta = dE.E, which is 0
// unless |E| <= eps; du_coef, the coefficient of E in du.
template <typename T>
struct CosineGrad {
  T alpha, beta, delta, du_coef;
};

template <typename T>
inline CosineGrad<T> cosine_grad(T dc, T c, T norm, T eps) {
  const T du_coef = dc / std::max(norm, eps);
  if (norm > eps) return {dc / norm, -dc * c / (norm * norm), T(0), du_coef};
  return {dc / eps, T(0), dc * c, du_coef};
}

// kCosine: grad_row is dc [n] (with the forward's c and norms); else dE [n, d] in rank order.
// dv [n, d] is accumulated (+=) in the unsorted order of v; du [d] accumulated; ds_row written.
template <typename T, bool kCosine>
void backward_row(const Row<T>& row, const T* gamma, const uint8_t* tie, double tau, T eps, const T* u,
                  const T* grad_row, const T* c_row, const T* norm_row, BackwardScratch<T>& s, T* dv,
                  T* du, T* ds_row) {
  const int64_t n = row.n, d = row.d;
  right_scan(row, gamma, s.w, s.bs);
  for (T* vec : {s.a_vec, s.gp_z, s.il_g, s.gp_g}) std::fill(vec, vec + d, T(0));
  T a = T(0), gp = T(0), il_h = T(0), gp_h = T(0);
  for (int64_t r = 0; r < n; ++r) {  // left pass
    const T g = gamma[r];
    const T t = T(tie[r]);  // 1 inside a tie group: arithmetic, not a branch, so the loop vectorizes
    const T* z = row.z(r);
    T* wr = s.w + r * d;
    T* dvr = dv + row.idx[r] * d;
    a = g * a + T(1);
    gp = t * gp + T(1);
    const T inv = T(1) / (a + s.bs[r]);
    CosineGrad<T> cg{T(0), T(0), T(0), T(0)};
    if constexpr (kCosine) cg = cosine_grad(grad_row[r], c_row[r], norm_row[r], eps);
    const T alpha = cg.alpha, beta = cg.beta, du_coef = cg.du_coef;
    T delta = cg.delta;
    const T* de_row = kCosine ? nullptr : grad_row + r * d;
    T pq = T(0), pk = T(0);
#pragma omp simd reduction(+ : pq, pk, delta)
    for (int64_t k = 0; k < d; ++k) {
      const T ak = g * s.a_vec[k] + z[k];
      s.a_vec[k] = ak;
      const T gpz = t * s.gp_z[k] + z[k];
      s.gp_z[k] = gpz;
      const T bk = wr[k];
      const T e = (ak + bk) * inv;
      T de;
      if constexpr (kCosine) {
        de = alpha * u[k] + beta * e;
        du[k] += du_coef * e;
      } else {
        de = de_row[k];
        delta += de * e;
      }
      const T gk = de * inv;
      pq += gk * (bk - ak + gpz);
      const T ilg = g * s.il_g[k] + gk;
      s.il_g[k] = ilg;
      const T gpg = t * s.gp_g[k] + gk;
      s.gp_g[k] = gpg;
      pk += z[k] * (ilg - gpg);
      dvr[k] += ilg;
      wr[k] = gk;
    }
    const T h = delta * inv;
    il_h = g * il_h + h;
    gp_h = t * gp_h + h;
    s.hs[r] = h;
    s.acc[r] = -(pq - h * (s.bs[r] - a + gp)) + (pk - (il_h - gp_h));
  }
  T* er_g = s.er_g();
  T* gs_g = s.gs_g();
  T* gs_z = s.gs_z();
  for (T* vec : {er_g, gs_g, gs_z}) std::fill(vec, vec + d, T(0));
  T er_h = T(0), gs_h = T(0), gs = T(0);
  for (int64_t r = n - 1; r >= 0; --r) {  // right pass
    const T g = gamma[r];
    const T t = T(tie[r]);
    const T* z = row.z(r);
    const T* gr = s.w + r * d;
    T* dvr = dv + row.idx[r] * d;
    const T h = s.hs[r];
    T q2 = T(0), k2 = T(0);
#pragma omp simd reduction(+ : q2, k2)
    for (int64_t k = 0; k < d; ++k) {
      const T erg = er_g[k], gsg = gs_g[k], gsz = gs_z[k], gk = gr[k];
      q2 += gk * gsz;
      k2 += z[k] * (erg - gsg);
      dvr[k] += erg;
      er_g[k] = g * (erg + gk);  // now the values for r - 1
      gs_g[k] = t * (gsg + gk);
      gs_z[k] = t * (gsz + z[k]);
    }
    const T total = s.acc[r] + (q2 - h * gs) + (-k2 + (er_h - gs_h));
    ds_row[row.idx[r]] = T(double(total) / tau);
    er_h = g * (er_h + h);
    gs_h = t * (gs_h + h);
    gs = t * (gs + T(1));
  }
}

#include "softsort_groups_isa.h"

template <typename T>
Row<T> problem_row(const ScanProblem<T>& p, int64_t i) {
  return Row<T>{p.q + i * p.n, p.idx + i * p.n, p.shared_v ? p.v : p.v + i * p.n * p.d, p.n, p.d};
}

// Each row takes the grouped kernels or the position scans (take_groups); the scans' [n, d]
// scratch is allocated on the first row that needs it.
template <typename T>
void forward_rows_impl(const ScanProblem<T>& p, const ScanForwardOut<T>& out, int64_t begin, int64_t end) {
  const int64_t n = p.n, d = p.d;
  std::vector<T> gamma, bs, a_vec, w;
  std::vector<uint8_t> tie;
  GroupScratch<T> groups;
  for (int64_t i = begin; i < end; ++i) {
    const Row<T> row = problem_row(p, i);
    const T* u = p.u ? p.u + i * d : nullptr;
    T* e = p.u ? nullptr : out.e + i * n * d;
    T* c = p.u ? out.c + i * n : nullptr;
    T* norms = p.u ? out.norms + i * n : nullptr;
    const int64_t g = count_groups(row.q, n);
    if (take_groups(p.groups_policy, g, n, d)) {
      forward_groups_row(row, p.tau, g, u, T(p.eps), e, c, norms, groups);
      continue;
    }
    if (gamma.empty()) {
      gamma.resize(n);
      bs.resize(n);
      tie.resize(n);
      a_vec.resize(d);
      w.resize(p.u ? n * d : 0);
    }
    row_decays(row.q, n, p.tau, gamma.data(), tie.data());
    forward_row(row, gamma.data(), u, T(p.eps), e, c, norms, w.data(), bs.data(), a_vec.data());
  }
}

template <typename T>
void backward_rows_impl(const ScanProblem<T>& p, const ScanBackwardIn<T>& in, const ScanBackwardOut<T>& out,
                        int64_t begin, int64_t end) {
  const int64_t n = p.n, d = p.d;
  std::vector<T> gamma, scalars, vectors;
  std::vector<uint8_t> tie;
  BackwardScratch<T> s{};
  GroupScratch<T> groups;
  for (int64_t i = begin; i < end; ++i) {
    const Row<T> row = problem_row(p, i);
    T* dv = p.shared_v ? out.dv : out.dv + i * n * d;
    T* ds = out.ds + i * n;
    const int64_t g = count_groups(row.q, n);
    const bool groups_row = take_groups(p.groups_policy, g, n, d);
    if (groups_row && p.u) {
      backward_groups_row<T, true>(row, p.tau, g, T(p.eps), p.u + i * d, in.grad + i * n,
                                   in.c + i * n, in.norms + i * n, groups, dv, out.du + i * d, ds);
      continue;
    }
    if (groups_row) {
      backward_groups_row<T, false>(row, p.tau, g, T(p.eps), nullptr, in.grad + i * n * d,
                                    nullptr, nullptr, groups, dv, nullptr, ds);
      continue;
    }
    if (gamma.empty()) {
      gamma.resize(n);
      tie.resize(n);
      scalars.resize(3 * n);
      vectors.resize(n * d + 4 * d);
      T* vec = vectors.data();
      s = BackwardScratch<T>{vec, vec + n * d, vec + n * d + d, vec + n * d + 2 * d, vec + n * d + 3 * d,
                             scalars.data(), scalars.data() + n, scalars.data() + 2 * n};
    }
    row_decays(row.q, n, p.tau, gamma.data(), tie.data());
    if (p.u) {
      backward_row<T, true>(row, gamma.data(), tie.data(), p.tau, T(p.eps), p.u + i * d, in.grad + i * n,
                            in.c + i * n, in.norms + i * n, s, dv, out.du + i * d, ds);
    } else {
      backward_row<T, false>(row, gamma.data(), tie.data(), p.tau, T(p.eps), nullptr, in.grad + i * n * d,
                             nullptr, nullptr, s, dv, nullptr, ds);
    }
  }
}

void forward_rows(const ScanProblem<float>& p, const ScanForwardOut<float>& o, int64_t b, int64_t e) {
  forward_rows_impl(p, o, b, e);
}
void forward_rows(const ScanProblem<double>& p, const ScanForwardOut<double>& o, int64_t b, int64_t e) {
  forward_rows_impl(p, o, b, e);
}
void backward_rows(const ScanProblem<float>& p, const ScanBackwardIn<float>& in,
                   const ScanBackwardOut<float>& o, int64_t b, int64_t e) {
  backward_rows_impl(p, in, o, b, e);
}
void backward_rows(const ScanProblem<double>& p, const ScanBackwardIn<double>& in,
                   const ScanBackwardOut<double>& o, int64_t b, int64_t e) {
  backward_rows_impl(p, in, o, b, e);
}
