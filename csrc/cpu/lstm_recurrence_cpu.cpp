#include "lstm_recurrence_cpu.h"

#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../lstm_math.h"
#include "../options.h"
#include "../path_thresholds.h"
#include "clones.h"
#include "isa.h"
#include "lstm_recurrence_amx.h"
#include "parallel.h"
#include "vector_ops.h"

namespace fused_lstm {
namespace cpu {
namespace {

using bf16 = c10::BFloat16;

// What the tiles are built from. A register tile is up to max_rows batch rows × 4 vectors: forward, the
// four gates of `lanes` hidden units; backward, 4·lanes hidden units.
struct TileShape {
  int64_t lanes;  // floats in one vector register
  int max_rows;   // 4 accumulators per row, and the weights and one broadcast, must fit the registers
};
// AVX-512: 6 rows × 4 + 4 weight vectors + 1 broadcast of 32 registers. AVX2: 3 rows × 4 + 1 broadcast of
// 16 registers, with the weights read as memory operands.
constexpr TileShape kAvx512Tiles{16, 6};
constexpr TileShape kAvx2Tiles{8, 3};
constexpr int64_t kMaxLanes = kAvx512Tiles.lanes;
constexpr int64_t kMaxTileFloats = kAvx512Tiles.max_rows * 4 * kAvx512Tiles.lanes;  // the larger tile

TileShape tile_shape(Isa isa) { return isa >= Isa::kAvx512 ? kAvx512Tiles : kAvx2Tiles; }

// The row tiles of a step: as few as max_rows allows, their heights differing by at most one (32 rows as
// 6 + 6 + 5 + 5 + 5 + 5 and 8 as 4 + 4, not ... + 2: a 2-row AVX-512 tile does 8 multiply-adds per 6 loads).
struct RowTiles {
  RowTiles(int64_t rows, int max_rows)
      : count(at::divup(rows, max_rows)), base(count ? rows / count : 0), extra(count ? rows % count : 0) {}
  int64_t first_row(int64_t tile) const { return tile * base + std::min(tile, extra); }
  int rows(int64_t tile) const { return static_cast<int>(base + (tile < extra ? 1 : 0)); }
  int64_t count, base, extra;
};

// Forward panels: gate g of unit j is row g·H + j of a weight [4H, K]. Panel p holds, for every k, the
// four gates of units lanes·p .. lanes·(p+1)-1 side by side ([H/lanes][K][4][lanes], zero beyond unit H),
// so that one register tile row is the four gates of `lanes` units and the cell update can run on it.
std::vector<float> pack_gate_panels(const float* weight, int64_t H, int64_t K, int64_t lanes) {
  const int64_t panels = at::divup(H, lanes), width = 4 * lanes;
  std::vector<float> packed(static_cast<size_t>(panels * K * width));
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t panel = begin; panel < end; ++panel) {
      float* out = packed.data() + panel * K * width;
      for (int64_t gate = 0; gate < 4; ++gate) {
        for (int64_t lane = 0; lane < lanes; ++lane) {
          const int64_t unit = panel * lanes + lane;
          float* column = out + gate * lanes + lane;
          if (unit >= H) {
            for (int64_t k = 0; k < K; ++k) column[k * width] = 0.0f;
            continue;
          }
          const float* row = weight + (gate * H + unit) * K;
          for (int64_t k = 0; k < K; ++k) column[k * width] = row[k];
        }
      }
    }
  });
  return packed;
}

// The same panels for vdpbf16ps, which multiplies pairs of bfloat16 along K: panel p holds, for every pair
// of k, the four gates of 16 units side by side, each unit's two weights adjacent
// ([H/16][K/2 rounded up][4][16][2], zero beyond unit H and column K).
std::vector<bf16> pack_gate_panels_bf16(const bf16* weight, int64_t H, int64_t K) {
  constexpr int64_t lanes = kAvx512Tiles.lanes, width = 4 * lanes * 2;
  const int64_t panels = at::divup(H, lanes), pairs = at::divup(K, 2);
  std::vector<bf16> packed(static_cast<size_t>(panels * pairs * width), bf16(0.0f));
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t panel = begin; panel < end; ++panel) {
      bf16* out = packed.data() + panel * pairs * width;
      for (int64_t gate = 0; gate < 4; ++gate) {
        for (int64_t lane = 0; lane < lanes && panel * lanes + lane < H; ++lane) {
          const bf16* row = weight + (gate * H + panel * lanes + lane) * K;
          bf16* column = out + (gate * lanes + lane) * 2;
          for (int64_t k = 0; k < K; ++k) column[(k / 2) * width + k % 2] = row[k];
        }
      }
    }
  });
  return packed;
}

