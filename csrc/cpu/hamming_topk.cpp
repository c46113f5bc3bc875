// Exact Hamming top-k and radius search on the CPU.
//
// Distances are integers in [0, 8W], so selection counts instead of sorting or keeping a heap:
//  * small k (8k <= N): one streaming pass keeps a distance histogram of the accepted items and
//    a threshold T such that fewer than k accepted items lie below T; an item is accepted only
//    if it can still be in the top k, which for almost every item is one compare. Ties are
//    taken in index order because the database is scanned in index order.
//  * large k, and radius search: a histogram pass, then an emit pass that writes each item
//    straight to its final slot (a counting sort over distances).
// Both give the k nearest by (distance, index) ascending, in O(N + k + 8W) per query.
// Few queries (fewer than threads): the database is split into chunks searched in parallel, then
// merged by counting (streaming), or each part's histogram gives it its slots (two passes, radius).
// Distances come a block of rows at a time from the kernels chosen for the code width
// (hamming_kernels.h) into a buffer in L1, which the selection scans with vector compares. Codes
// of 16m bytes up to 1536 bits, after a chunk's first block, may take the bit-sliced search
// (hamming_sliced.h; AVX-512, AVX2 or SSE4.1), which finds the rows within the selector's limit
// without a popcount per row, when enough queries share the block (the choice says which search
// and from how many queries: measured, or forced).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "hamming_kernels.h"
#include "hamming_sliced.h"
#include "hamming_topk_checks.h"

namespace hashkern {
namespace {

constexpr int64_t kBlockRows = 2048;   // database rows a query tile scans while they are in cache
constexpr int64_t kMinChunkRows = 16384;
constexpr int64_t kHistLanes = 4;      // independent histograms of the two-pass count

struct Codes {
  const uint8_t* data;
  int64_t width;
  const uint8_t* row(int64_t j) const { return data + j * width; }
};

// Queries sharing each block of database rows: more of them stream the database from memory
// fewer times, but each holds a selector of ~2k items, so large k gets fewer.
// The bit-sliced search shares each block's transposition among the tile, so it takes more
// queries; with k > 4096 the tile is too small for it to pay (and it is not measured there).
inline bool use_sliced(int64_t k, const KernelChoice& choice) {
  return k <= 4096 && choice.sliced != nullptr && choice.sliced_min_queries > 0;
}
// Rows the bit-sliced search transposes at a time: whole plane groups whose planes (8 width + 1
// bits a row) fill about half of a 48 KiB L1, at least one group.
inline int64_t sliced_part_rows(const SlicedKernels& sliced, int64_t width) {
  const int64_t rows = 24 * 1024 * 8 / (8 * width + 1);
  return std::max<int64_t>(1, rows / sliced.group_rows) * sliced.group_rows;
}
inline int64_t query_tile(int64_t k, bool sliced) { return k <= 4096 ? (sliced ? kSlicedTile : kRowTile) : 8; }

// Exact top-k by (distance, index) of a stream of items that arrive in increasing index order.
class Selector {
 public:
  void reset(int64_t k, int32_t max_d) {
    k_ = k;
    t_ = max_d;
    limit_ = max_d;
    count_le_ = 0;
    size_ = 0;
    hist_.assign(max_d + 1, 0);
    cap_ = 2 * k + kBlockRows;  // compaction to <= k items makes appends amortised O(1)
    if (static_cast<int64_t>(dist_.size()) < cap_) {
      dist_.resize(cap_);
      idx_.resize(cap_);
    }
  }

  // Items at distance <= limit() may still be in the top k; the rest can be skipped.
  int32_t limit() const { return limit_; }

