"""The registry of every Triton kernel hashkern launches, as the AOT check (``tools/triton_aot.py``) compiles them.

Each :class:`KernelFamily` names the kernels of one op and builds, for a dict of user-level sizes, the
launches its CUDA launcher makes (tile constexprs, num_warps, num_stages from the launcher's own
``cuda_tiles`` / ``scan_config``; argument values from the sizes, so the JIT's specialisation is the one
that runs: multiples of 16 marked divisible, ints equal to 1 turned into constants). Every family lists

* ``real``: the goal sizes of the op (the ones ``make gpu-check`` benchmarks), in every dtype;
* ``ones``: sizes with each integer the API lets a user set to 1 equal to 1 (alone and all together),
  in ``ones_dtypes``: an int argument equal to 1 is a ``constexpr`` to the JIT, where ``x.to(...)``
  fails ("'int' object has no attribute 'to'"), which the interpreter never shows.

A new kernel joins by adding a family to ``FAMILIES`` (or its kernel and launches to an existing one);
``tests/test_triton_aot.py`` fails while a ``*_kernel`` of the package is in no family.

``python -m tools.aot_specs [--triton DIR] [--family NAME] [--which real,ones]`` compiles them for sm_90
(``--triton``: a folder holding another Triton, put first on the compile process's path) and prints one
line per launch; exit status 1 when one fails, spills registers or exceeds the shared memory of an H100.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Callable, Sequence

import torch

from tools.triton_aot import SHARED_LIMIT, make_launch

_TL = {torch.float32: "fp32", torch.float64: "fp64", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _meta(shape, dtype):
    return torch.empty(shape, dtype=dtype, device="meta")


@dataclasses.dataclass(frozen=True)
class KernelFamily:
    name: str
    kernels: tuple[str, ...]  # "module.function" of every kernel the family launches
    launches: Callable[..., list[dict]]  # launches(sizes: dict, dtype) -> launch dicts (tools.triton_aot)
    real: tuple[dict, ...]
    ones: tuple[dict, ...]
    dtypes: tuple = (torch.float32,)  # for the real sizes
    ones_dtypes: tuple = (torch.float32,)
    ones_options: dict = dataclasses.field(default_factory=dict)  # keyword arguments of launches() for the ones

    def all_launches(self, which: Sequence[str] = ("real", "ones"), all_dtypes: bool = True) -> list[dict]:
        """The launches at the ``which`` size sets; the real sizes in every dtype, or (``all_dtypes`` False)
        in the first."""
        result = []
        for kind in which:
            if kind == "real":
                sizes, dtypes = self.real, self.dtypes if all_dtypes else self.dtypes[:1]
            else:
                sizes, dtypes = self.ones, self.ones_dtypes
            options = self.ones_options if kind == "ones" else {}
            for size in sizes:
                for dtype in dtypes:
                    for launch in self.launches(size, dtype, **options):
                        launch["sizes"] = f"{kind} {size} {_TL[dtype]}"
                        result.append(launch)
        return result


# ----------------------------------------------------------------------------------------- patch similarity

def _options(meta: dict) -> tuple[dict, dict]:
    return ({k: meta[k] for k in ("num_warps", "num_stages") if k in meta},
            {k: v for k, v in meta.items() if k not in ("num_warps", "num_stages")})


def patchsim_launches(size: dict, dtype: torch.dtype, masks=(False, True)) -> list[dict]:
    """The launches patch_similarity makes on CUDA for x1 [b1, P, D], x2 [b2, Q, D] of ``dtype``, contiguous,
    with and without masks (``masks``); fp32 under both TF32 settings (DOT_PRECISION "ieee" and "tf32")."""
    import triton.language as tl

    from hashkern.ops.patchsim import triton_epilogue as epi
    from hashkern.ops.patchsim import triton_kernels as kernels
    from hashkern.ops.patchsim import triton_launch as L

    b1, P, b2, Q, D = (size[k] for k in ("b1", "P", "b2", "Q", "D"))
    dots = {torch.float64: ("fma",), torch.float32: ("ieee", "tf32")}.get(dtype, ("ieee",))
    R1, R2 = b1 * P, b2 * Q
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    acc_tl = tl.float64 if acc == torch.float64 else tl.float32
    X1, X2, S = _meta((R1, D), dtype), _meta((R2, D), dtype), _meta((1,), acc)
    V, stats2 = _meta((b2, R1), acc), _meta((2, b2, R1), acc)
    mask1, mask2, argmax = _meta((R1,), torch.int8), _meta((R2,), torch.int8), _meta((b2, R1), torch.int32)
    strides = dict(s1r=D, s1d=1, s2r=D, s2d=1)
    launches = []
    opts, tiles = _options(L.cuda_tiles("fwd", dtype, D))
    images = L.images_per_program(b2, Q, tiles["BLOCK_N"])
    for dot in dots:
        for reduce_max in (True, False):
            for has_mask in masks:
                args = dict(x1_ptr=X1, x2_ptr=X2, mask1_ptr=mask1, mask2_ptr=mask2, value_ptr=V,
                            stat_ptr=argmax if reduce_max else stats2, inv_t_ptr=S, R1=R1, b2=b2, Q=Q, D=D,
                            IMAGES=images, **strides)
                launches.append(make_launch(kernels._patch_similarity_fwd_kernel, args, dict(
                    REDUCE_MAX=reduce_max, HAS_MASK1=has_mask, HAS_MASK2=has_mask, ACC=acc_tl, DOT_PRECISION=dot,
                    **tiles), opts))
    # the GEMM-then-epilogue forward: its first chunk, as gemm_chunks cuts it
    r0, r1, m0, m1 = next(L.gemm_chunks(R1, b2, Q, L.GEMM_CHUNK_ELEMENTS))
    opts, tiles = _options(L.epilogue_tiles(Q, acc, cuda=True))
    for has_mask in masks:
        args = dict(sim_ptr=_meta((r1 - r0, (m1 - m0) * Q), acc), mask1_ptr=mask1, mask2_ptr=mask2, value_ptr=V,
                    argmax_ptr=argmax, r0=r0, rows=r1 - r0, m0=m0, images=m1 - m0, R1=R1, Q=Q)
        launches.append(make_launch(epi._patch_similarity_epilogue_kernel, args, dict(
            HAS_MASK1=has_mask, HAS_MASK2=has_mask, ACC=acc_tl, **tiles), opts))
    opts, tiles = _options(L.cuda_tiles("softmax_weights", dtype, D))
    cols = min(b2, max(1, L.DS_CHUNK_ELEMENTS // (R1 * Q))) * Q
    args = dict(x1_ptr=X1, x2_ptr=X2, mask2_ptr=mask2, coef_ptr=V, stat_ptr=stats2, smooth_ptr=V,
                ds_ptr=_meta((R1, cols), dtype), inv_t_ptr=S, r0=0, r1=R1, c0=0, c1=cols, R1=R1,
                b2=b2, Q=Q, D=D, **strides)
    for dot in dots:
        for has_mask in masks:
            launches.append(make_launch(kernels._patch_similarity_softmax_weights_kernel, args, dict(
                HAS_MASK2=has_mask, ACC=acc_tl, DOT_PRECISION=dot, **tiles), opts))
    opts, tiles = _options(L.cuda_tiles("dx1", dtype, D))
    launches.append(make_launch(kernels._patch_similarity_dx1_kernel, dict(
        x2_ptr=X2, argmax_ptr=argmax, coef_ptr=V, dx1_ptr=X1, R1=R1, b2=b2, Q=Q, D=D, s2r=D, s2d=1),
        dict(ACC=acc_tl, **tiles), opts))
    opts, tiles = _options(L.cuda_tiles("csr", dtype, D))
    bins = L.csr_bins(Q)
    if bins <= L.MAX_CSR_BINS:
        tiles["BLOCK_T"] = L.csr_block(bins, tiles["BLOCK_T"])
        window = min(L.CSR_WINDOW, R1)
        csr = dict(argmax_ptr=argmax, R1=R1, WINDOW=window, n_windows=-(-R1 // window))
        counts = _meta((b2, csr["n_windows"], bins), torch.int32)
        launches.append(make_launch(kernels._patch_similarity_csr_count_kernel, dict(csr, counts_ptr=counts),
                                    dict(BINS=bins, **tiles), opts))
        launches.append(make_launch(kernels._patch_similarity_csr_place_kernel,
                                    dict(csr, starts_ptr=counts, order_ptr=argmax), dict(BINS=bins, **tiles), opts))
    opts, tiles = _options(L.cuda_tiles("dx2", dtype, D))
    E = max(1, b2 * (R1 // L.SPLIT))
    pieces, segs = _meta((E,), torch.int32), _meta((R2,), torch.int32)
    common = dict(x1_ptr=X1, coef_ptr=V, order_ptr=argmax, offsets_ptr=_meta((b2, Q + 1), torch.int32),
                  partial_ptr=_meta((E, D), acc), R1=R1, Q=Q, D=D, s1r=D, s1d=1, SPLIT=L.SPLIT)
    launches.append(make_launch(kernels._patch_similarity_dx2_pieces_kernel, dict(
        common, piece_seg_ptr=pieces, piece_start_ptr=pieces), dict(ACC=acc_tl, **tiles), opts))
    launches.append(make_launch(kernels._patch_similarity_dx2_kernel, dict(
        common, first_piece_ptr=segs, n_pieces_ptr=segs, dx2_ptr=X2), dict(ACC=acc_tl, **tiles), opts))
    return launches


def _patchsim_size(b1, P, b2, Q, D):
    return dict(b1=b1, P=P, b2=b2, Q=Q, D=D)


PATCHSIM = KernelFamily(
    "patchsim",
    kernels=tuple(f"hashkern.ops.patchsim.{name}" for name in (
        "triton_kernels._patch_similarity_fwd_kernel", "triton_kernels._patch_similarity_softmax_weights_kernel",
        "triton_epilogue._patch_similarity_epilogue_kernel", "triton_kernels._patch_similarity_dx1_kernel",
        "triton_kernels._patch_similarity_csr_count_kernel", "triton_kernels._patch_similarity_csr_place_kernel",
        "triton_kernels._patch_similarity_dx2_pieces_kernel", "triton_kernels._patch_similarity_dx2_kernel")),
    launches=patchsim_launches,
    # the goal sizes: b = 256, P = Q = 196, D = 768 and b = 512, P = Q = 49, D = 512
    real=(_patchsim_size(256, 196, 256, 196, 768), _patchsim_size(512, 49, 512, 49, 512)),
    # all ones; then b2 = 1 (one x2 image), b1 = P = 1, Q = 1, D = 1, each with the others real
    ones=(_patchsim_size(1, 1, 1, 1, 1), _patchsim_size(4, 49, 1, 49, 512), _patchsim_size(1, 1, 3, 196, 768),
          _patchsim_size(3, 196, 2, 1, 768), _patchsim_size(2, 49, 3, 49, 1)),
    dtypes=(torch.bfloat16, torch.float16, torch.float32, torch.float64),
    ones_dtypes=(torch.bfloat16,),
    ones_options=dict(masks=(True,)),  # the masked kernels hold the unmasked ones' code and more
)


# ----------------------------------------------------------------------------------------- SoftSort scans

SCAN_MODES = ((True, True), (False, True), (False, False))  # (COSINE, SHARED_V); the cosine shares its values


def softsort_scan_launches(size: dict, dtype: torch.dtype, modes=SCAN_MODES) -> list[dict]:
    """The CUDA launches of the SoftSort scans for ``rows`` rows of ``n`` positions and ``d`` features."""
    import triton

    from hashkern.ops.softsort.triton_kernels import _softsort_scan_bwd_kernel, _softsort_scan_fwd_kernel
    from hashkern.ops.softsort.triton_launch import scan_config

    rows, n, d = size["rows"], size["n"], size["d"]
    cfg = scan_config(n, d, torch.device("cuda"))
    sizes = {"b": rows, "n": n, "d": d, "chunk": cfg.chunk, "nchunks": triton.cdiv(n, cfg.chunk), "tau": 0.005}
    result = []
    for cosine, shared in modes:
        for kernel in (_softsort_scan_fwd_kernel, _softsort_scan_bwd_kernel):
            constexprs = {"SHARED_V": shared, "COSINE": cosine, "BA": cfg.rows, "BD": cfg.features}
            warps = cfg.num_warps if kernel is _softsort_scan_fwd_kernel else cfg.num_warps_bwd(cosine, dtype)
            result.append(make_launch(kernel, {"idx_ptr": "*i64", **sizes}, constexprs, {"num_warps": warps},
                                      rest="*" + _TL[dtype]))
    return result


SOFTSORT_SCAN = KernelFamily(
    "softsort_scan",
    kernels=("hashkern.ops.softsort.triton_kernels._softsort_scan_fwd_kernel",
             "hashkern.ops.softsort.triton_kernels._softsort_scan_bwd_kernel"),
    launches=softsort_scan_launches,
    # n anchors of n positions: the goal n = 1024, d = 128, and sizes that are not multiples of 16
    real=(dict(rows=1024, n=1024, d=128), dict(rows=1000, n=1000, d=100)),
    ones=(dict(rows=1, n=1, d=1), dict(rows=1, n=1024, d=128), dict(rows=64, n=1, d=128),
          dict(rows=64, n=1000, d=1)),
    dtypes=(torch.float32, torch.float64),
)

def softsort_forms_launches(size: dict, dtype: torch.dtype, modes=SCAN_MODES) -> list[dict]:
    """The CUDA launches of the grouped and chunked SoftSort (``triton_forms``) for ``rows`` rows of ``n``
    positions and ``d`` features: the grouped form at its widest group table (``GROUPS_MAX``: 64-bit codes and
    up; narrower tables need fewer registers), the chunked form with every row in one launch."""
    import triton

    from hashkern.ops.softsort import triton_forms as F
    from hashkern.ops.softsort.triton_chunked_kernels import (
        _softsort_chunked_bwd_kernel,
        _softsort_chunked_fwd_kernel,
    )
    from hashkern.ops.softsort.triton_grouped_kernels import _softsort_grouped_bwd_kernel, _softsort_grouped_fwd_kernel

    rows, n, d = size["rows"], size["n"], size["d"]
    cfg = F.form_config(n, d, torch.device("cuda"), dtype)
    ints = {"b": rows, "n": n, "d": d, "slots": rows, "nchunks": triton.cdiv(n, cfg.chunk), "tau": 0.005,
            "eps": 1e-8, "rows_ptr": "*i64", "idx_ptr": "*i64"}
    options = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    result = []
    for cosine, shared in modes:
        final = cosine and cfg.blocks_d(d) == 1
        common = {"SHARED_V": shared, "COSINE": cosine, "BD": cfg.features, "IEEE": dtype == torch.float64}
        grouped = dict(common, G=F.GROUPS_MAX, RB=cfg.group_rows(F.GROUPS_MAX), BN=cfg.block_n)
        result.append(make_launch(_softsort_grouped_fwd_kernel, ints, dict(grouped, FINAL=final), options,
                                  rest="*" + _TL[dtype]))
        result.append(make_launch(_softsort_grouped_bwd_kernel, ints, grouped, options, rest="*" + _TL[dtype]))
        chunked = dict(common, C=cfg.chunk)
        result.append(make_launch(_softsort_chunked_fwd_kernel, ints, dict(chunked, FINAL=final), options,
                                  rest="*" + _TL[dtype]))
        result.append(make_launch(_softsort_chunked_bwd_kernel, ints, chunked, options, rest="*" + _TL[dtype]))
    return result


SOFTSORT_FORMS = KernelFamily(
    "softsort_forms",
    kernels=tuple(f"hashkern.ops.softsort.{name}" for name in (
        "triton_grouped_kernels._softsort_grouped_fwd_kernel", "triton_grouped_kernels._softsort_grouped_bwd_kernel",
        "triton_chunked_kernels._softsort_chunked_fwd_kernel", "triton_chunked_kernels._softsort_chunked_bwd_kernel")),
    launches=softsort_forms_launches,
    # n anchors of n positions: the goal n = 1024, d = 128 (n = 8192 specialises the same way: multiples of 16),
    # and sizes that are not multiples of 16
    real=(dict(rows=1024, n=1024, d=128), dict(rows=1000, n=1000, d=100)),
    ones=(dict(rows=1, n=1, d=1), dict(rows=1, n=1024, d=128), dict(rows=64, n=1, d=128),
          dict(rows=64, n=1000, d=1)),
    dtypes=(torch.float32, torch.float64),
)

# Every family the AOT check compiles. Add new kernels here.
FAMILIES: list[KernelFamily] = [PATCHSIM, SOFTSORT_SCAN, SOFTSORT_FORMS]


def family(name: str) -> KernelFamily:
    for candidate in FAMILIES:
        if candidate.name == name:
            return candidate
    raise ValueError(f"no kernel family {name!r}; known: {[f.name for f in FAMILIES]}")


def build(names: Sequence[str] | None = None, which: Sequence[str] = ("real", "ones"),
          all_dtypes: bool = True) -> list[dict]:
    """The launches of the named families (all when None) at the chosen size sets."""
    chosen = FAMILIES if names is None else [family(name) for name in names]
    return [launch for f in chosen for launch in f.all_launches(which, all_dtypes)]


# Problems found and owned elsewhere: (kernel, a piece of the launch's label, why it is let through). Reported
# by problems(..., known=True), never silently.
KNOWN_PROBLEMS = [
    # fp32: Triton 3.6.0 only (3.8 compiles these spill-free).
    ("_softsort_chunked_bwd_kernel", "'d': 100} fp32] {'SHARED_V': True, 'COSINE': True", "Triton 3.6.0: 12 B of "
     "spill stores at 255 registers (sorted cosine, d = 100); 3.8: none (benchmarks/notes/softsort.md)"),
    ("_softsort_chunked_bwd_kernel", "{'n': 1, 'nchunks': 1,", "Triton 3.6.0: 4-12 B at 128 registers with n = 1 "
     "(one position: nothing to walk); 3.8: none"),
    # fp64 (exact, not a speed target): spills at 80 or 128 registers, which point at the fp64 division |gap| / tau
    # (ptxas compiles it with a slow-path call); multiplying by 1 / tau left one of these (28 B) but moved results
    # past the 1e-10 tests.
    ("_softsort_grouped_bwd_kernel", "fp64]", "24-40 B at 128 registers (per-row / shared values, Triton 3.8 / "
     "3.6.0)"),
    ("_softsort_chunked_fwd_kernel", "fp64]", "4-8 B at 80 registers (Triton 3.8)"),
    ("_softsort_scan_bwd_kernel", "fp64]", "12-16 B at 128 registers (Triton 3.6.0, the position walk's gather "
     "backward)"),
]


def _known(label: str) -> str | None:
    return next((why for kernel, piece, why in KNOWN_PROBLEMS if label.startswith(kernel) and piece in label), None)


def problems(reports: list[dict], known: bool = False) -> list[str]:
    """One line per launch that failed to compile, spilled registers or needs more shared memory than sm_90:
    those not in KNOWN_PROBLEMS, or (``known``) those in it, with the reason."""
    lines = []
    for r in reports:
        label = f"{r['kernel'].rsplit('.', 1)[-1]} [{r.get('sizes', '')}] {r['constexprs']}"
        if not r["ok"]:
            line = f"FAIL {label}: {r['error']}"
        elif r["spill_bytes"] is None or r["spill_bytes"] > 0:
            line = f"SPILL {label}: {r['spill_bytes']} B, {r['registers']} registers"
        elif r["shared"] > SHARED_LIMIT[r["arch"]]:
            line = f"SHARED {label}: {r['shared']} B"
        else:
            continue
        why = _known(label)
        if known and why:
            lines.append(f"{line} (known: {why})")
        elif not known and not why:
            lines.append(line)
    return lines


def main(argv=None) -> int:
    from tools.triton_aot import compile_families

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triton", default=None, help="a folder holding another Triton (pip install --target)")
    parser.add_argument("--family", action="append", default=None, help="a family name (repeatable; default all)")
    parser.add_argument("--which", default="real,ones")
    parser.add_argument("--first-dtype", action="store_true", help="the real sizes in each family's first dtype only")
    args = parser.parse_args(argv)
    reports, version = compile_families(args.family, args.which.split(","), triton_path=args.triton,
                                        all_dtypes=not args.first_dtype)
    for r in reports:
        if r["ok"]:
            print(f"ok   {r['kernel'].rsplit('.', 1)[-1]} [{r['sizes']}]: {r['registers']} registers, "
                  f"{r['spill_bytes']} spill bytes, {r['shared']} B shared")
    bad = problems(reports)
    print("\n".join(problems(reports, known=True) + bad))
    print(f"triton {version}: {len(reports)} launches compiled for sm_90, {len(bad)} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