// Column panels of a matrix [R, cols]: panel p is columns width·p .. width·(p+1)-1 of every row
// ([cols/width][R][width], zero beyond column `cols`), contiguous so that a tile streams it.
at::Tensor pack_column_panels(const float* matrix, int64_t R, int64_t cols, int64_t width) {
  const int64_t panels = at::divup(cols, width);
  at::Tensor packed = at::zeros({panels * R * width}, at::TensorOptions().dtype(at::kFloat));
  float* packed_data = packed.data_ptr<float>();
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t panel = begin; panel < end; ++panel) {
      const int64_t first = panel * width, count = std::min(width, cols - first);
      for (int64_t r = 0; r < R; ++r) {
        std::memcpy(packed_data + (panel * R + r) * width, matrix + r * cols + first, count * sizeof(float));
      }
    }
  });
  return packed;
}

// The same panels for vdpbf16ps: each column's rows in pairs ([cols/64][R/2][64][2], R even: R = 4H here).
at::Tensor pack_column_panels_bf16(const bf16* matrix, int64_t R, int64_t cols) {
  constexpr int64_t width = 4 * kAvx512Tiles.lanes;
  const int64_t panels = at::divup(cols, width);
  at::Tensor packed = at::zeros({panels * R * width}, at::TensorOptions().dtype(at::kBFloat16));
  bf16* packed_data = static_cast<bf16*>(packed.data_ptr());
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t panel = begin; panel < end; ++panel) {
      const int64_t first = panel * width, count = std::min(width, cols - first);
      for (int64_t r = 0; r < R; ++r) {
        bf16* out = packed_data + (panel * R + (r / 2) * 2) * width + r % 2;
        for (int64_t c = 0; c < count; ++c) out[2 * c] = matrix[r * cols + first + c];
      }
    }
  });
  return packed;
}

// One step of the forward recurrence, as every panel task sees it. Rows are this step's B rows. scalar_t:
// float (FMA tiles) or bf16 (vdpbf16ps tiles; then project_input is true); the cell state is float.
template <typename scalar_t>
struct ForwardStep {
  Isa isa;
  int64_t rows;                // B
  int64_t H;
  int64_t C;
  bool project_input;          // true: x_t·W_ihᵀ from input and packed_ih; false: `gates` holds it on entry
  const scalar_t* input;       // [B, C] x_t (may be nullptr when C = 0)
  const scalar_t* packed_ih;   // gate panels of W_ih (K = C)
  const scalar_t* packed_hh;   // gate panels of W_hh (K = H)
  const scalar_t* bias;        // [4H]
  const scalar_t* hidden_prev; // [B, H] h_{t-1}
  scalar_t* gates;             // [B, 4H] in: x_t·W_ihᵀ unless project_input; out: activations when saving
  bool save_gates;             // write the activations into gates
  float* cell;                 // [B, H] in: c_{t-1}, out: c_t
  float* cell_prev_saved;      // [B, H] or nullptr
  scalar_t* output;            // [B, H] h_t
};

// One step of the backward recurrence. Rows are this step's B rows. scalar_t: float (FMA tiles) or bf16
// (vdpbf16ps tiles); the cell state's gradient is float.
template <typename scalar_t>
struct BackwardStep {
  Isa isa;
  int64_t rows;                      // B
  int64_t H;
  const scalar_t* packed_hh;         // column panels of W_hh [4H, H] (K = 4H)
  const scalar_t* grad_gates_later;  // [B, 4H] dL/d(pre-activations) of the step after this one; nullptr at
                                     // the first step a call visits (the last of its block)
  const scalar_t* grad_hidden_n;     // [B, H] dL/dh of that step from later ones (dL/dh_n for the last block)
  const scalar_t* gates;             // [B, 4H] saved activations
  const float* cell_prev;            // [B, H] saved c_{t-1}
  const scalar_t* grad_output;       // [B, H]
  float* grad_cell;                  // [B, H] in: dL/dc_t, out: dL/dc_{t-1}
  scalar_t* grad_gates;              // [B, 4H] out
};