  // Appends the items j0 + hits[h] (ascending), whose distances d[hits[h]] are <= limit(), then
  // lowers the threshold once: per item only a store and a histogram increment, no branch.
  // The limit is not updated inside the block, so a few items that can no longer be in the top k
  // get in; finish() and compact() drop them (ties at T beyond the first k, in index order).
  void accept_block(const int32_t* d, const int32_t* hits, int64_t count, int64_t j0) {
    if (size_ + count > cap_) compact();  // count <= kBlockRows: after compact() it fits
    for (int64_t h = 0; h < count; ++h) {
      const int32_t dist = d[hits[h]];
      dist_[size_ + h] = dist;
      idx_[size_ + h] = j0 + hits[h];
      ++hist_[dist];
    }
    size_ += count;
    count_le_ += count;
    // Once k accepted items lie below T, nothing at T or above is needed any more.
    while (count_le_ - hist_[t_] >= k_) {
      count_le_ -= hist_[t_];
      hist_[t_] = 0;
      --t_;
    }
    limit_ = count_le_ < k_ ? t_ : t_ - 1;
  }

  // Writes the min(k, items streamed) nearest, ordered by (distance, index); returns how many.
  int64_t finish(int32_t* out_d, int64_t* out_i) {
    const int64_t below = count_le_ - hist_[t_];
    const int64_t total = below + std::min<int64_t>(hist_[t_], k_ - below);
    offset_.assign(t_ + 1, 0);
    for (int32_t d = 1; d <= t_; ++d) offset_[d] = offset_[d - 1] + hist_[d - 1];
    for (int64_t s = 0; s < size_; ++s) {
      const int32_t d = dist_[s];
      if (d > t_) continue;  // stale: accepted before the threshold dropped below it
      const int64_t p = offset_[d];
      if (p >= total) continue;  // a tie at T beyond the first k
      out_d[p] = d;
      out_i[p] = idx_[s];
      offset_[d] = p + 1;
    }
    return total;
  }

 private:
  void compact() {
    const int64_t below = count_le_ - hist_[t_];
    const int64_t keep_at_t = std::min<int64_t>(hist_[t_], k_ - below);
    int64_t kept = 0, at_t = 0;
    for (int64_t s = 0; s < size_; ++s) {
      const int32_t d = dist_[s];
      if (d < t_ || (d == t_ && at_t++ < keep_at_t)) {
        dist_[kept] = d;
        idx_[kept] = idx_[s];
        ++kept;
      }
    }
    size_ = kept;
    hist_[t_] = keep_at_t;
    count_le_ = below + keep_at_t;
  }

  int64_t k_ = 0, count_le_ = 0, size_ = 0, cap_ = 0;
  int32_t t_ = 0, limit_ = 0;
  std::vector<int64_t> hist_, offset_;
  std::vector<int32_t> dist_;
  std::vector<int64_t> idx_;
};

// Rows [j0, j0 + len) of the database, their distances d [len] to one query: offers the
// possible members of the top k to the selector, found in one vector pass.
inline void select_block(const HammingKernels& kernels, const int32_t* d, int64_t j0, int64_t len, Selector& sel,
                         int32_t* hits) {
  sel.accept_block(d, hits, kernels.collect_within(d, len, sel.limit(), hits), j0);
}

// Streaming top-k of every (query tile, database chunk): candidates [nq, chunks, k], each list
// sorted by (distance, index) and min(k, chunk rows) long.
void stream_topk(const KernelChoice& choice, const uint8_t* q, int64_t nq, const Codes& db, int64_t n, int64_t k,
                 int64_t chunk_rows, int64_t chunks, int32_t* cand_d, int64_t* cand_i) {
  const HammingKernels& kernels = choice.kernels;
  const int32_t max_d = static_cast<int32_t>(8 * db.width);
  const bool sliced = use_sliced(k, choice);
  const int64_t tile = query_tile(k, sliced), tiles = (nq + tile - 1) / tile;
  at::parallel_for(0, tiles * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<Selector> sel(tile);
    std::vector<int32_t> dist(kBlockRows), hits(kBlockRows);
    std::vector<SlicedQuery> query_bits(sliced ? tile : 0);
    SlicedBlock planes;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t q0 = (task / chunks) * tile, q1 = std::min(nq, q0 + tile);
      const int64_t chunk = task % chunks;
      const int64_t j0 = chunk * chunk_rows, j1 = std::min(n, j0 + chunk_rows);
      for (int64_t i = q0; i < q1; ++i) sel[i - q0].reset(std::min(k, j1 - j0), max_d);
      const bool slice_tile = sliced && q1 - q0 >= choice.sliced_min_queries;
      const int64_t slice_rows = sliced ? sliced_part_rows(*choice.sliced, db.width) : 0;
      if (slice_tile) {
        for (int64_t i = q0; i < q1; ++i) slice_query(q + i * db.width, db.width, query_bits[i - q0]);
      }
      for (int64_t b = j0; b < j1; b += kBlockRows) {
        const int64_t len = std::min(j1, b + kBlockRows) - b;
        if (slice_tile && b > j0) {  // the first block takes every row: all distances are needed
          // Part of the block at a time, whose planes stay in L1 while the whole tile scans them.
          for (int64_t p = b; p < b + len; p += slice_rows) {
            const int64_t rows = std::min(b + len, p + slice_rows) - p;
            choice.sliced->slice_block(db.row(p), db.width, rows, planes);
            for (int64_t i = q0; i < q1; ++i) {
              Selector& s = sel[i - q0];
              const int64_t count = choice.sliced->within(planes, query_bits[i - q0], q + i * db.width, db.row(p),
                                                          rows, s.limit(), dist.data(), hits.data());
              s.accept_block(dist.data(), hits.data(), count, p);
            }
          }
          continue;
        }
        for (int64_t i = q0; i < q1; ++i) {
          kernels.distances(q + i * db.width, db.row(b), db.width, len, dist.data());
          select_block(kernels, dist.data(), b, len, sel[i - q0], hits.data());
        }
      }
      for (int64_t i = q0; i < q1; ++i) {
        const int64_t at = (i * chunks + chunk) * k;
        sel[i - q0].finish(cand_d + at, cand_i + at);
      }
    }
  });
}

