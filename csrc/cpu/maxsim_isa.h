// MaxSim row kernels of one instruction set. Included inside a namespace by maxsim_<isa>.cpp, after
// that file defines Ops<float> and Ops<double>: the vector type V of W lanes, MV vectors of query
// rows per panel (PANEL = MV W rows), NR tokens per register tile, and
//   zero(), load(p), set1(x), fma(a, x, acc) = a * x + acc (one rounding), update(best, idx, x, t):
//   where x > best (strictly: the first token wins ties) best = x and idx = t.
// Each lane computes its dot products as the same chain of FMAs over k = 0..D-1, and ties resolve
// in token order, so every instruction set returns identical maxima, argmaxes and scores.

#define HK_INLINE inline __attribute__((always_inline))

constexpr int kTailTokens = 4;  // tokens per tile past the last full NR-token tile

template <typename T>
constexpr int panel() { return Ops<T>::MV * Ops<T>::W; }

// acc[n][v] = dot products over D of the panel's rows (vector v) with token rows tok[n];
// next: the following tile's token rows (or nullptr), prefetched one cache line per row every
// 64 bytes of k: one query's documents stream from memory once, and the hardware prefetcher alone
// left ~25 % of the time on the table at 1000 x 512 and 10,000 x 128 tokens (benchmarks/notes/maxsim.md).
template <typename T, int N>
HK_INLINE void dot_tile(const T* qp, const T* const (&tok)[N], int64_t D,
                        typename Ops<T>::V (&acc)[N][Ops<T>::MV], const T* next) {
  using O = Ops<T>;
  constexpr int MV = O::MV, P = panel<T>();
  constexpr int64_t line = 64 / sizeof(T);
  for (int n = 0; n < N; ++n)
    for (int v = 0; v < MV; ++v) acc[n][v] = O::zero();
  for (int64_t k = 0; k < D; ++k) {
    if (next != nullptr && k % line == 0) {
      for (int n = 0; n < N; ++n) __builtin_prefetch(next + n * D + k);
    }
    typename O::V qv[MV];
    for (int v = 0; v < MV; ++v) qv[v] = O::load(qp + k * P + v * O::W);
    for (int n = 0; n < N; ++n) {
      const T x = tok[n][k];
      for (int v = 0; v < MV; ++v) acc[n][v] = O::fma(qv[v], x, acc[n][v]);
    }
  }
}

// Tokens t0 .. t0 + N - 1 of one document (slots past len repeat the last token and are skipped).
template <typename T, int N>
HK_INLINE void tile_update(const T* qp, const T* doc, int64_t t0, int64_t len, const uint8_t* mask, int64_t D,
                           typename Ops<T>::V (&best)[Ops<T>::MV], typename Ops<T>::V (&idx)[Ops<T>::MV]) {
  using O = Ops<T>;
  const T* tok[N];
  for (int n = 0; n < N; ++n) tok[n] = doc + (t0 + n < len ? t0 + n : len - 1) * D;
  typename O::V acc[N][O::MV];
  const T* next = t0 + 2 * N <= len ? doc + (t0 + N) * D : nullptr;
  dot_tile<T, N>(qp, tok, D, acc, next);
  for (int n = 0; n < N; ++n) {
    const int64_t t = t0 + n;
    if (t >= len || (mask != nullptr && mask[t] == 0)) continue;
    const typename O::V tv = O::set1(static_cast<T>(t));
    for (int v = 0; v < O::MV; ++v) O::update(best[v], idx[v], acc[n][v], tv);
  }
}

// The max over one document's real tokens of each row of one panel, and its first argmax.
template <typename T>
void panel_document(const T* qp, const T* doc, int64_t len, const uint8_t* mask, int64_t D, T* best_out,
                    T* idx_out) {
  using O = Ops<T>;
  typename O::V best[O::MV], idx[O::MV];
  for (int v = 0; v < O::MV; ++v) {
    best[v] = O::set1(-std::numeric_limits<T>::infinity());
    idx[v] = O::zero();
  }
  int64_t t = 0;
  for (; t + O::NR <= len; t += O::NR) tile_update<T, O::NR>(qp, doc, t, len, mask, D, best, idx);
  for (; t < len; t += kTailTokens) tile_update<T, kTailTokens>(qp, doc, t, len, mask, D, best, idx);
  for (int v = 0; v < O::MV; ++v) {
    O::store(best_out + v * O::W, best[v]);
    O::store(idx_out + v * O::W, idx[v]);
  }
}

template <typename T>
void forward_docs_impl(const Problem<T>& p, int64_t doc_begin, int64_t doc_end, T* rows, T* idx) {
  constexpr int P = panel<T>();
  const int64_t queries = p.group_rows / p.Lq;  // queries per group
  for (int64_t j = doc_begin; j < doc_end; ++j) {
    const int64_t g = p.group > 0 ? j / p.group : 0;
    const T* qp = p.qpack + g * p.panels * p.D * P;
    const int64_t start = p.offsets[j], len = p.offsets[j + 1] - start;
    const uint8_t* mask = p.tok_mask != nullptr ? p.tok_mask + start : nullptr;
    for (int64_t k = 0; k < p.panels; ++k)
      panel_document<T>(qp + k * p.D * P, p.tokens + start * p.D, len, mask, p.D, rows + k * P, idx + k * P);
    for (int64_t local = 0; local < queries; ++local) {
      const int64_t n = p.group > 0 ? g : local;
      T sum = 0;
      for (int64_t i = 0; i < p.Lq; ++i) {
        const int64_t r = local * p.Lq + i;
        const bool real = p.q_mask == nullptr || p.q_mask[n * p.Lq + i] != 0;
        if (real) sum += rows[r];
        if (p.argmax != nullptr) p.argmax[j * p.group_rows + r] = real ? static_cast<int32_t>(idx[r]) : -1;
      }
      p.scores[p.group > 0 ? j : n * p.nd + j] = sum * p.scale[n];
    }
  }
}

int panel_rows(bool dbl) { return dbl ? panel<double>() : panel<float>(); }

void forward_docs(const Problem<float>& p, int64_t b, int64_t e, float* rows, float* idx) {
  forward_docs_impl<float>(p, b, e, rows, idx);
}

void forward_docs(const Problem<double>& p, int64_t b, int64_t e, double* rows, double* idx) {
  forward_docs_impl<double>(p, b, e, rows, idx);
}
