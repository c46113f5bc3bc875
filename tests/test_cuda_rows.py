"""The CUDA kernels' packed-row readers (csrc/cuda/rows.cuh), compiled for the host under
AddressSanitizer: every width and alignment gives exact distances and words, and no byte outside
the matrix is read (ASan poisons the bytes before a misaligned matrix and after its end)."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHECK = r"""
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sanitizer/asan_interface.h>
// device-code shims for the host
#define __device__
#define __forceinline__ inline
template <typename T> T __ldg(const T* p) { return *p; }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
#include "rows.cuh"

using namespace hashkern;

static int naive(const uint8_t* a, const uint8_t* b, int64_t bytes) {
  int d = 0;
  for (int64_t i = 0; i < bytes; ++i) d += __builtin_popcount(a[i] ^ b[i]);
  return d;
}

template <int kWords>
static int check(const ByteRows& rows, const uint64_t* q, const uint8_t* q_bytes, int64_t n) {
  int bad = 0;
  for (int64_t j = 0; j < n; ++j) {
    if (rows.distance<kWords>(q, j) != naive(rows.base + j * rows.bytes, q_bytes, rows.bytes)) ++bad;
    for (int64_t w = 0; w < rows.words; ++w) {
      uint64_t want = 0;
      for (int64_t b = 0; b < 8 && 8 * w + b < rows.bytes; ++b) {
        want |= uint64_t(rows.base[j * rows.bytes + 8 * w + b]) << (8 * b);
      }
      if (rows.word(j, w) != want) ++bad;
    }
  }
  return bad;
}

int main() {
  srand(7);
  int bad = 0, cases = 0;
  const int64_t widths[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 17, 24, 31, 32, 33, 125, 128, 129};
  const int64_t kRowCounts[] = {1, 2, 7};
  for (int64_t bytes : widths) {
    for (int offset = 0; offset < 8; ++offset) {
      for (int64_t n : kRowCounts) {
        const int64_t size = n * bytes;
        // 64-byte aligned block; the matrix starts `offset` bytes in, the bytes before it poisoned
        uint8_t* block = static_cast<uint8_t*>(aligned_alloc(64, ((offset + size + 63) / 64) * 64));
        uint8_t* base = block + offset;
        for (int64_t i = 0; i < size; ++i) base[i] = rand() & 0xff;
        uint8_t* q_bytes = static_cast<uint8_t*>(calloc((bytes + 7) / 8 * 8, 1));
        for (int64_t i = 0; i < bytes; ++i) q_bytes[i] = rand() & 0xff;
        uint64_t* q = reinterpret_cast<uint64_t*>(q_bytes);  // zero-padded whole words, as as_words makes them
        ASAN_POISON_MEMORY_REGION(block, offset);
        ASAN_POISON_MEMORY_REGION(base + size, ((offset + size + 63) / 64) * 64 - offset - size);
        const ByteRows rows = make_byte_rows(base, n, bytes);
        bad += check<0>(rows, q, q_bytes, n);
        if (rows.words == 1) bad += check<1>(rows, q, q_bytes, n);
        if (rows.words == 2) bad += check<2>(rows, q, q_bytes, n);
        if (rows.words == 4) bad += check<4>(rows, q, q_bytes, n);
        ASAN_UNPOISON_MEMORY_REGION(block, ((offset + size + 63) / 64) * 64);
        free(block);
        free(q_bytes);
        ++cases;
      }
    }
  }
  printf("%d cases, %d wrong\n", cases, bad);
  return bad != 0;
}
"""


def test_byte_rows_exact_and_in_bounds(tmp_path):
    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    source = tmp_path / "rows_check.cpp"
    source.write_text(CHECK)
    binary = tmp_path / "rows_check"
    build = subprocess.run([compiler, "-std=c++17", "-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer",
                            "-Wno-unknown-pragmas", f"-I{ROOT / 'csrc' / 'cuda'}", str(source), "-o", str(binary)],
                           capture_output=True, text=True)
    if build.returncode != 0 and "asan" in build.stderr.lower() and "cannot find" in build.stderr.lower():
        pytest.skip(f"the compiler has no AddressSanitizer runtime: {build.stderr.strip()[-200:]}")
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(binary)], capture_output=True, text=True, env={"ASAN_OPTIONS": "detect_leaks=0"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "480 cases, 0 wrong" in run.stdout