#if FL_HAVE_X86_TILES
// The AVX-512 accumulators of a tile of ROWS rows × 64 floats: loaded from `tile` (or zero), stored back.
template <int ROWS>
FL_AVX512 inline void load_accumulators(__m512 (&acc)[ROWS][4], const float* tile, bool accumulate) {
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) acc[r][c] = accumulate ? _mm512_loadu_ps(tile + r * 64 + c * 16) : _mm512_setzero_ps();
  }
}

template <int ROWS>
FL_AVX512 inline void store_accumulators(const __m512 (&acc)[ROWS][4], float* tile) {
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) _mm512_storeu_ps(tile + r * 64 + c * 16, acc[r][c]);
  }
}

// tile[r][0..4·lanes) (+)= sum_k a[r·lda + k] · panel[k][0..4·lanes) for r < ROWS: the register-tiled
// product, written once over the instruction set's vector operations (vector_ops.h).
template <typename Ops, int ROWS>
inline void tile_product_on(int64_t K, const float* a, int64_t lda, const float* panel, bool accumulate,
                            float* tile) {
  using Vec = typename Ops::Vec;
  constexpr int64_t lanes = Ops::kLanes, width = 4 * Ops::kLanes;
  Vec acc[ROWS][4];
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) acc[r][c] = accumulate ? Ops::load(tile + r * width + c * lanes) : Ops::zero();
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* w = panel + k * width;
    if constexpr (Ops::kWeightsInRegisters) {
      const Vec w0 = Ops::load(w), w1 = Ops::load(w + lanes), w2 = Ops::load(w + 2 * lanes),
                w3 = Ops::load(w + 3 * lanes);
#pragma GCC unroll 8
      for (int r = 0; r < ROWS; ++r) {
        const Vec x = Ops::broadcast(a[r * lda + k]);
        acc[r][0] = Ops::fma(x, w0, acc[r][0]);
        acc[r][1] = Ops::fma(x, w1, acc[r][1]);
        acc[r][2] = Ops::fma(x, w2, acc[r][2]);
        acc[r][3] = Ops::fma(x, w3, acc[r][3]);
      }
    } else {
#pragma GCC unroll 8
      for (int r = 0; r < ROWS; ++r) {
        const Vec x = Ops::broadcast(a[r * lda + k]);
        acc[r][0] = Ops::fma(x, Ops::load(w), acc[r][0]);
        acc[r][1] = Ops::fma(x, Ops::load(w + lanes), acc[r][1]);
        acc[r][2] = Ops::fma(x, Ops::load(w + 2 * lanes), acc[r][2]);
        acc[r][3] = Ops::fma(x, Ops::load(w + 3 * lanes), acc[r][3]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) Ops::store(tile + r * width + c * lanes, acc[r][c]);
  }
}

template <int ROWS>
FL_AVX512 FL_FLATTEN void tile_product_avx512(int64_t K, const float* a, int64_t lda, const float* panel,
                                              bool accumulate, float* tile) {
  tile_product_on<Avx512Ops, ROWS>(K, a, lda, panel, accumulate, tile);
}

template <int ROWS>
FL_AVX2 FL_FLATTEN void tile_product_avx2(int64_t K, const float* a, int64_t lda, const float* panel,
                                          bool accumulate, float* tile) {
  tile_product_on<Avx2Ops, ROWS>(K, a, lda, panel, accumulate, tile);
}

