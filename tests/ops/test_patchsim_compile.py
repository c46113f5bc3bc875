"""Every CUDA launch of the patch-similarity kernels compiles for sm_90 as the JIT would specialise it
(real sizes and strides: divisibility-16 and equal-to-1 attributes from Triton's own binder), without
register spills, within the 227 KiB of shared memory of an H100/H200, and on tensor cores for half and
TF32 inputs. Runs without a GPU (hashkern/ops/_triton_aot.py); numerics are tested in test_patchsim.py."""

import pytest
import torch

pytest.importorskip("triton")

from hashkern.ops._triton_aot import SHARED_LIMIT, compile_for_gpus, make_launch  # noqa: E402

# (dtype, DOT_PRECISION): fp32 under both TF32 settings of hashkern.ops._precision
PRECISIONS = [(torch.bfloat16, "ieee"), (torch.float16, "ieee"), (torch.float32, "tf32"), (torch.float32, "ieee"),
              (torch.float64, "fma")]
# the GPU sizes: b = 256, P = Q = 196, D = 768 and b = 512, P = Q = 49, D = 512
SIZES = [(256, 196, 768), (512, 49, 512)]


def _meta(shape, dtype):
    return torch.empty(shape, dtype=dtype, device="meta")


def _launches(dtype, dot, b, P, D):
    """The launches patch_similarity makes on CUDA for [b, P, D] inputs, with the real argument values."""
    import triton.language as tl

    from hashkern.ops.patchsim import triton_kernels as kernels
    from hashkern.ops.patchsim import triton_launch as L

    Q, R1 = P, b * P
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    acc_tl = tl.float64 if acc == torch.float64 else tl.float32
    X, V, S = _meta((R1, D), dtype), _meta((b, R1), acc), _meta((1,), acc)
    mask, argmax = _meta((R1,), torch.int8), _meta((b, R1), torch.int32)
    strides = dict(s1r=D, s1d=1, s2r=D, s2d=1)

    def options(meta):
        return {k: meta[k] for k in ("num_warps", "num_stages")}, {k: v for k, v in meta.items()
                                                                    if k not in ("num_warps", "num_stages")}

    launches = []
    opts, tiles = options(L.cuda_tiles("fwd", dtype))
    images = L.images_per_program(b, Q, tiles["BLOCK_N"])
    for reduce_max in (True, False):
        for has_mask in (False, True):
            args = dict(x1_ptr=X, x2_ptr=X, mask1_ptr=mask, mask2_ptr=mask, value_ptr=V,
                        stat_ptr=argmax if reduce_max else _meta((2, b, R1), acc), inv_t_ptr=S, R1=R1, b2=b, Q=Q, D=D,
                        IMAGES=images, **strides)
            launches.append(make_launch(kernels._patch_similarity_fwd_kernel, args, dict(
                REDUCE_MAX=reduce_max, HAS_MASK1=has_mask, HAS_MASK2=has_mask, ACC=acc_tl, DOT_PRECISION=dot,
                **tiles), opts))
    opts, tiles = options(L.cuda_tiles("softmax_weights", dtype))
    chunk_cols = max(1, L.DS_CHUNK_ELEMENTS // (R1 * Q)) * Q
    args = dict(x1_ptr=X, x2_ptr=X, mask2_ptr=mask, coef_ptr=V, stat_ptr=_meta((2, b, R1), acc), smooth_ptr=V,
                ds_ptr=_meta((R1, chunk_cols), dtype), inv_t_ptr=S, r0=0, r1=R1, c0=Q, c1=Q + chunk_cols, R1=R1,
                b2=b, Q=Q, D=D, **strides)
    for has_mask in (False, True):
        launches.append(make_launch(kernels._patch_similarity_softmax_weights_kernel, args, dict(
            HAS_MASK2=has_mask, ACC=acc_tl, DOT_PRECISION=dot, **tiles), opts))
    if dot == "tf32":  # the gathers do not multiply: one fp32 set is enough
        return launches
    opts, tiles = options(L.cuda_tiles("dx1", dtype))
    launches.append(make_launch(kernels._patch_similarity_dx1_kernel, dict(
        x2_ptr=X, argmax_ptr=argmax, coef_ptr=V, dx1_ptr=X, R1=R1, b2=b, Q=Q, D=D, s2r=D, s2d=1),
        dict(ACC=acc_tl, **tiles), opts))
    opts, tiles = options(L.cuda_tiles("csr", dtype))
    bins = L.csr_bins(Q)
    tiles["BLOCK_T"] = L.csr_block(bins, tiles["BLOCK_T"])
    window = min(L.CSR_WINDOW, R1)
    csr = dict(argmax_ptr=argmax, R1=R1, WINDOW=window, n_windows=-(-R1 // window))
    counts = _meta((b, csr["n_windows"], bins), torch.int32)
    launches.append(make_launch(kernels._patch_similarity_csr_count_kernel, dict(csr, counts_ptr=counts),
                                dict(BINS=bins, **tiles), opts))
    launches.append(make_launch(kernels._patch_similarity_csr_place_kernel,
                                dict(csr, starts_ptr=counts, order_ptr=argmax), dict(BINS=bins, **tiles), opts))
    opts, tiles = options(L.cuda_tiles("dx2", dtype))
    E = b * (R1 // L.SPLIT)
    pieces, segs = _meta((E,), torch.int32), _meta((b * Q,), torch.int32)
    common = dict(x1_ptr=X, coef_ptr=V, order_ptr=argmax, offsets_ptr=_meta((b, Q + 1), torch.int32),
                  partial_ptr=_meta((E, D), acc), R1=R1, Q=Q, D=D, s1r=D, s1d=1, SPLIT=L.SPLIT)
    launches.append(make_launch(kernels._patch_similarity_dx2_pieces_kernel, dict(
        common, piece_seg_ptr=pieces, piece_start_ptr=pieces), dict(ACC=acc_tl, **tiles), opts))
    launches.append(make_launch(kernels._patch_similarity_dx2_kernel, dict(
        common, first_piece_ptr=segs, n_pieces_ptr=segs, dx2_ptr=X), dict(ACC=acc_tl, **tiles), opts))
    return launches


@pytest.fixture(scope="module")
def reports():
    launches = [launch for dtype, dot in PRECISIONS for size in SIZES for launch in _launches(dtype, dot, *size)]
    return compile_for_gpus(launches, archs=(90,))


def _name(r):
    return f"{r['kernel'].rsplit('.', 1)[1]} {r['signature'].get('x1_ptr', r['signature'].get('argmax_ptr'))} " \
           f"{ {k: v for k, v in r['constexprs'].items() if k.isupper()} }"


def test_every_launch_compiles_for_sm90(reports):
    failures = [f"{_name(r)}: {r['error']}" for r in reports if not r["ok"]]
    assert not failures, "\n\n".join(failures)


def test_no_register_spills(reports):
    spilled = [f"{_name(r)}: {r['spill_bytes']} B, {r['registers']} registers" for r in reports
               if r["ok"] and (r["spill_bytes"] is None or r["spill_bytes"] > 0)]
    assert not spilled, "\n".join(spilled)


def test_shared_memory_fits_h100(reports):
    assert SHARED_LIMIT[90] == 227 * 1024
    over = [f"{_name(r)}: {r['shared']} B" for r in reports if r["ok"] and r["shared"] > SHARED_LIMIT[90]]
    assert not over, "\n".join(over)


def test_gemm_kernels_use_tensor_cores(reports):
    gemm = [r for r in reports if r["ok"] and r["constexprs"].get("DOT_PRECISION") in ("tf32", "ieee")
            and r["signature"]["x1_ptr"] in ("*bf16", "*fp16")
            or r["ok"] and r["constexprs"].get("DOT_PRECISION") == "tf32"]
    kinds = {(r["kernel"].rsplit(".", 1)[1], r["signature"]["x1_ptr"], r["constexprs"]["DOT_PRECISION"]) for r in gemm}
    assert len(kinds) == 2 * 3  # (forward, dS) x (bf16, fp16, tf32)
    scalar = [_name(r) for r in gemm if not r["tensor_cores"]]
    assert not scalar, "\n".join(scalar)


def test_launches_carry_the_jit_specialisation():
    """The check compiles what the JIT would run: aligned pointers and multiples of 16 are marked divisible."""
    launch = _launches(torch.bfloat16, "ieee", 256, 196, 768)[0]
    names = list(launch["signature"])
    divisible = {names[index] for index, attr in launch["attrs"] if attr == [["tt.divisibility", 16]]}
    assert {"x1_ptr", "x2_ptr", "value_ptr", "stat_ptr", "D", "s1r", "s2r", "R1", "b2"} <= divisible
    assert "Q" not in divisible and "IMAGES" not in divisible  # 196 and the image count are not multiples of 16
    assert launch["signature"]["s1d"] == "constexpr" and launch["constexprs"]["s1d"] == 1  # stride 1: a constant
