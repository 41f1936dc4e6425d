// The CPU's arithmetic ceilings, probed: threads running only independent multiply-adds on registers (no memory
// traffic), with the widest instructions the CPU has for each kind. benchmarks/ceilings.py times the op
// fused_lstm::cpu_peak_probe registered here and reads every benchmark rate against the result. Compiled with
// the extension (not built at run time into a shared cache, where a killed build's lock blocks every later run).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
#include <thread>
#include <vector>

#include "isa.h"

namespace fused_lstm {
namespace cpu {
namespace {

// 24 independent accumulators: enough to cover the FMA latency on every x86 core we know of.
constexpr int kChains = 24;

// Any CPU (x86-64 without AVX2, aarch64): 128-bit vectors of the baseline instruction set, a multiply and an add
// (fused on aarch64, where GCC contracts them) per lane: 2 FLOPs a lane.
float multiply_add_portable(int64_t rounds) {
  typedef float Vector4 __attribute__((vector_size(16)));
  Vector4 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = Vector4{} + 0.001f * i;
  const Vector4 scale = Vector4{} + 0.9999f, offset = Vector4{} + 0.0001f;
  for (int64_t round = 0; round < rounds; ++round) {
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) acc[i] = acc[i] * scale + offset;
  }
  Vector4 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum += acc[i];
  return sum[0];
}

#if FL_HAVE_X86_TILES
FL_AVX512 float fma_avx512(int64_t rounds) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(0.001f * i);
  const __m512 scale = _mm512_set1_ps(0.9999f), offset = _mm512_set1_ps(0.0001f);
  for (int64_t round = 0; round < rounds; ++round) {
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], scale, offset);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm512_add_ps(sum, acc[i]);
  return _mm512_reduce_add_ps(sum);
}

FL_AVX2 float fma_avx2(int64_t rounds) {
  __m256 acc[kChains / 2];
  for (int i = 0; i < kChains / 2; ++i) acc[i] = _mm256_set1_ps(0.001f * i);
  const __m256 scale = _mm256_set1_ps(0.9999f), offset = _mm256_set1_ps(0.0001f);
  for (int64_t round = 0; round < rounds; ++round) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains / 2; ++i) acc[i] = _mm256_fmadd_ps(acc[i], scale, offset);
  }
  __m256 sum = acc[0];
  for (int i = 1; i < kChains / 2; ++i) sum = _mm256_add_ps(sum, acc[i]);
  float lanes[8];
  _mm256_storeu_ps(lanes, sum);
  return lanes[0];
}

// vdpbf16ps: each of the 16 float lanes adds the products of two bfloat16 pairs (4 FLOPs a lane).
__attribute__((target("avx512f,avx512bf16"))) float bf16_dot_avx512(int64_t rounds) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(0.001f * i);
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3c00);  // 1, 2^-7
  for (int64_t round = 0; round < rounds; ++round) {
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm512_add_ps(sum, acc[i]);
  return _mm512_reduce_add_ps(sum);
}
// vfmadd231ph: 32 half lanes, 2 FLOPs each.
__attribute__((target("avx512f,avx512fp16"))) float fp16_fma_avx512(int64_t rounds) {
  __m512h acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ph((_Float16)(0.001f * i));
  const __m512h scale = _mm512_set1_ph((_Float16)0.9999f), offset = _mm512_set1_ph((_Float16)0.0001f);
  for (int64_t round = 0; round < rounds; ++round) {
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ph(acc[i], scale, offset);
  }
  __m512h sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm512_add_ph(sum, acc[i]);
  return (float)_mm512_reduce_add_ph(sum);
}

// TDPBF16PS on registers only: four independent accumulator tiles, 16×16×32 multiply-adds each.
__attribute__((target("amx-tile,amx-bf16"))) float bf16_amx(int64_t rounds) {
  load_tile_config(TileConfig(6));
  alignas(64) static const uint16_t ones[16 * 32] = {};
  _tile_loadd(4, ones, 64);
  _tile_loadd(5, ones, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t round = 0; round < rounds; ++round) {
    _tile_dpbf16ps(0, 4, 5);
    _tile_dpbf16ps(1, 4, 5);
    _tile_dpbf16ps(2, 4, 5);
    _tile_dpbf16ps(3, 4, 5);
  }
  alignas(64) float out[16 * 16];
  _tile_stored(0, out, 64);
  _tile_release();
  return out[0];
}
#endif

bool has_bf16_dot() {
#if FL_HAVE_X86_TILES
  return best_isa() >= Isa::kAvx512Bf16;
#else
  return false;
#endif
}

// Runs `threads` threads of `rounds` rounds of `kind`; returns the floating-point operations of one thread's
// round, or 0 when this CPU lacks the instructions (nothing is run then).
double cpu_peak_probe(const std::string& kind, int64_t threads, int64_t rounds) {
  TORCH_CHECK(kind == "float32_fma" || kind == "bfloat16_dot" || kind == "bfloat16_amx" || kind == "float16_fma",
              "fused_lstm.cpu_peak_probe: kind must be float32_fma, bfloat16_dot, bfloat16_amx or float16_fma, got '",
              kind, "'");
  TORCH_CHECK(threads >= 1 && rounds >= 1, "fused_lstm.cpu_peak_probe: threads and rounds must be positive");
  float (*run)(int64_t) = nullptr;
  double flops_per_round = 0.0;
#if FL_HAVE_X86_TILES
  const Isa isa = best_isa();
  if (kind == "bfloat16_dot") {
    if (has_bf16_dot()) run = &bf16_dot_avx512, flops_per_round = kChains * 16 * 4.0;
  } else if (kind == "bfloat16_amx") {
    if (isa == Isa::kAmx) run = &bf16_amx, flops_per_round = 4 * 16 * 16 * 32 * 2.0;
  } else if (kind == "float16_fma") {
    if (isa >= Isa::kAvx512 && __builtin_cpu_supports("avx512fp16")) run = &fp16_fma_avx512, flops_per_round = kChains * 32 * 2.0;
  } else if (isa >= Isa::kAvx512) {
    run = &fma_avx512, flops_per_round = kChains * 16 * 2.0;
  } else if (isa == Isa::kAvx2) {
    run = &fma_avx2, flops_per_round = kChains / 2 * 8 * 2.0;
  }
#endif
  if (run == nullptr && kind == "float32_fma") run = &multiply_add_portable, flops_per_round = kChains * 4 * 2.0;
  if (run == nullptr) return 0.0;
  std::vector<std::thread> workers;
  std::vector<float> sink(threads);
  for (int64_t t = 0; t < threads; ++t) workers.emplace_back([&, t] { sink[t] = run(rounds); });
  for (auto& worker : workers) worker.join();
  volatile float keep = sink[0];
  (void)keep;
  return flops_per_round;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fused_lstm, m) {
  m.def("cpu_peak_probe(str kind, int threads, int rounds) -> float", &cpu_peak_probe);
}

}  // namespace cpu
}  // namespace fused_lstm