// Merges each query's per-chunk lists (in chunk order, so equal distances stay in index order).
void merge_chunks(int64_t nq, int64_t n, int64_t k, int64_t chunk_rows, int64_t chunks, int32_t max_d,
                  const int32_t* cand_d, const int64_t* cand_i, int32_t* out_d, int64_t* out_i) {
  at::parallel_for(0, nq, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> offset(max_d + 2);
    for (int64_t i = begin; i < end; ++i) {
      std::fill(offset.begin(), offset.end(), 0);
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t len = std::min(k, std::min(n, (c + 1) * chunk_rows) - c * chunk_rows);
        const int32_t* d = cand_d + (i * chunks + c) * k;
        for (int64_t s = 0; s < len; ++s) ++offset[d[s] + 1];
      }
      for (int32_t d = 1; d <= max_d + 1; ++d) offset[d] += offset[d - 1];
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t len = std::min(k, std::min(n, (c + 1) * chunk_rows) - c * chunk_rows);
        const int64_t at = (i * chunks + c) * k;
        for (int64_t s = 0; s < len; ++s) {
          const int32_t d = cand_d[at + s];
          const int64_t p = offset[d];
          if (p >= k) continue;
          out_d[i * k + p] = d;
          out_i[i * k + p] = cand_i[at + s];
          offset[d] = p + 1;
        }
      }
    }
  });
}

// Per-thread buffers of the two-pass search: a block of distances, the hits among them, and a
// distance histogram.
struct Scratch {
  std::vector<int32_t> dist, hits;
  std::vector<int64_t> hist, lanes;
  explicit Scratch(int32_t max_d)
      : dist(kBlockRows), hits(kBlockRows), hist(max_d + 1), lanes(kHistLanes * (max_d + 1)) {}
};

