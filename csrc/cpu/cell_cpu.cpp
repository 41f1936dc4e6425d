#include "cell_cpu.h"

#include <algorithm>

#include "../gemm.h"
#include "../gru_math.h"
#include "../lstm_math.h"
#include "../options.h"
#include "../path_thresholds.h"
#include "clones.h"
#include "isa.h"
#include "parallel.h"
#include "transpose_avx512.h"
#include "vector_ops.h"

namespace fused_lstm {
namespace cpu {
namespace {

// Batch rows of one register block: G gates × kBlockRows rows of accumulators, G weight vectors and one
// input vector must fit the vector registers (LSTM with AVX-512: 16 + 4 + 1 of 32).
constexpr int kBlockRows = 4;
// Batches of up to kMaxDotRows rows run the dot-product form (block_dots), larger ones with AVX-512 the
// batch-lanes form (block_lanes) up to kMaxCellRows (path_thresholds.h).
using thresholds::kMaxCellRows;
using thresholds::kMaxDotRows;
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
// acc[g][r] += a_r · w[g·H + j] over K: rows r of a [·, K] from `row`, gate rows of w [G·H, K] for unit j, in
// the instruction set's vectors (vector_ops.h). The accumulators live in a local copy: acc itself is memory the
// loads might alias (vector types may alias floats), which kept gcc storing all G·R accumulators at every k
// (store-bound, a quarter of FMA peak).
template <typename Ops, int G, int R>
inline void accumulate_on(typename Ops::Vec (&acc)[G][R], const float* a, const float* w, int64_t K, int64_t H,
                          int64_t row, int64_t j) {
  typename Ops::Vec sums[G][R];
#pragma GCC unroll 16
  for (int g = 0; g < G; ++g) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) sums[g][r] = acc[g][r];
  }
  for (int64_t k = 0; k < K; k += Ops::kLanes) {
    const typename Ops::Mask mask = Ops::first_lanes(K - k);
    typename Ops::Vec weights[G];
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g) weights[g] = Ops::load_lanes(mask, w + (g * H + j) * K + k);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const typename Ops::Vec x = Ops::load_lanes(mask, a + (row + r) * K + k);
#pragma GCC unroll 16
      for (int g = 0; g < G; ++g) sums[g][r] = Ops::fma(x, weights[g], sums[g][r]);
    }
  }
#pragma GCC unroll 16
  for (int g = 0; g < G; ++g) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[g][r] = sums[g][r];
  }
}

// out[r·G + g] = x_r · W_ih[g·H + j] + h_r · W_hh[g·H + j] for the R rows from `row`: one unit j, all gates.
template <typename Ops, int G, int R>
inline void unit_dots_on(const CellDots& d, int64_t row, int64_t j, float* out) {
  typename Ops::Vec acc[G][R];
  for (int g = 0; g < G; ++g) {
    for (int r = 0; r < R; ++r) acc[g][r] = Ops::zero();
  }
  if (d.input != nullptr) accumulate_on<Ops, G, R>(acc, d.input, d.weight_ih, d.C, d.H, row, j);
  if (d.h0 != nullptr) accumulate_on<Ops, G, R>(acc, d.h0, d.weight_hh, d.H, d.H, row, j);
  for (int r = 0; r < R; ++r) {
    for (int g = 0; g < G; ++g) out[r * G + g] = Ops::sum(acc[g][r]);
  }
}

template <int G, int R>
FL_AVX512 FL_FLATTEN void unit_dots_avx512(const CellDots& d, int64_t row, int64_t j, float* out) {
  unit_dots_on<Avx512Ops, G, R>(d, row, j, out);
}

