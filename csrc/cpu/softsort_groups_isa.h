// The SoftSort row kernels for rows with few distinct values, compiled once per instruction set
// next to softsort_scan_isa.h (whose Row and decays they share). No torch headers.
//
// Hamming similarities of K-bit codes take at most K + 1 values, so a row of n similarities falls
// into g <= K + 1 tie groups. Every position of a group has the same distances to all others, so
// it gathers the same E: the scans run over the g groups, on the groups' sums of values, and the
// n x d work per row is one pass over the values in their stored order (no gather), forward,
// and two backward (the group sums again, then values and dv together):
//   S_j = sum of Zσ over group j, m_j its size, γ_j = exp(-(Q_{j-1} - Q_j)/τ) between groups,
//   left_j  = γ_j (left_{j-1} + S_{j-1})      right_j = γ_{j+1} (right_{j+1} + S_{j+1})
//   E_j = (left_j + S_j + right_j) / den_j,   den_j = the same sums over m.
// The strict one-sided sums of the gradient (sign(0) = 0) are left and right themselves:
//   dq_r   = -(G_r.(right_j - left_j) - H_r (m_right_j - m_left_j)) / τ
//   dkey_t = (Z_t.(SL(G)_j - SR(G)_j) - (SL(H)_j - SR(H)_j)) / τ
//   dv[t]  = SL(G)_j + ΣG_j + SR(G)_j
// with ΣG_j, ΣH_j the groups' sums of G_r = dE_r / den_j and H_r = (dE_r . E_j) / den_j, and SL,
// SR the same exclusive scans over groups. For the sorted cosine dE_r = α_r u + β_r E_j, so ΣG_j
// = (Σα u + Σβ E_j) / den_j needs no pass over positions' vectors at all.

// Groups of one row and the tables built from them. Sized on first use, reused across rows.
template <typename T>
struct GroupScratch {
  int64_t g = 0, d = 0;
  std::vector<int32_t> of_rank, of_item;           // [n] group of rank position r / of item t
  std::vector<T> gamma, count, m_left, m_right;    // [g]
  std::vector<T> sum, left, right, e;              // [g, d]
  std::vector<T> coef_a, coef_b, coef_h, coef_du;  // [g] backward: Σα, Σβ, ΣH, Σ du coefficient
  std::vector<T> v_dot_u, v_dot_e;                 // [g] cosine backward: (right - left) . u and . E

  // Sizes every array; zeroes only what is accumulated into (count, the coefficients, sum).
  void resize(int64_t n, int64_t groups, int64_t dim) {
    g = groups;
    d = dim;
    of_rank.resize(n);
    of_item.resize(n);
    for (auto* vec : {&gamma, &m_left, &m_right, &v_dot_u, &v_dot_e}) vec->resize(g);
    for (auto* vec : {&count, &coef_a, &coef_b, &coef_h, &coef_du}) vec->assign(g, T(0));
    for (auto* vec : {&left, &right, &e}) vec->resize(g * d);
    sum.assign(g * d, T(0));
    gamma[0] = T(0);
  }
  T* row(std::vector<T>& table, int64_t j) { return table.data() + j * d; }
};

// Number of distinct values in a sorted row.
template <typename T>
inline int64_t count_groups(const T* q, int64_t n) {
  int64_t g = n > 0 ? 1 : 0;
  for (int64_t r = 1; r < n; ++r) g += q[r - 1] != q[r];
  return g;
}

inline bool take_groups(int policy, int64_t g, int64_t n, int64_t d) {
  if (policy != kGroupsAuto) return policy == kGroupsAlways;
  return 2 * g <= n && g * d <= kGroupTableElements;
}

// Exclusive left and right scans over groups of a [g, d] table (or of [g] scalars with d = 1).
template <typename T>
inline void group_scans(const T* gamma, const T* in, int64_t g, int64_t d, T* left, T* right) {
  std::fill(left, left + d, T(0));
  for (int64_t j = 1; j < g; ++j) {
    const T gj = gamma[j];
    const T *prev = left + (j - 1) * d, *x = in + (j - 1) * d;
    T* out = left + j * d;
#pragma omp simd
    for (int64_t k = 0; k < d; ++k) out[k] = gj * (prev[k] + x[k]);
  }
  std::fill(right + (g - 1) * d, right + g * d, T(0));
  for (int64_t j = g - 2; j >= 0; --j) {
    const T gj = gamma[j + 1];
    const T *next = right + (j + 1) * d, *x = in + (j + 1) * d;
    T* out = right + j * d;
#pragma omp simd
    for (int64_t k = 0; k < d; ++k) out[k] = gj * (next[k] + x[k]);
  }
}