// hist[d] = how many database codes lie at distance d from q. Consecutive items go to
// kHistLanes separate histograms, summed at the end: with few distinct distances (16-bit codes
// have 17) one counter would be incremented back to back, each waiting on the previous store.
void histogram(const HammingKernels& kernels, const uint8_t* q, const Codes& db, int64_t n, Scratch& s) {
  const int64_t bins = static_cast<int64_t>(s.hist.size());
  std::fill(s.lanes.begin(), s.lanes.end(), 0);
  for (int64_t b = 0; b < n; b += kBlockRows) {
    const int64_t len = std::min(n, b + kBlockRows) - b;
    kernels.distances(q, db.row(b), db.width, len, s.dist.data());
    for (int64_t j = 0; j < len; ++j) ++s.lanes[(j % kHistLanes) * bins + s.dist[j]];
  }
  for (int64_t d = 0; d < bins; ++d) {
    int64_t total = 0;
    for (int64_t lane = 0; lane < kHistLanes; ++lane) total += s.lanes[lane * bins + d];
    s.hist[d] = total;
  }
}

// Writes the rows [j0, j0 + len) at distance <= t to their slots: slot[d] is the next free slot
// of distance d (advanced as it fills); only slots < end are written (ties at t beyond the
// first k), and the scan stops once `quota` rows are written.
void emit_within(const HammingKernels& kernels, const uint8_t* q, const Codes& db, int64_t j0, int64_t len,
                 int32_t t, int64_t end, int64_t quota, int64_t* slot, int32_t* out_d, int64_t* out_i, Scratch& s) {
  int64_t written = 0;
  for (int64_t b = j0; b < j0 + len && written < quota; b += kBlockRows) {
    const int64_t block = std::min(j0 + len, b + kBlockRows) - b;
    const int32_t* dist = s.dist.data();
    kernels.distances(q, db.row(b), db.width, block, s.dist.data());
    const int64_t count = kernels.collect_within(dist, block, t, s.hits.data());
    for (int64_t h = 0; h < count; ++h) {
      const int64_t j = s.hits[h];
      const int32_t d = dist[j];
      const int64_t p = slot[d];
      if (p >= end) continue;  // a tie at T beyond the first k
      out_d[p] = d;
      out_i[p] = b + j;
      slot[d] = p + 1;
      ++written;
    }
  }
}

// Parts of the database one query's two passes split into: one per thread for few queries
// (faiss splits over queries only), parts of at least kMinChunkRows, whole blocks each.
int64_t split_rows(int64_t n, int64_t parts) {
  parts = std::max<int64_t>(1, std::min(parts, n / kMinChunkRows));
  return std::max<int64_t>(kBlockRows, ((n + parts - 1) / parts + kBlockRows - 1) / kBlockRows * kBlockRows);
}

// One query, two passes: histogram, then each item with distance <= T straight to its slot,
// at most `room` of them (ties at T in index order). k == 0 means radius mode: T = radius.
// Returns how many items qualify (k, or the hits within the radius). `parts` > 1 splits the
// database into parts searched in parallel (for fewer queries than threads): each part's
// histogram gives it its own slots, after the same distances of the parts before it.
int64_t two_pass(const HammingKernels& kernels, const uint8_t* q, const Codes& db, int64_t n, int64_t k,
                 int32_t radius, int64_t room, int32_t* out_d, int64_t* out_i, Scratch& s, int64_t parts = 1) {
  const int32_t max_d = static_cast<int32_t>(8 * db.width);
  const int64_t bins = max_d + 1, part_rows = split_rows(n, parts);
  parts = (n + part_rows - 1) / part_rows;
  std::vector<int64_t> part_hist(parts > 1 ? parts * bins : 0);
  if (parts == 1) {
    histogram(kernels, q, db, n, s);
  } else {
    at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
      Scratch part(max_d);
      for (int64_t c = begin; c < end; ++c) {
        const int64_t j0 = c * part_rows;
        histogram(kernels, q, Codes{db.row(j0), db.width}, std::min(n, j0 + part_rows) - j0, part);
        std::copy(part.hist.begin(), part.hist.end(), part_hist.begin() + c * bins);
      }
    });
    for (int64_t d = 0; d < bins; ++d) {
      s.hist[d] = 0;
      for (int64_t c = 0; c < parts; ++c) s.hist[d] += part_hist[c * bins + d];
    }
  }
  std::vector<int64_t>& hist = s.hist;
  int32_t t = std::min(radius, max_d);
  int64_t limit = 0, below = 0;
  if (k > 0) {
    for (t = 0; below + hist[t] < k; ++t) below += hist[t];
    limit = k;
  } else {
    for (int32_t d = 0; d <= t; ++d) limit += hist[d];
  }
  // Exclusive prefix sums: the first slot of each distance.
  int64_t run = 0;
  for (int32_t d = 0; d <= t; ++d) {
    const int64_t c = hist[d];
    hist[d] = run;
    run += c;
  }
  const int64_t end = std::min(limit, room);
  if (parts == 1) {
    emit_within(kernels, q, db, 0, n, t, end, end, hist.data(), out_d, out_i, s);
    return limit;
  }
  // Part c's first slot of distance d follows the rows at d in parts 0..c-1 (index order).
  std::vector<int64_t> slots(parts * (t + 1)), quota(parts, 0);
  for (int32_t d = 0; d <= t; ++d) {
    int64_t next = hist[d];
    for (int64_t c = 0; c < parts; ++c) {
      const int64_t count = part_hist[c * bins + d];
      slots[c * (t + 1) + d] = next;
      quota[c] += std::max<int64_t>(0, std::min(count, end - next));
      next += count;
    }
  }
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t stop) {
    Scratch part(max_d);
    for (int64_t c = begin; c < stop; ++c) {
      const int64_t j0 = c * part_rows;
      emit_within(kernels, q, db, j0, std::min(n, j0 + part_rows) - j0, t, end, quota[c], slots.data() + c * (t + 1),
                  out_d, out_i, part);
    }
  });
  return limit;
}