template <int G, int R>
FL_AVX2 FL_FLATTEN void unit_dots_avx2(const CellDots& d, int64_t row, int64_t j, float* out) {
  unit_dots_on<Avx2Ops, G, R>(d, row, j, out);
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

// The batch-lanes form, for batches of kMaxDotRows + 1 .. kMaxCellRows rows: x and h transposed, in passes of
// kLaneRows rows (the padding rows zero), so that one weight element, broadcast, multiplies 16 batch rows at
// once; no horizontal sums, and the weights are read as they are (only the small inputs are rearranged, at
// every call).
struct CellLanes {
  int64_t C, H;
  const float* input_t;    // [passes, C16, kLaneRows]: x transposed pass by pass, or nullptr
  const float* h0_t;       // [passes, H16, kLaneRows]: h0 likewise, or nullptr
  const float* weight_ih;  // [G·H, C]
  const float* weight_hh;  // [G·H, H]
};

// Batch rows of one pass of the lanes form: 2 units × G gates × kLaneRows / 16 vectors of accumulators in
// registers.
constexpr int64_t kLaneRows = 32;

// out [passes, K16, kLaneRows] (K16: K rounded up to 16) = a [B, K] transposed in passes of kLaneRows rows,
// rows B .. of the last pass zero. Each pass apart, so that a pass's chunk of k is one contiguous run (with all
// the rows between k and k + 1, a stride of 512 bytes at B = 128 would put a chunk's lines into few cache sets).
FL_AVX512 void transpose_rows(const float* a, int64_t B, int64_t K, float* out) {
  const int64_t K16 = at::divup(K, int64_t(16)) * 16;
  for (int64_t b0 = 0; b0 < at::divup(B, kLaneRows) * kLaneRows; b0 += 16) {
    for (int64_t k0 = 0; k0 < K; k0 += 16) {
      const __mmask16 mask = K - k0 >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k0)) - 1);
      __m512i rows[16];
      for (int64_t r = 0; r < 16; ++r) {
        rows[r] = b0 + r < B ? _mm512_maskz_loadu_epi32(mask, a + (b0 + r) * K + k0) : _mm512_setzero_si512();
      }
      float* pass = out + b0 / kLaneRows * K16 * kLaneRows;
      transpose_16x16_words(rows, reinterpret_cast<uint32_t*>(pass + k0 * kLaneRows + b0 % kLaneRows), kLaneRows);
    }
  }
}

// acc[u][g][v] += Σ_{k < K} rows[u][g][k] · a_t[k·ld + 16v .. 16v + 15]: U·G weight rows against V vectors of
// 16 batch rows. Local accumulators, as in accumulate_avx512.
template <int U, int G, int V>
FL_AVX512 __attribute__((always_inline)) inline void accumulate_lanes_avx512(__m512 (&acc)[U][G][V],
                                                                             const float* a_t, int64_t ld,
                                                                             const float* const (&rows)[U][G],
                                                                             int64_t K) {
  __m512 sums[U][G][V];
#pragma GCC unroll 16
  for (int u = 0; u < U; ++u) {
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g) {
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) sums[u][g][v] = acc[u][g][v];
    }
  }
#pragma GCC unroll 2
  for (int64_t k = 0; k < K; ++k) {
    __m512 x[V];
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) x[v] = _mm512_loadu_ps(a_t + k * ld + 16 * v);
#pragma GCC unroll 16
    for (int u = 0; u < U; ++u) {
#pragma GCC unroll 16
      for (int g = 0; g < G; ++g) {
        const __m512 weight = _mm512_set1_ps(rows[u][g][k]);
#pragma GCC unroll 16
        for (int v = 0; v < V; ++v) sums[u][g][v] = _mm512_fmadd_ps(weight, x[v], sums[u][g][v]);
      }
    }
  }
#pragma GCC unroll 16
  for (int u = 0; u < U; ++u) {
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g) {
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) acc[u][g][v] = sums[u][g][v];
    }
  }
}

// Inputs (k) of one chunk of the lanes form: a pass's chunk of the transposed input (16 KiB) stays in L1 while
// every unit pair reads it, and a pair's chunk of weight rows (4 KiB) while every pass reads it, so that the
// weights are read from memory once per call (at H = 1024 they do not fit the caches).
constexpr int64_t kLaneChunk = 128;

// The accumulators of one unit block: pass p (rows 32p .. 32p + 31), unit pair, unit of the pair, gate, vector.
template <int G>
using LaneAccumulators = __m512[kMaxCellRows / kLaneRows][kUnitBlock / 2][2][G][2];

// One side (input or hidden) of the lanes form over the units [j0, j0 + units) in pairs (a lone last unit is
// paired with itself, the copy discarded) and `passes` passes of kLaneRows rows: acc += its dot products.
template <int G>
FL_AVX512 void side_lanes(const float* a_t, const float* w, int64_t K, int64_t H, int64_t passes,
                          int64_t j0, int64_t units, LaneAccumulators<G>& acc) {
  for (int64_t k0 = 0; k0 < K; k0 += kLaneChunk) {
    const int64_t count = std::min(kLaneChunk, K - k0);
    for (int64_t u = 0; u < units; u += 2) {
      const float* rows[2][G];
      for (int64_t g = 0; g < G; ++g) {
        rows[0][g] = w + (g * H + j0 + u) * K + k0;
        rows[1][g] = u + 1 < units ? rows[0][g] + K : rows[0][g];
      }
      for (int64_t pass = 0; pass < passes; ++pass) {
        const float* a_pass = a_t + (pass * at::divup(K, int64_t(16)) * 16 + k0) * kLaneRows;
        accumulate_lanes_avx512<2, G, 2>(acc[pass][u / 2], a_pass, kLaneRows, rows, count);
      }
    }
  }
}