// The same tile from bfloat16: a's values and the panel's weights in pairs along k (pack_gate_panels_bf16),
// one vdpbf16ps per pair adding both products to the float32 accumulators.
template <int ROWS>
FL_AVX512_BF16 void tile_product_bf16(int64_t K, const bf16* a, int64_t lda, const bf16* panel, bool accumulate,
                                      float* tile) {
  constexpr int64_t lanes = 16, pair_width = 128;
  __m512 acc[ROWS][4];
  load_accumulators<ROWS>(acc, tile, accumulate);
  const int64_t pairs = at::divup(K, 2);
  for (int64_t q = 0; q < pairs; ++q) {
    const bf16* w = panel + q * pair_width;
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(w);
    const __m512bh w1 = (__m512bh)_mm512_loadu_si512(w + 2 * lanes);
    const __m512bh w2 = (__m512bh)_mm512_loadu_si512(w + 4 * lanes);
    const __m512bh w3 = (__m512bh)_mm512_loadu_si512(w + 6 * lanes);
    const bool last_single = 2 * q + 1 == K;  // odd K: the last pair's second value is past the row
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
      const bf16* values = a + r * lda + 2 * q;
      uint32_t pair;
      if (last_single) {
        uint16_t single;
        std::memcpy(&single, values, sizeof(single));
        pair = single;
      } else {
        std::memcpy(&pair, values, sizeof(pair));
      }
      const __m512bh x = (__m512bh)_mm512_set1_epi32(static_cast<int>(pair));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, w0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, w1);
      acc[r][2] = _mm512_dpbf16_ps(acc[r][2], x, w2);
      acc[r][3] = _mm512_dpbf16_ps(acc[r][3], x, w3);
    }
  }
  store_accumulators<ROWS>(acc, tile);
}

// Calls f(std::integral_constant<int, R>()) for R = rows, 1 <= rows <= MAX (a larger count runs MAX).
template <int MAX, typename F>
void with_rows(int rows, const F& f) {
  if constexpr (MAX > 1) {
    if (rows < MAX) return with_rows<MAX - 1>(rows, f);
  }
  f(std::integral_constant<int, MAX>());
}

void tile_product(Isa, int rows, int64_t K, const bf16* a, int64_t lda, const bf16* panel, bool accumulate,
                  float* tile) {
  with_rows<kAvx512Tiles.max_rows>(rows, [&](auto r) { tile_product_bf16<r()>(K, a, lda, panel, accumulate, tile); });
}

void tile_product(Isa isa, int rows, int64_t K, const float* a, int64_t lda, const float* panel, bool accumulate,
                  float* tile) {
  if (isa == Isa::kAvx2) {
    return with_rows<kAvx2Tiles.max_rows>(rows, [&](auto r) {
      tile_product_avx2<r()>(K, a, lda, panel, accumulate, tile);
    });
  }
  with_rows<kAvx512Tiles.max_rows>(rows, [&](auto r) { tile_product_avx512<r()>(K, a, lda, panel, accumulate, tile); });
}

// The cell update of `units` units of one row from its tile row (x·W_ihᵀ + h·W_hhᵀ, gate g of unit j at
// g·lanes + j), with the math of the per-step pointwise pass. A function of its own with restrict pointers
// so that the compiler vectorizes it.
template <typename scalar_t>
__attribute__((noinline)) FL_CPU_CLONES void forward_tile_row(int64_t H, int64_t units, int64_t lanes,
                                                              const float* __restrict tile_row,
                                                              const scalar_t* __restrict bias,
                                                              scalar_t* __restrict gates, float* __restrict cell,
                                                              float* __restrict cell_prev_saved,
                                                              scalar_t* __restrict output) {
  if (cell_prev_saved) {
    for (int64_t lane = 0; lane < units; ++lane) cell_prev_saved[lane] = cell[lane];
  }
  float activations[4][kMaxLanes];
  for (int64_t lane = 0; lane < units; ++lane) {
    float next_cell, hidden;
    math::cell_forward<float>(tile_row[lane] + float(bias[lane]), tile_row[lanes + lane] + float(bias[H + lane]),
                              tile_row[2 * lanes + lane] + float(bias[2 * H + lane]),
                              tile_row[3 * lanes + lane] + float(bias[3 * H + lane]), cell[lane],
                              activations[0][lane], activations[1][lane], activations[2][lane], activations[3][lane],
                              next_cell, hidden);
    cell[lane] = next_cell;
    output[lane] = scalar_t(hidden);
  }
  if (gates) {
    for (int64_t gate = 0; gate < 4; ++gate) {
      for (int64_t lane = 0; lane < units; ++lane) gates[gate * H + lane] = scalar_t(activations[gate][lane]);
    }
  }
}