// Runs two_pass(query i, parts) for every query: in parallel over queries when there are
// enough of them, else one query at a time with its database split across the threads.
template <typename F>
void for_each_query_two_pass(int64_t nq, int32_t max_d, F&& search) {
  const int64_t threads = at::get_num_threads();
  if (nq >= threads) {
    at::parallel_for(0, nq, 1, [&](int64_t begin, int64_t end) {
      Scratch scratch(max_d);
      for (int64_t i = begin; i < end; ++i) search(i, scratch, int64_t(1));
    });
    return;
  }
  Scratch scratch(max_d);
  for (int64_t i = 0; i < nq; ++i) search(i, scratch, threads);
}

void topk_impl(const KernelChoice& choice, const uint8_t* q, int64_t nq, const Codes& db, int64_t n, int64_t k,
               int32_t* out_d, int64_t* out_i) {
  const HammingKernels& kernels = choice.kernels;
  const int32_t max_d = static_cast<int32_t>(8 * db.width);
  if (8 * k > n) {  // large k: the counting sort over all N is cheaper than streaming
    for_each_query_two_pass(nq, max_d, [&](int64_t i, Scratch& scratch, int64_t parts) {
      two_pass(kernels, q + i * db.width, db, n, k, 0, k, out_d + i * k, out_i + i * k, scratch, parts);
    });
    return;
  }
  // Enough independent tasks for every thread even with a few queries: split the database.
  const int64_t tile = query_tile(k, use_sliced(k, choice)), tiles = (nq + tile - 1) / tile;
  const int64_t want = (4 * at::get_num_threads() + tiles - 1) / tiles;
  int64_t chunks = std::max<int64_t>(1, std::min(want, n / kMinChunkRows));
  const int64_t chunk_rows = (n + chunks - 1) / chunks;
  chunks = (n + chunk_rows - 1) / chunk_rows;
  if (chunks == 1) return stream_topk(choice, q, nq, db, n, k, chunk_rows, 1, out_d, out_i);
  std::vector<int32_t> cand_d(nq * chunks * k);
  std::vector<int64_t> cand_i(nq * chunks * k);
  stream_topk(choice, q, nq, db, n, k, chunk_rows, chunks, cand_d.data(), cand_i.data());
  merge_chunks(nq, n, k, chunk_rows, chunks, max_d, cand_d.data(), cand_i.data(), out_d, out_i);
}