// block_dots in the lanes form: pre[(r·G + g)·kUnitBlock + u] for the rows r < round_up(rows, kLaneRows) and
// units [j0, j0 + units) (16 per row whatever `units`: the rest hold garbage).
template <int G>
FL_AVX512 void block_lanes(const CellLanes& d, int64_t rows, int64_t j0, int64_t units, float* pre) {
  const int64_t passes = at::divup(rows, kLaneRows);
  LaneAccumulators<G> acc;
  for (int64_t pass = 0; pass < passes; ++pass) {
    for (auto& pair : acc[pass]) {
      for (auto& unit : pair) {
        for (auto& gate : unit) {
          for (auto& vector : gate) vector = _mm512_setzero_ps();
        }
      }
    }
  }
  if (d.input_t != nullptr) side_lanes<G>(d.input_t, d.weight_ih, d.C, d.H, passes, j0, units, acc);
  if (d.h0_t != nullptr) side_lanes<G>(d.h0_t, d.weight_hh, d.H, d.H, passes, j0, units, acc);
  // acc holds [unit][row] per gate and 16 rows; pre wants [row][unit]: 16 × 16 transposes.
  for (int64_t pass = 0; pass < passes; ++pass) {
    for (int g = 0; g < G; ++g) {
      for (int v = 0; v < 2; ++v) {
        __m512i unit_rows[16];
        for (int u = 0; u < 16; ++u) unit_rows[u] = _mm512_castps_si512(acc[pass][u / 2][u % 2][g][v]);
        float* out = pre + ((pass * kLaneRows + 16 * v) * G + g) * kUnitBlock;
        transpose_16x16_words(unit_rows, reinterpret_cast<uint32_t*>(out), G * kUnitBlock);
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

#if FL_HAVE_X86_TILES
// The batch-lanes operands of a cell step: x and h0 transposed into one scratch tensor (kept in `scratch`).
CellLanes transposed_operands(const float* input, const float* h0, int64_t B, int64_t C, int64_t H,
                              const float* weight_ih, const float* weight_hh, at::Tensor& scratch) {
  const int64_t padded_batch = at::divup(B, kLaneRows) * kLaneRows;
  const int64_t input_k = input ? at::divup(C, int64_t(16)) * 16 : 0;
  const int64_t hidden_k = h0 ? at::divup(H, int64_t(16)) * 16 : 0;
  scratch = reusable_empty(input_k + hidden_k, padded_batch, at::TensorOptions().dtype(at::kFloat));
  float* base = scratch.data_ptr<float>();
  if (input) transpose_rows(input, B, C, base);
  if (h0) transpose_rows(h0, B, H, base + input_k * padded_batch);
  return {C, H, input ? base : nullptr, h0 ? base + input_k * padded_batch : nullptr, weight_ih, weight_hh};
}
#endif

}  // namespace

bool cell_forward_supported(int64_t batch, int64_t input_size, int64_t hidden, at::ScalarType dtype) {
  (void)input_size;
  const Isa isa = options::cpu_isa();
  return dtype == at::kFloat && batch >= 1 && batch <= (isa >= Isa::kAvx512 ? kMaxCellRows : kMaxDotRows) &&
         hidden >= 1 && isa != Isa::kNone;
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
  at::Tensor scratch;
  const CellLanes lanes = B > kMaxDotRows ? transposed_operands(dots.input, dots.h0, B, C, H, dots.weight_ih,
                                                                dots.weight_hh, scratch)
                                          : CellLanes{};
  for_unit_blocks(H, 4 * B * (C + H), [&](int64_t j0, int64_t units) {
    float pre[kMaxCellRows * 4 * kUnitBlock];
    if (B > kMaxDotRows) {
      block_lanes<4>(lanes, B, j0, units, pre);
    } else {
      block_dots<4>(isa, dots, B, j0, units, pre);
    }
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
  at::Tensor scratch;
  CellLanes input_lanes{}, hidden_lanes{};
  if (B > kMaxDotRows) {
    input_lanes = hidden_lanes = transposed_operands(input_dots.input, hidden_dots.h0, B, C, H,
                                                     input_dots.weight_ih, hidden_dots.weight_hh, scratch);
    input_lanes.h0_t = nullptr;
    hidden_lanes.input_t = nullptr;
  }
  for_unit_blocks(H, 3 * B * (C + H), [&](int64_t j0, int64_t units) {
    float pre_input[kMaxCellRows * 3 * kUnitBlock], pre_hidden[kMaxCellRows * 3 * kUnitBlock];
    if (B > kMaxDotRows) {
      block_lanes<3>(input_lanes, B, j0, units, pre_input);
      block_lanes<3>(hidden_lanes, B, j0, units, pre_hidden);
    } else {
      block_dots<3>(isa, input_dots, B, j0, units, pre_input);
      block_dots<3>(isa, hidden_dots, B, j0, units, pre_hidden);
    }
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
