// Argument checks of the search ops, shared by the CPU and CUDA kernels (the Python wrappers
// validate first; these keep a direct torch.ops.hashkern call from writing out of bounds).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "../checks.h"

namespace hashkern {

// q [nq, W], db [N >= 1, W] uint8 on one device.
inline void check_search_args(const at::Tensor& q, const at::Tensor& db) {
  check_packed("q", q);
  check_packed("db", db);
  TORCH_CHECK_VALUE(q.dim() == 2 && db.dim() == 2, "q and db must be 2-D packed codes");
  TORCH_CHECK_VALUE(q.size(1) == db.size(1), "q and db must have the same bytes per row, got ", q.size(1),
                    " and ", db.size(1));
  TORCH_CHECK_VALUE(q.size(1) >= 1, "codes must have at least one byte per row");
  TORCH_CHECK_VALUE(db.size(0) >= 1, "db is empty");
  TORCH_CHECK_VALUE(q.device() == db.device(), "q and db must be on the same device");
}

// hamming_topk: 1 <= k <= N, dist [nq, k] int32, idx [nq, k] int64.
inline void check_topk_args(const at::Tensor& q, const at::Tensor& db, int64_t k, const at::Tensor& dist,
                            const at::Tensor& idx) {
  check_search_args(q, db);
  TORCH_CHECK_VALUE(k >= 1 && k <= db.size(0), "k must be in [1, ", db.size(0), "], got ", k);
  check_out(dist, {q.size(0), k}, at::kInt, q);
  check_out(idx, {q.size(0), k}, at::kLong, q);
}

// hamming_radius_count: r >= 0, counts [nq] int64.
inline void check_radius_count_args(const at::Tensor& q, const at::Tensor& db, int64_t r, const at::Tensor& counts) {
  check_search_args(q, db);
  TORCH_CHECK_VALUE(r >= 0, "r must be >= 0, got ", r);
  check_out(counts, {q.size(0)}, at::kLong, q);
}

// hamming_radius_fill: offsets [nq + 1] int64 ending at nnz, idx [nnz] int64, dist [nnz] int32.
inline void check_radius_fill_args(const at::Tensor& q, const at::Tensor& db, int64_t r, const at::Tensor& offsets,
                                   const at::Tensor& idx, const at::Tensor& dist) {
  check_search_args(q, db);
  TORCH_CHECK_VALUE(r >= 0, "r must be >= 0, got ", r);
  TORCH_CHECK_TYPE(offsets.scalar_type() == at::kLong, "offsets must be int64, got ", offsets.scalar_type());
  TORCH_CHECK_VALUE(offsets.dim() == 1 && offsets.size(0) == q.size(0) + 1 && offsets.is_contiguous() &&
                        offsets.device() == q.device(),
                    "offsets must be a contiguous [nq + 1] tensor on the device of q");
  const int64_t nnz = offsets[-1].item<int64_t>();
  check_out(idx, {nnz}, at::kLong, q);
  check_out(dist, {nnz}, at::kInt, q);
}

}  // namespace hashkern