// The tile of `rows` rows of x·W_ihᵀ for one gate panel, from a [rows, 4H] gate matrix (zero beyond `units`).
void load_tile(int rows, int64_t H, int64_t units, int64_t lanes, const float* gates, float* tile) {
  for (int r = 0; r < rows; ++r) {
    for (int64_t gate = 0; gate < 4; ++gate) {
      float* out = tile + (r * 4 + gate) * lanes;
      std::memcpy(out, gates + r * 4 * H + gate * H, units * sizeof(float));
      std::fill(out + units, out + lanes, 0.0f);
    }
  }
}

// All rows of gate panels [begin, end) for one step.
template <typename scalar_t>
void forward_panels(const ForwardStep<scalar_t>& s, int64_t begin, int64_t end) {
  alignas(64) float tile[kMaxTileFloats];
  const TileShape shape = tile_shape(s.isa);
  const int64_t lanes = shape.lanes, width = 4 * lanes;
  const RowTiles row_tiles(s.rows, shape.max_rows);
  // A panel holds `width` weights per k; bfloat16 panels hold K rounded up to pairs.
  const auto panel_k = [](int64_t K) { return std::is_same_v<scalar_t, bf16> ? at::divup(K, 2) * 2 : K; };
  for (int64_t panel = begin; panel < end; ++panel) {
    const scalar_t* weights_hh = s.packed_hh + panel * panel_k(s.H) * width;
    const int64_t first_unit = panel * lanes;
    const int64_t units = std::min(lanes, s.H - first_unit);
    for (int64_t row_tile = 0; row_tile < row_tiles.count; ++row_tile) {
      const int64_t row0 = row_tiles.first_row(row_tile);
      const int rows = row_tiles.rows(row_tile);
      if (s.project_input) {
        tile_product(s.isa, rows, s.C, s.input + row0 * s.C, s.C, s.packed_ih + panel * panel_k(s.C) * width,
                     /*accumulate=*/false, tile);
      } else {
        // Only float32 reads x·W_ihᵀ from one GEMM first (recurrence_forward_projects_input).
        if constexpr (std::is_same_v<scalar_t, float>) {
          load_tile(rows, s.H, units, lanes, s.gates + row0 * 4 * s.H + first_unit, tile);
        }
      }
      tile_product(s.isa, rows, s.H, s.hidden_prev + row0 * s.H, s.H, weights_hh, /*accumulate=*/true, tile);
      for (int r = 0; r < rows; ++r) {
        const int64_t row = row0 + r;
        forward_tile_row<scalar_t>(s.H, units, lanes, tile + r * width, s.bias + first_unit,
                         s.save_gates ? s.gates + row * 4 * s.H + first_unit : nullptr, s.cell + row * s.H + first_unit,
                         s.cell_prev_saved ? s.cell_prev_saved + row * s.H + first_unit : nullptr,
                         s.output + row * s.H + first_unit);
      }
    }
  }
}

// The backward of the cell update for `units` units of one row; `recurrent` is dL/dh_t arriving through
// the recurrence (a tile row, or grad_hidden_n at the first step a call visits), added to the output's
// gradient as the per-step pass adds them.
template <typename scalar_t>
__attribute__((noinline)) FL_CPU_CLONES void backward_tile_row(
    int64_t H, int64_t units, const float* __restrict recurrent, const scalar_t* __restrict grad_output,
    const scalar_t* __restrict gates, const float* __restrict cell_prev, float* __restrict grad_cell,
    scalar_t* __restrict grad_gates) {
  for (int64_t lane = 0; lane < units; ++lane) {
    float grad_i, grad_f, grad_g, grad_o, grad_cell_prev;
    math::cell_backward<float>(float(gates[lane]), float(gates[H + lane]), float(gates[2 * H + lane]),
                               float(gates[3 * H + lane]), cell_prev[lane], float(grad_output[lane]) + recurrent[lane],
                               grad_cell[lane], grad_i, grad_f, grad_g, grad_o, grad_cell_prev);
    grad_gates[lane] = scalar_t(grad_i);
    grad_gates[H + lane] = scalar_t(grad_f);
    grad_gates[2 * H + lane] = scalar_t(grad_g);
    grad_gates[3 * H + lane] = scalar_t(grad_o);
    grad_cell[lane] = grad_cell_prev;
  }
}

