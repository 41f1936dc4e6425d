"""The CPU's float32 FMA peak: every thread runs independent fused multiply-adds on registers only, with
the widest vectors the CPU has (AVX-512, else AVX2). No GEMM, LSTM or memory traffic reaches this; it is
the ceiling against which the benchmark's GFLOP/s are read (a large library matmul reaches ~80% of it here).

    python -m benchmarks.fma_peak [--threads N]

Compiles a small C++ kernel with torch.utils.cpp_extension.load_inline on first use (~20 s)."""

import argparse
import time

import torch
from torch.utils.cpp_extension import load_inline

SOURCE = r"""
#include <immintrin.h>
#include <thread>
#include <vector>

// 24 independent accumulators: enough to cover the FMA latency on every x86 core we know of.
__attribute__((target("avx512f"))) static float run_avx512(long iterations) {
  __m512 acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(0.001f * i);
  const __m512 scale = _mm512_set1_ps(0.9999f), offset = _mm512_set1_ps(0.0001f);
  for (long it = 0; it < iterations; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_fmadd_ps(acc[i], scale, offset);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < 24; ++i) sum = _mm512_add_ps(sum, acc[i]);
  return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx2,fma"))) static float run_avx2(long iterations) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(0.001f * i);
  const __m256 scale = _mm256_set1_ps(0.9999f), offset = _mm256_set1_ps(0.0001f);
  for (long it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], scale, offset);
  }
  float lanes[8];
  __m256 sum = acc[0];
  for (int i = 1; i < 12; ++i) sum = _mm256_add_ps(sum, acc[i]);
  _mm256_storeu_ps(lanes, sum);
  return lanes[0];
}

// Runs `threads` threads of `iterations` rounds; returns the float32 operations of one thread's round, or 0
// on a CPU with neither AVX-512 nor AVX2+FMA (nothing is run there).
double fma_rounds(long threads, long iterations) {
  const bool avx512 = __builtin_cpu_supports("avx512f");
  if (!avx512 && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return 0.0;
  std::vector<std::thread> workers;
  std::vector<float> sink(threads);
  for (long t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] { sink[t] = avx512 ? run_avx512(iterations) : run_avx2(iterations); });
  }
  for (auto& worker : workers) worker.join();
  volatile float keep = sink[0];
  (void)keep;
  return avx512 ? 24.0 * 16 * 2 : 12.0 * 8 * 2;
}
"""

_module = None


def fma_peak_gflops(threads=None, seconds=0.5):
    """Float32 GFLOP/s of `threads` threads (default: torch.get_num_threads()) running only FMAs."""
    global _module
    if _module is None:
        _module = load_inline("fused_lstm_fma_peak", cpp_sources=SOURCE, functions=["fma_rounds"],
                              extra_cflags=["-O2"], verbose=False)
    threads = threads or torch.get_num_threads()
    iterations = 1_000_000
    if _module.fma_rounds(threads, 1) == 0.0:
        raise RuntimeError("benchmarks.fma_peak measures AVX-512 or AVX2+FMA; this CPU has neither")
    _module.fma_rounds(threads, iterations)  # warm up (clock ramp)
    while True:
        start = time.perf_counter()
        flops_per_round = _module.fma_rounds(threads, iterations)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return threads * iterations * flops_per_round / elapsed / 1e9
        iterations *= 2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="default: torch.get_num_threads()")
    args = parser.parse_args()
    threads = args.threads or torch.get_num_threads()
    print(f"float32 FMA peak, {threads} thread(s): {fma_peak_gflops(threads):.1f} GFLOP/s")


if __name__ == "__main__":
    main()