Codes codes_of(const at::Tensor& db) { return {db.const_data_ptr<uint8_t>(), db.size(1)}; }

void hamming_topk_cpu(const at::Tensor& q, const at::Tensor& db, int64_t k, at::Tensor& dist, at::Tensor& idx) {
  check_topk_args(q, db, k, dist, idx);
  const int64_t nq = q.size(0), n = db.size(0);
  if (nq == 0) return;
  topk_impl(kernel_choice(db.size(1)), q.const_data_ptr<uint8_t>(), nq, codes_of(db), n, k, dist.data_ptr<int32_t>(),
            idx.data_ptr<int64_t>());
}

void hamming_radius_count_cpu(const at::Tensor& q, const at::Tensor& db, int64_t r, at::Tensor& counts) {
  check_radius_count_args(q, db, r, counts);
  const Codes codes = codes_of(db);
  const int64_t n = db.size(0);
  const int32_t radius = static_cast<int32_t>(std::min<int64_t>(r, 8 * codes.width));
  const uint8_t* pq = q.const_data_ptr<uint8_t>();
  int64_t* out = counts.data_ptr<int64_t>();
  const HammingKernels kernels = kernel_choice(codes.width).kernels;
  // Tasks are (query, part of the database): with fewer queries than threads, each query's
  // database is split so that every thread has work.
  const int64_t nq = q.size(0), threads = at::get_num_threads();
  if (nq == 0) return;
  const int64_t part_rows = split_rows(n, nq >= threads ? 1 : (threads + nq - 1) / nq);
  const int64_t parts = (n + part_rows - 1) / part_rows;
  std::vector<int64_t> part_counts(nq * parts, 0);
  at::parallel_for(0, nq * parts, 1, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> dist(kBlockRows);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t i = task / parts, j1 = std::min(n, (task % parts + 1) * part_rows);
      for (int64_t b = task % parts * part_rows; b < j1; b += kBlockRows) {
        const int64_t len = std::min(j1, b + kBlockRows) - b;
        kernels.distances(pq + i * codes.width, codes.row(b), codes.width, len, dist.data());
        part_counts[task] += kernels.count_within(dist.data(), len, radius);
      }
    }
  });
  for (int64_t i = 0; i < nq; ++i) {
    out[i] = 0;
    for (int64_t c = 0; c < parts; ++c) out[i] += part_counts[i * parts + c];
  }
}

void hamming_radius_fill_cpu(const at::Tensor& q, const at::Tensor& db, int64_t r, const at::Tensor& offsets,
                             at::Tensor& idx, at::Tensor& dist) {
  check_radius_fill_args(q, db, r, offsets, idx, dist);
  const int64_t nq = q.size(0);
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  const int64_t nnz = off[nq];
  const Codes codes = codes_of(db);
  const int32_t radius = static_cast<int32_t>(std::min<int64_t>(r, 8 * codes.width));
  const uint8_t* pq = q.const_data_ptr<uint8_t>();
  const HammingKernels kernels = kernel_choice(codes.width).kernels;
  for_each_query_two_pass(nq, static_cast<int32_t>(8 * codes.width), [&](int64_t i, Scratch& scratch, int64_t parts) {
    const int64_t len = off[i + 1] - off[i];
    TORCH_CHECK_VALUE(len >= 0 && off[i] >= 0 && off[i + 1] <= nnz, "offsets must be non-decreasing from 0");
    const int64_t found = two_pass(kernels, pq + i * codes.width, codes, db.size(0), 0, radius, len,
                                   dist.data_ptr<int32_t>() + off[i], idx.data_ptr<int64_t>() + off[i], scratch, parts);
    TORCH_CHECK_VALUE(found == len, "offsets do not match hamming_radius_count for query ", i, ": ", len,
                      " slots for ", found, " hits");
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(hashkern, CPU, m) {
  m.impl("hamming_topk", &hamming_topk_cpu);
  m.impl("hamming_radius_count", &hamming_radius_count_cpu);
  m.impl("hamming_radius_fill", &hamming_radius_fill_cpu);
}

}  // namespace hashkern