// The groups of a row, their sums of values (one pass in stored order), scans and E.
template <typename T>
void group_tables(const Row<T>& row, double tau, int64_t g, GroupScratch<T>& s) {
  const int64_t n = row.n, d = row.d;
  s.resize(n, g, d);
  int64_t j = 0;
  for (int64_t r = 0; r < n; ++r) {
    if (r > 0 && row.q[r - 1] != row.q[r]) {
      ++j;
      s.gamma[j] = T(std::exp(-(double(row.q[r - 1]) - double(row.q[r])) / tau));
    }
    s.of_rank[r] = int32_t(j);
    s.of_item[row.idx[r]] = int32_t(j);
    s.count[j] += T(1);
  }
  for (int64_t t = 0; t < n; ++t) {
    T* acc = s.row(s.sum, s.of_item[t]);
    const T* z = row.v + t * d;
#pragma omp simd
    for (int64_t k = 0; k < d; ++k) acc[k] += z[k];
  }
  group_scans(s.gamma.data(), s.sum.data(), g, d, s.left.data(), s.right.data());
  group_scans(s.gamma.data(), s.count.data(), g, int64_t(1), s.m_left.data(), s.m_right.data());
  for (int64_t jj = 0; jj < g; ++jj) {
    const T inv = T(1) / (s.m_left[jj] + s.count[jj] + s.m_right[jj]);
    const T *l = s.row(s.left, jj), *x = s.row(s.sum, jj), *rt = s.row(s.right, jj);
    T* e = s.row(s.e, jj);
#pragma omp simd
    for (int64_t k = 0; k < d; ++k) e[k] = (l[k] + x[k] + rt[k]) * inv;
  }
}

template <typename T>
inline T dot(const T* a, const T* b, int64_t d) {
  T acc = T(0);
#pragma omp simd reduction(+ : acc)
  for (int64_t k = 0; k < d; ++k) acc += a[k] * b[k];
  return acc;
}

// Forward of one grouped row: as forward_row, from the group tables.
template <typename T>
void forward_groups_row(const Row<T>& row, double tau, int64_t g, const T* u, T eps, T* out, T* c, T* norms,
                        GroupScratch<T>& s) {
  group_tables(row, tau, g, s);
  const int64_t n = row.n, d = row.d;
  if (!u) {
    for (int64_t r = 0; r < n; ++r) std::copy_n(s.row(s.e, s.of_rank[r]), d, out + r * d);
    return;
  }
  T* group_norm = s.coef_a.data();
  T* group_c = s.coef_b.data();
  for (int64_t j = 0; j < g; ++j) {
    const T* e = s.row(s.e, j);
    group_norm[j] = std::sqrt(dot(e, e, d));
    group_c[j] = dot(e, u, d) / std::max(group_norm[j], eps);
  }
  for (int64_t r = 0; r < n; ++r) {
    norms[r] = group_norm[s.of_rank[r]];
    c[r] = group_c[s.of_rank[r]];
  }
}

