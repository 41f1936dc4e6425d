#include "cell_cpu.h"

#include <algorithm>

#include "../gru_math.h"
#include "../lstm_math.h"
#include "../options.h"
#include "clones.h"
#include "isa.h"
#include "parallel.h"

namespace fused_lstm {
namespace cpu {
namespace {

// Batch rows of one register block: G gates × kBlockRows rows of accumulators, G weight vectors and one
// input vector must fit the vector registers (LSTM with AVX-512: 16 + 4 + 1 of 32).
constexpr int kBlockRows = 4;
// Above this many rows one library GEMM over the batch reuses each weight enough to win (measured on the
// 2-core development machine: B = 16 is about even).
constexpr int64_t kMaxCellRows = 16;
// Hidden units whose pre-activations are gathered before the cell's math runs on them as one vector loop.
constexpr int64_t kUnitBlock = 16;
// Multiply-adds per thread task: below about this a thread hand-off costs more than it saves.
constexpr int64_t kMultiplyAddsPerTask = int64_t(1) << 16;

// The arguments of the dot products of one cell step; a null input or h0 leaves out its side.
struct CellDots {
  int64_t C, H;
  const float* input;      // [B, C] or nullptr
  const float* h0;         // [B, H] or nullptr
  const float* weight_ih;  // [G·H, C]
  const float* weight_hh;  // [G·H, H]
};

#if FL_HAVE_X86_TILES
// acc[g][r] += a_r · w[g·H + j] over K: rows r of a [·, K] from `row`, gate rows of w [G·H, K] for unit j.
// The accumulators live in a local copy: acc itself is memory the loads might alias (vector types may alias
// floats), which kept gcc storing all G·R accumulators at every k (store-bound, a quarter of FMA peak).
template <int G, int R>
FL_AVX512 __attribute__((always_inline)) inline void accumulate_avx512(__m512 (&acc)[G][R], const float* a,
                                                                       const float* w, int64_t K, int64_t H,
                                                                       int64_t row, int64_t j) {
  __m512 sums[G][R];
#pragma GCC unroll 16
  for (int g = 0; g < G; ++g) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) sums[g][r] = acc[g][r];
  }
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 mask = K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k)) - 1);
    __m512 weights[G];
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g) weights[g] = _mm512_maskz_loadu_ps(mask, w + (g * H + j) * K + k);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 x = _mm512_maskz_loadu_ps(mask, a + (row + r) * K + k);
#pragma GCC unroll 16
      for (int g = 0; g < G; ++g) sums[g][r] = _mm512_fmadd_ps(x, weights[g], sums[g][r]);
    }
  }
#pragma GCC unroll 16
  for (int g = 0; g < G; ++g) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[g][r] = sums[g][r];
  }
}

// out[r·G + g] = x_r · W_ih[g·H + j] + h_r · W_hh[g·H + j] for the R rows from `row`: one unit j, all gates.
template <int G, int R>
FL_AVX512 void unit_dots_avx512(const CellDots& d, int64_t row, int64_t j, float* out) {
  __m512 acc[G][R];
  for (int g = 0; g < G; ++g) {
    for (int r = 0; r < R; ++r) acc[g][r] = _mm512_setzero_ps();
  }
  if (d.input != nullptr) accumulate_avx512<G, R>(acc, d.input, d.weight_ih, d.C, d.H, row, j);
  if (d.h0 != nullptr) accumulate_avx512<G, R>(acc, d.h0, d.weight_hh, d.H, d.H, row, j);
  for (int r = 0; r < R; ++r) {
    for (int g = 0; g < G; ++g) out[r * G + g] = _mm512_reduce_add_ps(acc[g][r]);
  }
}

template <int G, int R>
FL_AVX2 __attribute__((always_inline)) inline void accumulate_avx2(__m256 (&acc)[G][R], const float* a,
                                                                   const float* w, int64_t K, int64_t H,
                                                                   int64_t row, int64_t j) {
  const __m256i lane_index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256 sums[G][R];  // a local copy, as in accumulate_avx512
#pragma GCC unroll 16
  for (int g = 0; g < G; ++g) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) sums[g][r] = acc[g][r];
  }
  for (int64_t k = 0; k < K; k += 8) {
    const __m256i mask =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(8, K - k))), lane_index);
    __m256 weights[G];
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g) weights[g] = _mm256_maskload_ps(w + (g * H + j) * K + k, mask);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m256 x = _mm256_maskload_ps(a + (row + r) * K + k, mask);
#pragma GCC unroll 16
      for (int g = 0; g < G; ++g) sums[g][r] = _mm256_fmadd_ps(x, weights[g], sums[g][r]);
    }
  }
#pragma GCC unroll 16
  for (int g = 0; g < G; ++g) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[g][r] = sums[g][r];
  }
}

