// Exact Hamming top-k and radius search on CUDA: fused distance + counting selection.
//
// The [nq, N] distance matrix is never written. Each query's database is cut into T slices,
// one warp per (query, slice), so every SM is busy even for a single query:
//  1. hist:  each warp counts its slice's distances into a private histogram  [nq, T, 8W+1];
//  2. scan:  per query, the distance threshold (the k-th smallest distance, or the radius) and
//            the first output slot of every (slice, distance): exclusive sums over distances,
//            then over slices (a few small ATen ops on [nq, T, 8W+1]);
//  3. emit:  each warp recomputes its distances and writes every item at or below the threshold
//            straight to its final slot, lanes ranked by __match_any_sync; ties at the threshold
//            past the k-th slot are dropped.
// Output is ordered by (distance, index) ascending, exactly and deterministically, for any k.
// The database is read in place at any code width and alignment (rows.cuh): never copied.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include "words.cuh"

#include <algorithm>

#include "../cpu/hamming_topk_checks.h"

namespace hashkern {
namespace {

constexpr int kWarps = 8;                  // warps per block
constexpr int kThreads = 32 * kWarps;
constexpr int64_t kMinSliceRows = 1024;    // a warp scans at least this many rows
constexpr int64_t kMaxHistEntries = 1 << 24;  // bounds the [queries, T, bins] buffers per pass
constexpr int kMaxSharedBins = 48 * 1024 / (kWarps * 4);

// One warp per (query, slice): the slice's distance histogram into hist[query, slice, :].
template <int kWords, bool kShared, typename Rows>
__global__ void __launch_bounds__(kThreads)
hamming_slice_hist_kernel(const uint64_t* __restrict__ q,   // [nq, words], this pass's queries
                          const Rows db,                    // [n, bytes] (rows.cuh)
                          int32_t* __restrict__ hist,       // [nq, slices, bins], zeroed
                          int64_t nq, int64_t n, int64_t words, int64_t slices, int64_t slice_rows,
                          int bins) {
  extern __shared__ int32_t shared_hist[];  // [kWarps, bins] when kShared
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t task = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const bool active = task < nq * slices;
  // an inactive warp of the last block forms no pointer past the end of hist
  int32_t* mine = kShared ? shared_hist + warp * bins : (active ? hist + task * bins : nullptr);
  if (kShared) {
    for (int i = threadIdx.x; i < kWarps * bins; i += kThreads) shared_hist[i] = 0;
    __syncthreads();
  }
  if (active) {
    const int64_t qi = task / slices, slice = task % slices;
    const uint64_t* query = q + qi * words;
    const int64_t begin = slice * slice_rows, end = min(n, begin + slice_rows);
    for (int64_t j = begin + lane; j < end; j += 32) atomicAdd(mine + db.template distance<kWords>(query, j), 1);
  }
  if (kShared) {
    __syncthreads();
    if (active) {
      for (int d = lane; d < bins; d += 32) hist[task * bins + d] = mine[d];
    }
  }
}

// One warp per (query, slice): every item with distance <= thr[query] to its output slot.
// cursor[query, slice, d] holds the slot of the slice's next item at distance d, relative to the
// query's first slot base = row_offsets ? row_offsets[query] : query * k, and below its end.
template <int kWords, typename Rows>
__global__ void __launch_bounds__(kThreads)
hamming_slice_emit_kernel(const uint64_t* __restrict__ q, const Rows db,
                          int64_t* cursor,                       // [nq, slices, bins]
                          const int32_t* __restrict__ thr,       // [nq], or nullptr: use radius
                          int32_t radius,
                          const int64_t* __restrict__ row_offsets,  // [nq_total + 1] or nullptr (top-k)
                          int64_t k, int64_t q_first,            // this pass's first query
                          int32_t* __restrict__ out_d, int64_t* __restrict__ out_i,
                          int64_t nq, int64_t n, int64_t words, int64_t slices, int64_t slice_rows, int bins) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t task = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (task >= nq * slices) return;  // the whole warp leaves together
  const int64_t qi = task / slices, slice = task % slices, qg = q_first + qi;
  const int32_t limit = thr != nullptr ? thr[qi] : radius;
  const int64_t base = row_offsets != nullptr ? row_offsets[qg] : qg * k;
  const int64_t end = row_offsets != nullptr ? row_offsets[qg + 1] : (qg + 1) * k;
  volatile int64_t* mine = cursor + task * bins;
  const uint64_t* query = q + qi * words;
  const int64_t begin = slice * slice_rows, stop = min(n, begin + slice_rows);
  const unsigned below = (1u << lane) - 1u;
  for (int64_t j0 = begin; j0 < stop; j0 += 32) {  // warp-uniform trip count
    const int64_t j = j0 + lane;
    const int d = j < stop ? db.template distance<kWords>(query, j) : -1;
    const bool hit = d >= 0 && d <= limit;
    if (!__any_sync(0xffffffffu, hit)) continue;  // the common case for small k: nothing to place
    const unsigned peers = __match_any_sync(0xffffffffu, hit ? d : -1);
    int64_t slot = 0;
    if (hit) slot = base + mine[d] + __popc(peers & below);
    __syncwarp();
    if (hit) {
      if (slot < end) {
        out_d[slot] = d;
        out_i[slot] = j;
      }
      if ((peers & below) == 0) mine[d] = mine[d] + __popc(peers);  // the lowest lane of each distance
    }
    __syncwarp();
  }
}


struct Plan {
  at::Tensor q;   // as whole words (a small copy when the width is not a multiple of 8 bytes)
  at::Tensor db;  // as given: read in place by WordRows or ByteRows
  int64_t nq, n, words, slices, slice_rows, chunk;
  int bins;
};

Plan plan_for(const at::Tensor& q, const at::Tensor& db) {
  Plan p;
  p.q = as_words(q);
  p.db = db;
  p.nq = q.size(0);
  p.n = db.size(0);
  p.words = p.q.size(1) / 8;
  p.bins = static_cast<int>(8 * q.size(1) + 1);
  int device = q.get_device(), sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t target_warps = static_cast<int64_t>(sms) * 64 * 4;  // ~4 waves of resident warps
  const int64_t max_slices = std::max<int64_t>(1, (p.n + kMinSliceRows - 1) / kMinSliceRows);
  const int64_t want = std::max<int64_t>(1, (target_warps + p.nq - 1) / std::max<int64_t>(p.nq, 1));
  p.slices = std::min(want, max_slices);
  // One query's [slices, bins] histograms must fit the per-pass budget too (very wide codes).
  p.slices = std::min(p.slices, std::max<int64_t>(1, kMaxHistEntries / p.bins));
  p.slice_rows = (p.n + p.slices - 1) / p.slices;
  p.slices = (p.n + p.slice_rows - 1) / p.slice_rows;
  p.chunk = std::max<int64_t>(1, kMaxHistEntries / (p.slices * p.bins));
  return p;
}

int64_t blocks_for(int64_t tasks) { return (tasks + kWarps - 1) / kWarps; }

// fn(kWords, rows): codes of up to 64, 128 and 256 bits unroll fully; rows as in rows.cuh.
template <typename Fn>
void by_width(const Plan& p, Fn&& fn) {
  with_rows(p.db, [&](auto rows) {
    switch (p.words) {
      case 1: return fn(std::integral_constant<int, 1>{}, rows);
      case 2: return fn(std::integral_constant<int, 2>{}, rows);
      case 4: return fn(std::integral_constant<int, 4>{}, rows);
      default: return fn(std::integral_constant<int, 0>{}, rows);
    }
  });
}

// hist [nc, slices, bins] int32 for queries [q0, q0 + nc).
at::Tensor slice_histograms(const Plan& p, int64_t q0, int64_t nc) {
  at::Tensor hist = p.q.new_zeros({nc, p.slices, p.bins}, p.q.options().dtype(at::kInt));
  const uint64_t* q = reinterpret_cast<const uint64_t*>(p.q.const_data_ptr<uint8_t>()) + q0 * p.words;
  const int64_t blocks = blocks_for(nc * p.slices);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  by_width(p, [&](auto w, auto db) {
    constexpr int kWords = decltype(w)::value;
    using Rows = decltype(db);
    if (p.bins <= kMaxSharedBins) {
      hamming_slice_hist_kernel<kWords, true, Rows><<<blocks, kThreads, kWarps * p.bins * sizeof(int32_t), stream>>>(
          q, db, hist.data_ptr<int32_t>(), nc, p.n, p.words, p.slices, p.slice_rows, p.bins);
    } else {
      hamming_slice_hist_kernel<kWords, false, Rows><<<blocks, kThreads, 0, stream>>>(
          q, db, hist.data_ptr<int32_t>(), nc, p.n, p.words, p.slices, p.slice_rows, p.bins);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return hist;
}

// First output slot, relative to the query's base, of every (slice, distance): items at smaller
// distances come first, then earlier slices at the same distance.
at::Tensor slice_cursors(const at::Tensor& hist64, const at::Tensor& before_distance) {
  return hist64.cumsum(1).sub(hist64).add(before_distance.unsqueeze(1));
}

void emit(const Plan& p, int64_t q0, int64_t nc, at::Tensor& cursor, const int32_t* thr, int32_t radius,
          const int64_t* row_offsets, int64_t k, at::Tensor& dist, at::Tensor& idx) {
  const uint64_t* q = reinterpret_cast<const uint64_t*>(p.q.const_data_ptr<uint8_t>()) + q0 * p.words;
  by_width(p, [&](auto w, auto db) {
    constexpr int kWords = decltype(w)::value;
    hamming_slice_emit_kernel<kWords, decltype(db)><<<blocks_for(nc * p.slices), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        q, db, cursor.data_ptr<int64_t>(), thr, radius, row_offsets, k, q0, dist.data_ptr<int32_t>(),
        idx.data_ptr<int64_t>(), nc, p.n, p.words, p.slices, p.slice_rows, p.bins);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void hamming_topk_cuda(const at::Tensor& q, const at::Tensor& db, int64_t k, at::Tensor& dist, at::Tensor& idx) {
  check_topk_args(q, db, k, dist, idx);
  if (q.size(0) == 0) return;
  c10::cuda::CUDAGuard guard(q.device());
  const Plan p = plan_for(q, db);
  for (int64_t q0 = 0; q0 < p.nq; q0 += p.chunk) {
    const int64_t nc = std::min(p.chunk, p.nq - q0);
    const at::Tensor hist = slice_histograms(p, q0, nc).to(at::kLong);
    const at::Tensor total = hist.sum(1);                   // [nc, bins]
    const at::Tensor below = total.cumsum(1).sub(total);    // items at smaller distances
    // The k-th nearest distance: the number of distances whose inclusive count is still < k.
    const at::Tensor thr = total.cumsum(1).lt(k).sum(1).to(at::kInt).contiguous();
    at::Tensor cursor = slice_cursors(hist, below).contiguous();
    emit(p, q0, nc, cursor, thr.const_data_ptr<int32_t>(), 0, nullptr, k, dist, idx);
  }
}

int32_t clamp_radius(int64_t r, const at::Tensor& q) {
  return static_cast<int32_t>(std::min<int64_t>(r, 8 * q.size(1)));
}

void hamming_radius_count_cuda(const at::Tensor& q, const at::Tensor& db, int64_t r, at::Tensor& counts) {
  check_radius_count_args(q, db, r, counts);
  if (q.size(0) == 0) return;
  c10::cuda::CUDAGuard guard(q.device());
  const Plan p = plan_for(q, db);
  const int32_t radius = clamp_radius(r, q);
  for (int64_t q0 = 0; q0 < p.nq; q0 += p.chunk) {
    const int64_t nc = std::min(p.chunk, p.nq - q0);
    const at::Tensor hist = slice_histograms(p, q0, nc);
    counts.narrow(0, q0, nc).copy_(hist.narrow(2, 0, radius + 1).sum({1, 2}));
  }
}

void hamming_radius_fill_cuda(const at::Tensor& q, const at::Tensor& db, int64_t r, const at::Tensor& offsets,
                              at::Tensor& idx, at::Tensor& dist) {
  check_radius_fill_args(q, db, r, offsets, idx, dist);
  if (q.size(0) == 0) return;
  c10::cuda::CUDAGuard guard(q.device());
  TORCH_CHECK_VALUE(offsets[0].item<int64_t>() == 0, "offsets must start at 0");
  const Plan p = plan_for(q, db);
  const int32_t radius = clamp_radius(r, q);
  for (int64_t q0 = 0; q0 < p.nq; q0 += p.chunk) {
    const int64_t nc = std::min(p.chunk, p.nq - q0);
    const at::Tensor hist = slice_histograms(p, q0, nc).to(at::kLong);
    const at::Tensor total = hist.sum(1);
    // The kernel trusts offsets for its slots: they must be exactly the counts' prefix sums.
    const at::Tensor expected = offsets.narrow(0, q0 + 1, nc).sub(offsets.narrow(0, q0, nc));
    TORCH_CHECK_VALUE(total.narrow(1, 0, radius + 1).sum(1).equal(expected),
                      "offsets do not match hamming_radius_count for queries ", q0, "..", q0 + nc - 1);
    at::Tensor cursor = slice_cursors(hist, total.cumsum(1).sub(total)).contiguous();
    emit(p, q0, nc, cursor, nullptr, radius, offsets.const_data_ptr<int64_t>(), 0, dist, idx);
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(hashkern, CUDA, m) {
  m.impl("hamming_topk", &hamming_topk_cuda);
  m.impl("hamming_radius_count", &hamming_radius_count_cuda);
  m.impl("hamming_radius_fill", &hamming_radius_fill_cuda);
}

}  // namespace hashkern