// All rows of column panels [begin, end) (4·lanes hidden units each) for one backward step.
template <typename scalar_t>
void backward_panels(const BackwardStep<scalar_t>& s, int64_t begin, int64_t end) {
  alignas(64) float tile[kMaxTileFloats];
  float grad_hidden_n[kMaxTileFloats];  // one row of grad_hidden_n in float, at the first step a call visits
  const TileShape shape = tile_shape(s.isa);
  const int64_t width = 4 * shape.lanes, H = s.H;
  const RowTiles row_tiles(s.rows, shape.max_rows);
  for (int64_t panel = begin; panel < end; ++panel) {
    const int64_t first_unit = panel * width;
    const int64_t units = std::min(width, H - first_unit);
    for (int64_t row_tile = 0; row_tile < row_tiles.count; ++row_tile) {
      const int64_t row0 = row_tiles.first_row(row_tile);
      const int rows = row_tiles.rows(row_tile);
      if (s.grad_gates_later) {
        tile_product(s.isa, rows, 4 * H, s.grad_gates_later + row0 * 4 * H, 4 * H,
                     s.packed_hh + panel * 4 * H * width, /*accumulate=*/false, tile);
      }
      for (int r = 0; r < rows; ++r) {
        const int64_t row = row0 + r;
        const float* recurrent = tile + r * width;
        if (!s.grad_gates_later) {
          for (int64_t unit = 0; unit < units; ++unit) grad_hidden_n[unit] = float(s.grad_hidden_n[row * H + first_unit + unit]);
          recurrent = grad_hidden_n;
        }
        backward_tile_row<scalar_t>(H, units, recurrent, s.grad_output + row * H + first_unit,
                          s.gates + row * 4 * H + first_unit, s.cell_prev + row * H + first_unit,
                          s.grad_cell + row * H + first_unit, s.grad_gates + row * 4 * H + first_unit);
      }
    }
  }
}

#endif

// The kernels the hooks below name, by dtype and the instruction set options::cpu_isa() allows; the variant is
// the instruction set the kernel runs with.
RecurrenceKernel kernel_on(const char* name, Isa isa) { return {name, static_cast<int>(isa)}; }

RecurrenceKernel forward_kernel(at::ScalarType dtype) {
  const Isa isa = options::cpu_isa();
  if (dtype == at::kFloat) {
    if (isa >= Isa::kAvx512) return kernel_on("avx512 register tiles", isa);
    if (isa == Isa::kAvx2) return kernel_on("avx2 register tiles", isa);
  }
  if (dtype == at::kBFloat16) {
    if (isa == Isa::kAmx) return kernel_on("amx tiles", isa);
    if (isa == Isa::kAvx512Bf16) return kernel_on("avx512_bf16 register tiles", isa);
  }
  return {};
}

// The backward has no AMX version: on an AMX CPU a bfloat16 backward takes the vdpbf16ps tiles for small steps
// and the per-step path's AMX GEMMs above (path_thresholds.h).
using thresholds::kAmxPerStepMinMultiplyAdds;

RecurrenceKernel backward_kernel(const LstmRecurrenceShape& shape, at::ScalarType dtype) {
  const Isa isa = options::cpu_isa();
  if (dtype == at::kBFloat16) {
    const bool small_step = shape.batch * 4 * shape.hidden * shape.hidden < kAmxPerStepMinMultiplyAdds;
    if (isa == Isa::kAvx512Bf16 || (isa == Isa::kAmx && small_step)) {
      return kernel_on("avx512_bf16 register tiles", Isa::kAvx512Bf16);
    }
    return {};
  }
  return dtype == at::kFloat ? forward_kernel(dtype) : RecurrenceKernel{};
}

