#!/usr/bin/env bash
# Installs hashkern as a new user would, in fresh venvs with the CPU build of torch $TORCH_FLOOR
# (the oldest torch CI proves), and smoke-tests each install (tests/packaging/smoke.py):
#   1. an sdist (python -m build --sdist), checked to carry the headers, weights and license;
#   2. venv A, a C++ compiler that fails (CXX=/bin/false): installs without hashkern._C, says so
#      in the build output, warns once at import, and every op still runs;
#   3. venv A, from the sdist, with --no-build-isolation: builds hashkern._C;
#   4. a wheel built from the same sdist (pip wheel --no-build-isolation), installed in venv B.
# Each step's duration is printed. Logs: $PACKAGING_OUT (default build/packaging).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TORCH_FLOOR=${TORCH_FLOOR:-2.13.0}
OUT=$(mkdir -p "${PACKAGING_OUT:-build/packaging}" && cd "${PACKAGING_OUT:-build/packaging}" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export MAX_JOBS=${MAX_JOBS:-2} PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONPATH HASHKERN_NO_EXT HASHKERN_FORCE_EXT HASHKERN_FORCE_CUDA TRITON_INTERPRET
START=$SECONDS
step() { STEP_NAME=$1; STEP_START=$SECONDS; echo "== packaging: $1"; }
done_step() { echo "== packaging: $STEP_NAME: $((SECONDS - STEP_START)) s"; }
fail() { echo "packaging check FAILED: $*"; exit 1; }
logged() {  # logged LOG command...: runs it, keeping the output; shows its tail when it fails
    local log=$1; shift
    "$@" > "$log" 2>&1 || { tail -40 "$log"; fail "$* (log: $log)"; }
}
new_venv() {  # new_venv DIR: torch (CPU build) and the build tools, nothing else
    python3 -m venv "$1"
    logged "$OUT/venv-$(basename "$1").log" "$1/bin/pip" install "torch==$TORCH_FLOOR" numpy build \
        "setuptools>=77" wheel ninja
    "$1/bin/python" -c "import torch; assert torch.__version__.startswith('$TORCH_FLOOR'), torch.__version__"
}
smoke() {  # smoke VENV [--no-ext]: from outside the source tree, so the installed copy is imported
    local log="$OUT/smoke-$(basename "$1")${2:-}.log"
    (cd "$WORK" && "$1/bin/python" "$ROOT/tests/packaging/smoke.py" "${@:2}") > "$log" 2>&1 \
        || { cat "$log"; fail "smoke test in $1 ${2:-}"; }
    grep -E "^(hashkern [0-9]|import warning|smoke test passed)" "$log"
}

step "fresh venv A (torch $TORCH_FLOOR, CPU build)"
new_venv "$WORK/A"
done_step

step "sdist"
logged "$OUT/sdist.log" "$WORK/A/bin/python" -m build --sdist --no-isolation --outdir "$WORK/dist" "$ROOT"
SDIST=$(ls "$WORK"/dist/torch_hashkern-*.tar.gz)
tar tzf "$SDIST" > "$OUT/sdist-files.txt"
for header in csrc/*.h csrc/cpu/*.h csrc/cuda/*.cuh; do
    grep -q "/$header\$" "$OUT/sdist-files.txt" || fail "the sdist lacks $header"
done
for file in LICENSE hashkern/weights/fmnist-vit.pt csrc/cuda/hamming_topk.cu hashkern/_version.py; do
    grep -q "/$file\$" "$OUT/sdist-files.txt" || fail "the sdist lacks $file"
done
! grep -qE "_C\..*so$|_build_info.py$" "$OUT/sdist-files.txt" || fail "the sdist carries a build product"
echo "$(basename "$SDIST"): $(wc -l < "$OUT/sdist-files.txt") files, $(du -k "$SDIST" | cut -f1) KiB"
done_step

step "venv A: install from the sdist with a failing compiler (CXX=/bin/false)"
logged "$OUT/install-no-compiler.log" env CXX=/bin/false "$WORK/A/bin/pip" install -v --no-build-isolation "$SDIST"
grep -m1 "installing WITHOUT the compiled extension" "$OUT/install-no-compiler.log" \
    || fail "the build output does not say the extension was left out"
smoke "$WORK/A" --no-ext
done_step

step "venv A: install from the sdist (builds hashkern._C, MAX_JOBS=$MAX_JOBS)"
logged "$OUT/install-sdist.log" "$WORK/A/bin/pip" install -v --no-build-isolation --force-reinstall --no-deps "$SDIST"
grep -m1 -oE "hashkern: building.*" "$OUT/install-sdist.log"
smoke "$WORK/A"
done_step

step "wheel from the sdist (pip wheel --no-build-isolation)"
logged "$OUT/wheel.log" "$WORK/A/bin/pip" wheel -v --no-build-isolation --no-deps -w "$WORK/wheels" "$SDIST"
WHEEL=$(ls "$WORK"/wheels/torch_hashkern-*.whl)
"$WORK/A/bin/python" -m zipfile -l "$WHEEL" > "$OUT/wheel-files.txt"
for file in "hashkern/_C\..*\.so" hashkern/_build_info.py hashkern/weights/fmnist-vit.pt "licenses/LICENSE"; do
    grep -qE "$file" "$OUT/wheel-files.txt" || fail "the wheel lacks $file"
done
echo "$(basename "$WHEEL"): $(du -k "$WHEEL" | cut -f1) KiB"
done_step

step "fresh venv B: install the wheel"
new_venv "$WORK/B"
logged "$OUT/install-wheel.log" "$WORK/B/bin/pip" install "$WHEEL"
smoke "$WORK/B"
done_step

echo "packaging check passed in $((SECONDS - START)) s (torch $TORCH_FLOOR, MAX_JOBS=$MAX_JOBS)"