template <int G, int R>
FL_AVX2 void unit_dots_avx2(const CellDots& d, int64_t row, int64_t j, float* out) {
  __m256 acc[G][R];
  for (int g = 0; g < G; ++g) {
    for (int r = 0; r < R; ++r) acc[g][r] = _mm256_setzero_ps();
  }
  if (d.input != nullptr) accumulate_avx2<G, R>(acc, d.input, d.weight_ih, d.C, d.H, row, j);
  if (d.h0 != nullptr) accumulate_avx2<G, R>(acc, d.h0, d.weight_hh, d.H, d.H, row, j);
  for (int r = 0; r < R; ++r) {
    for (int g = 0; g < G; ++g) {
      const __m128 half = _mm_add_ps(_mm256_castps256_ps128(acc[g][r]), _mm256_extractf128_ps(acc[g][r], 1));
      const __m128 pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
      out[r * G + g] = _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
    }
  }
}

template <int G, int R>
void unit_dots(Isa isa, const CellDots& d, int64_t row, int64_t j, float* out) {
  if (isa >= Isa::kAvx512) return unit_dots_avx512<G, R>(d, row, j, out);
  unit_dots_avx2<G, R>(d, row, j, out);
}

// pre[r][g][u] (rows × G × kUnitBlock) = the dot products of rows [0, rows) for units [j0, j0 + units).
template <int G>
void block_dots(Isa isa, const CellDots& d, int64_t rows, int64_t j0, int64_t units, float* pre) {
  float out[G * kBlockRows];
  for (int64_t u = 0; u < units; ++u) {
    for (int64_t row = 0; row < rows; row += kBlockRows) {
      const int64_t count = std::min<int64_t>(kBlockRows, rows - row);
      switch (count) {
        case 1: unit_dots<G, 1>(isa, d, row, j0 + u, out); break;
        case 2: unit_dots<G, 2>(isa, d, row, j0 + u, out); break;
        case 3: unit_dots<G, 3>(isa, d, row, j0 + u, out); break;
        default: unit_dots<G, 4>(isa, d, row, j0 + u, out); break;
      }
      for (int64_t r = 0; r < count; ++r) {
        for (int g = 0; g < G; ++g) pre[((row + r) * G + g) * kUnitBlock + u] = out[r * G + g];
      }
    }
  }
}
#endif

// The cell of `units` units of one row from their pre-activations (without bias; gate g at g·kUnitBlock).
__attribute__((noinline)) FL_CPU_CLONES void lstm_units(int64_t H, int64_t units, const float* __restrict pre,
                                                        const float* __restrict bias_ih,
                                                        const float* __restrict bias_hh,
                                                        const float* __restrict c0, float* __restrict c1,
                                                        float* __restrict h1, float* __restrict gates) {
  float activations[4][kUnitBlock];
  for (int64_t u = 0; u < units; ++u) {
    float pre_gate[4];
    for (int g = 0; g < 4; ++g) pre_gate[g] = pre[g * kUnitBlock + u] + bias_ih[g * H + u] + bias_hh[g * H + u];
    float cell, hidden;
    math::cell_forward<float>(pre_gate[0], pre_gate[1], pre_gate[2], pre_gate[3], c0[u], activations[0][u],
                              activations[1][u], activations[2][u], activations[3][u], cell, hidden);
    c1[u] = cell;
    h1[u] = hidden;
  }
  if (gates) {
    for (int g = 0; g < 4; ++g) {
      for (int64_t u = 0; u < units; ++u) gates[g * H + u] = activations[g][u];
    }
  }
}

__attribute__((noinline)) FL_CPU_CLONES void gru_units(int64_t H, int64_t units, const float* __restrict pre_input,
                                                       const float* __restrict pre_hidden,
                                                       const float* __restrict bias_ih,
                                                       const float* __restrict bias_hh,
                                                       const float* __restrict h0, float* __restrict h1,
                                                       float* __restrict gates, float* __restrict candidate) {
  float activations[3][kUnitBlock], candidates[kUnitBlock];
  for (int64_t u = 0; u < units; ++u) {
    const float reset = pre_input[u] + pre_hidden[u] + bias_ih[u] + bias_hh[u];
    const float update = pre_input[kUnitBlock + u] + pre_hidden[kUnitBlock + u] + bias_ih[H + u] + bias_hh[H + u];
    candidates[u] = pre_hidden[2 * kUnitBlock + u] + bias_hh[2 * H + u];
    float hidden;
    math::gru_cell_forward<float>(reset, update, pre_input[2 * kUnitBlock + u] + bias_ih[2 * H + u], candidates[u],
                                  h0[u], activations[0][u], activations[1][u], activations[2][u], hidden);
    h1[u] = hidden;
  }
  if (gates) {
    for (int g = 0; g < 3; ++g) {
      for (int64_t u = 0; u < units; ++u) gates[g * H + u] = activations[g][u];
    }
    for (int64_t u = 0; u < units; ++u) candidate[u] = candidates[u];
  }
}

