// Op schemas of the hashkern library (every m.def lives here) and the Python module hashkern._C.
// Kernels only register implementations (TORCH_LIBRARY_IMPL) in csrc/cpu and csrc/cuda; fake
// (meta) implementations live in Python (torch.library.register_fake), so torch.compile can
// trace every op.
// Ops write into caller-allocated outputs (`out`), which lets tests poison them first.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(hashkern, m) {
  // codes [..., K] of any real dtype or bool -> out [..., ceil(K/8)] uint8; bit j of a row
  // goes to byte j/8, bit j%8; a value > 0 (or true) is a 1 bit.
  m.def("pack_bits(Tensor codes, Tensor(a!) out) -> ()");
  // packed [..., W] uint8 -> out [..., nbits]; a 1 bit becomes +1 (true), a 0 bit -1 when
  // `signed`, else 0 (false).
  m.def("unpack_bits(Tensor packed, int nbits, bool signed, Tensor(a!) out) -> ()");
  // a [na, W], b [nb, W] uint8 -> out [na, nb] int32 = popcount(a_i xor b_j).
  m.def("hamming_distance(Tensor a, Tensor b, Tensor(a!) out) -> ()");
  // q [nq, W], db [N, W] uint8, 1 <= k <= N -> dist [nq, k] int32, idx [nq, k] int64: the k
  // nearest by (distance, index) ascending.
  m.def("hamming_topk(Tensor q, Tensor db, int k, Tensor(a!) dist, Tensor(b!) idx) -> ()");
  // counts [nq] int64: how many database codes lie within distance r of each query.
  m.def("hamming_radius_count(Tensor q, Tensor db, int r, Tensor(a!) counts) -> ()");
  // offsets [nq + 1] int64 (0, then the cumulative counts) -> idx [nnz] int64, dist [nnz] int32:
  // query i's hits in [offsets[i], offsets[i+1]), by (distance, index) ascending.
  m.def("hamming_radius_fill(Tensor q, Tensor db, int r, Tensor offsets, Tensor(a!) idx, Tensor(b!) dist) -> ()");
  // SoftSort by Laplace scans (csrc/cpu/softsort_scan.h). q [b, n] rows sorted descending
  // (float32/64), idx [b, n] int64 their sort permutation, v [1 or b, n, d] of q's dtype, tau > 0.
  // Gather (u = None): out [b, n, d] = E, norms unused. Cosine (u [b, d] unit rows, v shared):
  // out [b, n] = cos(E_r, u), norms [b, n] = |E_r|.
  m.def("softsort_scan_fwd(Tensor q, Tensor idx, Tensor v, float tau, Tensor? u, float eps, Tensor(a!) out, Tensor(b!) norms) -> ()");
  // grad = dE [b, n, d] (gather) or dc [b, n] (cosine, with the forward's c and norms) ->
  // ds [b, n] (unsorted order), dv like v, du [b, d] (cosine only).
  m.def("softsort_scan_bwd(Tensor q, Tensor idx, Tensor v, float tau, Tensor? u, float eps, Tensor grad, Tensor? c, Tensor? norms, Tensor(a!) ds, Tensor(b!) dv, Tensor(c!) du) -> ()");
  // MaxSim (ColBERT late interaction; csrc/cpu/maxsim.h). q [nq, Lq, D] (float32/64), documents as
  // token rows tokens [T, D] with offsets [nd + 1] (document j = tokens[offsets[j]:offsets[j + 1]]),
  // q_mask [nq, Lq] / token_mask [T] bool (True = real), scale [nq]. group = 0: all pairs, scores
  // [nq, nd]; group = c > 0: document j against query j / c only, scores [nd]:
  // scores = scale[n] * sum over real i of max over real t of dot(q[n, i], tokens[t]). argmax
  // [nd, rows] int32 (rows = nq Lq, or Lq when paired): the first maximising token within the
  // document, -1 at padded query rows; a 0-element argmax skips it.
  m.def("maxsim(Tensor q, Tensor? q_mask, Tensor scale, Tensor tokens, Tensor offsets, Tensor? token_mask, int group, Tensor(a!) scores, Tensor(b!) argmax) -> ()");
  // grad like scores -> dq like q, dtokens like tokens.
  m.def("maxsim_backward(Tensor grad, Tensor q, Tensor scale, Tensor tokens, Tensor offsets, int group, Tensor argmax, Tensor(a!) dq, Tensor(b!) dtokens) -> ()");
  // s [b, n] float32/64 -> q [b, n] each row sorted descending, idx [b, n] int64 with
  // q[i, r] = s[i, idx[i, r]]; stable, as torch.sort(s, -1, descending=True, stable=True). CPU only.
  m.def("sort_rows_descending(Tensor s, Tensor(a!) q, Tensor(b!) idx) -> ()");
  // Developer switches of the CPU kernels, no tensors (csrc/cpu/hamming_dispatch.cpp,
  // csrc/cpu/softsort_scan.cpp): `use` = "" reads the kernels in use, other values select.
  m.def("_cpu_kernels(str use) -> str[]");
  // The CPU Hamming kernels chosen for codes of `width` bytes: [kernels, the query count from
  // which the bit-sliced search runs (0: never), "forced" | "measured" | "cache"].
  m.def("_cpu_kernel_choice(int width) -> str[]");
  // The CPU identity the calibration cache is keyed by: vendor, family, model, vector flags.
  m.def("_cpu_identity() -> str");
  m.def("_softsort_groups(str use) -> str");
  // csrc/cpu/maxsim.cpp: the instruction set of the MaxSim kernels now ("portable", "avx2", "avx512").
  m.def("_maxsim_isa() -> str");
}

// Importing hashkern._C runs the registrations above; the module itself is empty.
static struct PyModuleDef hashkern_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&hashkern_module); }