// The run hooks take only a kernel the *_kernel hooks named (for that dtype), on an instruction set this CPU
// has; anything else raises.
Isa check_kernel(const RecurrenceKernel& kernel, at::ScalarType dtype) {
  TORCH_CHECK(kernel.name != nullptr, "fused_lstm: no CPU kernel runs the whole recurrence of a ", dtype,
              " layer with cpu_isa=", options::get("cpu_isa"), " on this CPU (best: ", isa_name(best_isa()), ")");
  const Isa isa = static_cast<Isa>(kernel.variant);
  const Isa least = dtype == at::kBFloat16 ? Isa::kAvx512Bf16 : Isa::kAvx2;
  TORCH_CHECK((dtype == at::kFloat || dtype == at::kBFloat16) && isa >= least && isa <= best_isa(),
              "fused_lstm: the CPU kernel '", kernel.name, "' cannot run a ", dtype, " layer on this CPU (best: ",
              isa_name(best_isa()), ")");
  return isa;
}

}  // namespace

bool recurrence_forward_projects_input(const LstmRecurrenceShape& shape, at::ScalarType dtype) {
  // bfloat16 tiles project the input at every size. In float32, with few rows per step, streaming W_ih's
  // panels every step costs more than the multiply-adds they feed: one GEMM over all T·B rows first is faster.
  return dtype == at::kBFloat16 || shape.batch >= thresholds::kMinRowsToProjectPerStep;
}

RecurrenceKernel recurrence_forward_kernel(const LstmRecurrenceShape& shape, at::ScalarType dtype) {
  return shape.uniform_batch && !shape.projected ? forward_kernel(dtype) : RecurrenceKernel{};
}

RecurrenceKernel recurrence_backward_kernel(const LstmRecurrenceShape& shape, at::ScalarType dtype) {
  return shape.uniform_batch && !shape.projected ? backward_kernel(shape, dtype) : RecurrenceKernel{};
}

namespace {

#if FL_HAVE_X86_TILES
// The forward with register tiles: float32 (FMA) or bfloat16 (vdpbf16ps, input projected in the steps).
template <typename scalar_t>
void register_tile_forward(const LstmRecurrenceForwardParams& p, Isa isa) {
  const int64_t T = p.steps, B = p.batch, H = p.hidden, C = p.input_size;
  const int64_t lanes = tile_shape(isa).lanes;
  const auto pack = [&](const void* weight, int64_t K) {
    if constexpr (std::is_same_v<scalar_t, bf16>) {
      return pack_gate_panels_bf16(static_cast<const bf16*>(weight), H, K);
    } else {
      return pack_gate_panels(static_cast<const float*>(weight), H, K, lanes);
    }
  };
  const std::vector<scalar_t> packed_ih = p.project_input ? pack(p.weight_ih, C) : std::vector<scalar_t>();
  const std::vector<scalar_t> packed_hh = pack(p.weight_hh, H);
  const int64_t panels = at::divup(H, lanes);
  // What stays the same over the steps is set once; each step moves the row pointers.
  ForwardStep<scalar_t> first;
  first.isa = isa;
  first.rows = B;
  first.H = H;
  first.C = C;
  first.project_input = p.project_input;
  first.packed_ih = packed_ih.data();  // empty unless projecting per step
  first.packed_hh = packed_hh.data();
  first.bias = static_cast<const scalar_t*>(p.bias);
  first.save_gates = p.save_for_backward;
  first.cell = static_cast<float*>(p.cell);
  scalar_t* const output = static_cast<scalar_t*>(p.output);
  parallel_steps(T, panels, [&](int64_t i, int64_t begin, int64_t end) {
    const int64_t t = p.reverse ? T - 1 - i : i;
    ForwardStep<scalar_t> step = first;
    step.hidden_prev = i == 0 ? static_cast<const scalar_t*>(p.h0) : output + (p.reverse ? t + 1 : t - 1) * B * H;
    step.input = p.project_input ? static_cast<const scalar_t*>(p.input) + t * B * C : nullptr;
    step.gates =
        p.save_for_backward || !p.project_input ? static_cast<scalar_t*>(p.gates) + t * B * 4 * H : nullptr;
    step.cell_prev_saved = p.save_for_backward ? static_cast<float*>(p.cell_prev_saved) + t * B * H : nullptr;
    step.output = output + t * B * H;
    forward_panels(step, begin, end);
  });
}
#endif

}  // namespace