Isa check_supported(at::ScalarType dtype) {
  TORCH_CHECK(dtype == at::kFloat, "fused_lstm: the fused CPU cell serves float32, got ", dtype);
  const Isa isa = options::cpu_isa();
  TORCH_CHECK(isa != Isa::kNone, "fused_lstm: the fused CPU cell needs AVX2+FMA (cpu_isa is none or this CPU "
              "lacks it)");
  return isa;
}

// Runs block(j0, units) over the unit blocks of [0, H), in parallel when the step is large enough.
template <typename Block>
void for_unit_blocks(int64_t H, int64_t multiply_adds_per_unit, const Block& block) {
  const int64_t blocks = at::divup(H, kUnitBlock);
  const int64_t grain = std::max<int64_t>(1, kMultiplyAddsPerTask / std::max<int64_t>(1, multiply_adds_per_unit * kUnitBlock));
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t j0 = b * kUnitBlock;
      block(j0, std::min(kUnitBlock, H - j0));
    }
  });
}

}  // namespace

bool cell_forward_supported(int64_t batch, int64_t input_size, int64_t hidden, at::ScalarType dtype) {
  (void)input_size;
  return dtype == at::kFloat && batch >= 1 && batch <= kMaxCellRows && hidden >= 1 &&
         options::cpu_isa() != Isa::kNone;
}

void lstm_cell_forward(const LstmCellForwardParams& p, at::ScalarType dtype) {
  const Isa isa = check_supported(dtype);
#if FL_HAVE_X86_TILES
  const int64_t B = p.batch, C = p.input_size, H = p.hidden;
  const CellDots dots{C, H, static_cast<const float*>(p.input), static_cast<const float*>(p.h0),
                      static_cast<const float*>(p.weight_ih), static_cast<const float*>(p.weight_hh)};
  const std::vector<float> zeros(p.bias_ih != nullptr && p.bias_hh != nullptr ? 0 : 4 * H, 0.0f);
  const float* bias_ih = p.bias_ih ? static_cast<const float*>(p.bias_ih) : zeros.data();
  const float* bias_hh = p.bias_hh ? static_cast<const float*>(p.bias_hh) : zeros.data();
  const auto* c0 = static_cast<const float*>(p.c0);
  auto* c1 = static_cast<float*>(p.c1);
  auto* h1 = static_cast<float*>(p.h1);
  auto* gates = static_cast<float*>(p.gates);
  for_unit_blocks(H, 4 * B * (C + H), [&](int64_t j0, int64_t units) {
    float pre[kMaxCellRows * 4 * kUnitBlock];
    block_dots<4>(isa, dots, B, j0, units, pre);
    for (int64_t row = 0; row < B; ++row) {
      lstm_units(H, units, pre + row * 4 * kUnitBlock, bias_ih + j0, bias_hh + j0, c0 + row * H + j0,
                 c1 + row * H + j0, h1 + row * H + j0, gates ? gates + row * 4 * H + j0 : nullptr);
    }
  });
#endif
}

void gru_cell_forward(const GruCellForwardParams& p, at::ScalarType dtype) {
  const Isa isa = check_supported(dtype);
#if FL_HAVE_X86_TILES
  const int64_t B = p.batch, C = p.input_size, H = p.hidden;
  // The reset gate scales only the hidden part of n: the input and hidden dot products stay apart.
  const CellDots input_dots{C, H, static_cast<const float*>(p.input), nullptr, static_cast<const float*>(p.weight_ih),
                            nullptr};
  const CellDots hidden_dots{0, H, nullptr, static_cast<const float*>(p.h0), nullptr,
                             static_cast<const float*>(p.weight_hh)};
  const std::vector<float> zeros(p.bias_ih != nullptr && p.bias_hh != nullptr ? 0 : 3 * H, 0.0f);
  const float* bias_ih = p.bias_ih ? static_cast<const float*>(p.bias_ih) : zeros.data();
  const float* bias_hh = p.bias_hh ? static_cast<const float*>(p.bias_hh) : zeros.data();
  const auto* h0 = static_cast<const float*>(p.h0);
  auto* h1 = static_cast<float*>(p.h1);
  auto* gates = static_cast<float*>(p.gates);
  auto* candidate = static_cast<float*>(p.candidate_hidden);
  for_unit_blocks(H, 3 * B * (C + H), [&](int64_t j0, int64_t units) {
    float pre_input[kMaxCellRows * 3 * kUnitBlock], pre_hidden[kMaxCellRows * 3 * kUnitBlock];
    block_dots<3>(isa, input_dots, B, j0, units, pre_input);
    block_dots<3>(isa, hidden_dots, B, j0, units, pre_hidden);
    for (int64_t row = 0; row < B; ++row) {
      gru_units(H, units, pre_input + row * 3 * kUnitBlock, pre_hidden + row * 3 * kUnitBlock, bias_ih + j0,
                bias_hh + j0, h0 + row * H + j0, h1 + row * H + j0, gates ? gates + row * 3 * H + j0 : nullptr,
                candidate ? candidate + row * H + j0 : nullptr);
    }
  });
#endif
}

}  // namespace cpu
}  // namespace fused_lstm
