// MaxSim (ColBERT late interaction) on the CPU: the problem shared by the ISA variants
// (maxsim_isa.h, compiled once per instruction set) and the op glue (maxsim.cpp).
//
// Query rows r = n Lq + i (q [nq, Lq, D]) against documents given as token rows [T, D] with
// offsets: document j is tokens [offsets[j], offsets[j + 1]). For each (query row, document) the
// kernel finds max_t dot(q_r, tok_t) over the document's real tokens and its first argmax, and
// reduces score[n, j] = scale[n] * sum over real rows i of the max. The [Lq, Ld] similarity block
// never goes to memory: a register tile of (MV vectors of query rows) x (NR tokens) is reduced to a
// running max as soon as its dot products over D are done.
#pragma once
#include <cstdint>

namespace hashkern {
namespace maxsim {

template <typename T>
struct Problem {
  const T* qpack;            // [groups, panels, D, PANEL]: query rows of each group, transposed, zero-padded
  int64_t panels;            // panels per group (ceil(group_rows / PANEL))
  int64_t group_rows;        // query rows per group: nq Lq (all pairs) or Lq (paired)
  int64_t Lq, D;
  const uint8_t* q_mask;     // [nq, Lq] 1 = real query token, or nullptr (all real)
  const T* scale;            // [nq] factor of each query's sum
  const T* tokens;           // [T, D] document token rows, contiguous
  const int64_t* offsets;    // [nd + 1]
  const uint8_t* tok_mask;   // [T] 1 = real token, or nullptr
  int64_t nd;
  int64_t group;             // 0: every query against every document; c > 0: document j against query j / c
  T* scores;                 // all pairs [nq, nd]; paired [nd]
  int32_t* argmax;           // [nd, group_rows] token index within the document (-1 at padded query rows), or nullptr
};

// Documents [doc_begin, doc_end) of the problem; one call per worker. `rows` is scratch of
// panels * PANEL maxima and as many argmax values.
#define HASHKERN_MAXSIM_DECLARE(ns)                                                        \
  namespace ns {                                                                           \
  int panel_rows(bool dbl);                                                                \
  void forward_docs(const Problem<float>&, int64_t doc_begin, int64_t doc_end, float* rows, float* idx);    \
  void forward_docs(const Problem<double>&, int64_t doc_begin, int64_t doc_end, double* rows, double* idx); \
  }

HASHKERN_MAXSIM_DECLARE(portable)
HASHKERN_MAXSIM_DECLARE(avx2)
HASHKERN_MAXSIM_DECLARE(avx512)

}  // namespace maxsim
}  // namespace hashkern