void recurrence_forward(const LstmRecurrenceForwardParams& p, at::ScalarType dtype, const RecurrenceKernel& kernel) {
  const Isa isa = check_kernel(kernel, dtype);
  if (isa == Isa::kAmx && dtype == at::kBFloat16) return amx_recurrence_forward(p);
  TORCH_CHECK(dtype == at::kFloat || p.project_input, "fused_lstm: the bfloat16 register tiles project the input");
#if FL_HAVE_X86_TILES
  if (dtype == at::kBFloat16) return register_tile_forward<bf16>(p, isa);
  register_tile_forward<float>(p, isa);
#endif
}

at::Tensor recurrence_backward_prepare_weight(const at::Tensor& weight_hh, const RecurrenceKernel& kernel) {
  const at::ScalarType dtype = weight_hh.scalar_type();
  const Isa isa = check_kernel(kernel, dtype);
  TORCH_CHECK(weight_hh.dim() == 2 && weight_hh.size(0) == 4 * weight_hh.size(1) && weight_hh.device().is_cpu(),
              "fused_lstm: the CPU whole recurrence takes a CPU weight_hh of shape [4H, H], got ", weight_hh.sizes(),
              " on ", weight_hh.device());
  const at::Tensor weight = weight_hh.contiguous();
  const int64_t H = weight.size(1);
  if (dtype == at::kBFloat16) return pack_column_panels_bf16(static_cast<const bf16*>(weight.data_ptr()), 4 * H, H);
  return pack_column_panels(weight.data_ptr<float>(), 4 * H, H, 4 * tile_shape(isa).lanes);
}

namespace {

#if FL_HAVE_X86_TILES
template <typename scalar_t>
void register_tile_backward(const LstmRecurrenceBackwardParams& p, Isa isa) {
  const int64_t T = p.steps, B = p.batch, H = p.hidden;
  const int64_t width = 4 * tile_shape(isa).lanes;
  const int64_t panels = at::divup(H, width);
  // What stays the same over the steps is set once; each step moves the row pointers.
  BackwardStep<scalar_t> first;
  first.isa = isa;
  first.rows = B;
  first.H = H;
  first.packed_hh = static_cast<const scalar_t*>(p.weight_hh_prepared);
  first.grad_hidden_n = static_cast<const scalar_t*>(p.grad_hidden_n);
  first.grad_cell = static_cast<float*>(p.grad_cell);
  scalar_t* const grad_gates = static_cast<scalar_t*>(p.grad_gates);
  // Steps in the opposite order of the forward's visit.
  parallel_steps(T, panels, [&](int64_t i, int64_t begin, int64_t end) {
    const int64_t t = p.reverse ? i : T - 1 - i;
    BackwardStep<scalar_t> step = first;
    // The block's last step reads grad_hidden_n instead of a later step's gradients.
    step.grad_gates_later = i == 0 ? nullptr : grad_gates + (p.reverse ? t - 1 : t + 1) * B * 4 * H;
    step.gates = static_cast<const scalar_t*>(p.gates) + t * B * 4 * H;
    step.cell_prev = static_cast<const float*>(p.cell_prev) + t * B * H;
    step.grad_output = static_cast<const scalar_t*>(p.grad_output) + t * B * H;
    step.grad_gates = grad_gates + t * B * 4 * H;
    backward_panels(step, begin, end);
  });
}
#endif

}  // namespace

void recurrence_backward(const LstmRecurrenceBackwardParams& p, at::ScalarType dtype, const RecurrenceKernel& kernel) {
  const Isa isa = check_kernel(kernel, dtype);
#if FL_HAVE_X86_TILES
  if (dtype == at::kBFloat16) return register_tile_backward<bf16>(p, Isa::kAvx512Bf16);
  register_tile_backward<float>(p, isa);
#endif
}

}  // namespace cpu
}  // namespace fused_lstm
