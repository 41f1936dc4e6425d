// The float32 vector operations the register tiles use, one struct per instruction set, so that each product is
// written once, as a template over them (tile_product_on in lstm_recurrence_cpu.cpp, the cell's dot products in
// cell_cpu.cpp). Each function carries its instruction set's target attribute. GCC inlines a target function
// only into a function with that target, so the template runs inside a wrapper of that target marked FL_FLATTEN,
// which inlines everything it calls.
#pragma once

#include <cstdint>

#include "isa.h"

#if FL_HAVE_X86_TILES

#define FL_FLATTEN __attribute__((flatten))

namespace fused_lstm {
namespace cpu {

struct Avx512Ops {
  using Vec = __m512;
  using Mask = __mmask16;
  static constexpr int64_t kLanes = 16;
  // 32 vector registers: a tile's weights stay in registers for all its rows.
  static constexpr bool kWeightsInRegisters = true;
  FL_AVX512 static inline Vec zero() { return _mm512_setzero_ps(); }
  FL_AVX512 static inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
  FL_AVX512 static inline void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  FL_AVX512 static inline Vec broadcast(float x) { return _mm512_set1_ps(x); }
  FL_AVX512 static inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  // The lanes of the next `remaining` elements (all of them from kLanes on).
  FL_AVX512 static inline Mask first_lanes(int64_t remaining) {
    return remaining >= kLanes ? Mask(0xFFFF) : Mask((1u << remaining) - 1);
  }
  FL_AVX512 static inline Vec load_lanes(Mask mask, const float* p) { return _mm512_maskz_loadu_ps(mask, p); }
  FL_AVX512 static inline float sum(Vec v) { return _mm512_reduce_add_ps(v); }
};

struct Avx2Ops {
  using Vec = __m256;
  using Mask = __m256i;
  static constexpr int64_t kLanes = 8;
  // 16 vector registers: the accumulators and a broadcast take them; weights are read as memory operands.
  static constexpr bool kWeightsInRegisters = false;
  FL_AVX2 static inline Vec zero() { return _mm256_setzero_ps(); }
  FL_AVX2 static inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
  FL_AVX2 static inline void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  FL_AVX2 static inline Vec broadcast(float x) { return _mm256_set1_ps(x); }
  FL_AVX2 static inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  FL_AVX2 static inline Mask first_lanes(int64_t remaining) {
    const int count = static_cast<int>(remaining < kLanes ? remaining : kLanes);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  FL_AVX2 static inline Vec load_lanes(Mask mask, const float* p) { return _mm256_maskload_ps(p, mask); }
  FL_AVX2 static inline float sum(Vec v) {
    const __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
    return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
  }
};

}  // namespace cpu
}  // namespace fused_lstm

#endif