// Backward of one grouped row, same contract as backward_row.
template <typename T, bool kCosine>
void backward_groups_row(const Row<T>& row, double tau, int64_t g, T eps, const T* u, const T* grad_row,
                         const T* c_row, const T* norm_row, GroupScratch<T>& s, T* dv, T* du, T* ds_row) {
  group_tables(row, tau, g, s);
  const int64_t n = row.n, d = row.d;
  // Per position: dq_r (into ds, divided by τ at the end) and the groups' sums of the coefficients.
  // s.sum becomes ΣG (the sums of values are not needed past E).
  std::fill(s.sum.begin(), s.sum.end(), T(0));
  T* gsum = s.sum.data();
  if constexpr (kCosine) {
    for (int64_t j = 0; j < g; ++j) {
      const T *e = s.row(s.e, j), *lt = s.row(s.left, j), *rt = s.row(s.right, j);
      T uv = T(0), ev = T(0);
#pragma omp simd reduction(+ : uv, ev)
      for (int64_t k = 0; k < d; ++k) {
        const T vk = rt[k] - lt[k];
        uv += u[k] * vk;
        ev += e[k] * vk;
      }
      s.v_dot_u[j] = uv;
      s.v_dot_e[j] = ev;
    }
  }
  for (int64_t r = 0; r < n; ++r) {
    const int64_t j = s.of_rank[r];
    const T inv = T(1) / (s.m_left[j] + s.count[j] + s.m_right[j]);
    T g_dot_v, delta;
    if constexpr (kCosine) {
      const CosineGrad<T> cg = cosine_grad(grad_row[r], c_row[r], norm_row[r], eps);
      s.coef_a[j] += cg.alpha;
      s.coef_b[j] += cg.beta;
      s.coef_du[j] += cg.du_coef;
      g_dot_v = (cg.alpha * s.v_dot_u[j] + cg.beta * s.v_dot_e[j]) * inv;
      delta = cg.delta;
    } else {
      const T *de = grad_row + r * d, *e = s.row(s.e, j), *lt = s.row(s.left, j), *rt = s.row(s.right, j);
      T* acc = gsum + j * d;
      T dv_ = T(0), de_ = T(0);
#pragma omp simd reduction(+ : dv_, de_)
      for (int64_t k = 0; k < d; ++k) {
        dv_ += de[k] * (rt[k] - lt[k]);
        de_ += de[k] * e[k];
        acc[k] += de[k];
      }
      g_dot_v = dv_ * inv;
      delta = de_;
    }
    const T h = delta * inv;
    s.coef_h[j] += h;
    ds_row[row.idx[r]] = -(g_dot_v - h * (s.m_right[j] - s.m_left[j]));
  }
  for (int64_t j = 0; j < g; ++j) {
    const T inv = T(1) / (s.m_left[j] + s.count[j] + s.m_right[j]);
    T* gs = gsum + j * d;
    const T* e = s.row(s.e, j);
    if constexpr (kCosine) {
      const T a = s.coef_a[j] * inv, b = s.coef_b[j] * inv, cu = s.coef_du[j];
#pragma omp simd
      for (int64_t k = 0; k < d; ++k) {
        gs[k] = a * u[k] + b * e[k];
        du[k] += cu * e[k];
      }
    } else {
#pragma omp simd
      for (int64_t k = 0; k < d; ++k) gs[k] *= inv;
    }
  }
  // W_j = SL(G)_j - SR(G)_j into left, U_j = SL(G)_j + ΣG_j + SR(G)_j into right; the scalars alike.
  group_scans(s.gamma.data(), gsum, g, d, s.left.data(), s.right.data());
  T* h_left = s.coef_a.data();
  T* h_right = s.coef_b.data();
  group_scans(s.gamma.data(), s.coef_h.data(), g, int64_t(1), h_left, h_right);
  for (int64_t j = 0; j < g; ++j) {
    T *lt = s.row(s.left, j), *rt = s.row(s.right, j);
    const T* gs = gsum + j * d;
#pragma omp simd
    for (int64_t k = 0; k < d; ++k) {
      const T l = lt[k], rr = rt[k];
      lt[k] = l - rr;
      rt[k] = l + gs[k] + rr;
    }
    h_left[j] -= h_right[j];
  }
  for (int64_t t = 0; t < n; ++t) {  // one pass in stored order: dkey and dv
    const int64_t j = s.of_item[t];
    const T* z = row.v + t * d;
    const T *w = s.row(s.left, j), *add = s.row(s.right, j);
    T* dvt = dv + t * d;
    T dk = T(0);
#pragma omp simd reduction(+ : dk)
    for (int64_t k = 0; k < d; ++k) {
      dk += z[k] * w[k];
      dvt[k] += add[k];
    }
    ds_row[t] = T(double(ds_row[t] + (dk - h_left[j])) / tau);
  }
}
