#include "lstm_sequence_cpu.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../lstm_math.h"
#include "parallel.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FL_HAVE_AVX512_KERNEL 1
// Only these functions use AVX-512; the rest of the library runs on any x86-64. `flatten` inlines the
// pointwise math into them so that it is vectorized for AVX-512 too.
#define FL_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"), flatten))
#else
#define FL_HAVE_AVX512_KERNEL 0
#endif

namespace fused_lstm {
namespace cpu {
namespace {

constexpr int64_t kLanes = 16;                // floats in one AVX-512 register
constexpr int64_t kTileColumns = 4 * kLanes;  // columns of a register tile
constexpr int kMaxTileRows = 6;  // 6 rows × 4 accumulators + 4 weight vectors + 1 broadcast of 32 registers
constexpr int64_t kMinRowsToProjectPerStep = 4;

int64_t divup(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Rows per register tile: as few tiles as kMaxTileRows allows, evenly filled (8 rows as 4 + 4, not 6 + 2:
// a 2-row tile does 8 multiply-adds per 6 loads).
int64_t tile_rows_for(int64_t rows) { return rows == 0 ? 1 : divup(rows, divup(rows, kMaxTileRows)); }

bool fused_step_enabled() {
  static const bool enabled = [] {
    const char* value = std::getenv("FUSED_LSTM_CPU_FUSED_STEP");
    if (value == nullptr || value[0] == '\0' || std::strcmp(value, "1") == 0) return true;
    TORCH_CHECK(std::strcmp(value, "0") == 0, "fused_lstm: FUSED_LSTM_CPU_FUSED_STEP must be 0 or 1, got '", value,
                "'");
    return false;
  }();
  return enabled;
}

bool cpu_has_avx512() {
#if FL_HAVE_AVX512_KERNEL
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return has;
#else
  return false;
#endif
}

// Forward panels: gate g of unit j is row g·H + j of a weight [4H, K]. Panel p holds, for every k, the
// four gates of units 16p .. 16p+15 side by side ([H/16][K][4][16], zero beyond unit H), so that one
// register tile row is the four gates of 16 units and the cell update can run on it directly.
std::vector<float> pack_gate_panels(const float* weight, int64_t H, int64_t K) {
  const int64_t panels = divup(H, kLanes);
  std::vector<float> packed(static_cast<size_t>(panels * K * kTileColumns));
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t panel = begin; panel < end; ++panel) {
      float* out = packed.data() + panel * K * kTileColumns;
      for (int64_t gate = 0; gate < 4; ++gate) {
        for (int64_t lane = 0; lane < kLanes; ++lane) {
          const int64_t unit = panel * kLanes + lane;
          float* column = out + gate * kLanes + lane;
          if (unit >= H) {
            for (int64_t k = 0; k < K; ++k) column[k * kTileColumns] = 0.0f;
            continue;
          }
          const float* row = weight + (gate * H + unit) * K;
          for (int64_t k = 0; k < K; ++k) column[k * kTileColumns] = row[k];
        }
      }
    }
  });
  return packed;
}

// Column panels of a matrix [R, cols]: panel p is columns 64p .. 64p+63 of every row ([cols/64][R][64],
// zero beyond column `cols`), contiguous so that a tile streams it.
std::vector<float> pack_column_panels(const float* matrix, int64_t R, int64_t cols) {
  const int64_t panels = divup(cols, kTileColumns);
  std::vector<float> packed(static_cast<size_t>(panels * R * kTileColumns), 0.0f);
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t panel = begin; panel < end; ++panel) {
      const int64_t first = panel * kTileColumns, count = std::min(kTileColumns, cols - first);
      for (int64_t r = 0; r < R; ++r) {
        std::memcpy(packed.data() + (panel * R + r) * kTileColumns, matrix + r * cols + first, count * sizeof(float));
      }
    }
  });
  return packed;
}

// One step of the forward recurrence, as every panel task sees it. Rows are this step's B rows.
struct ForwardStep {
  int64_t rows;                // B
  int64_t H;
  int64_t C;
  bool project_input;          // true: x_t·W_ihᵀ from input and packed_ih; false: `gates` holds it on entry
  const float* input;          // [B, C] x_t (may be nullptr when C = 0)
  const float* packed_ih;      // gate panels of W_ih (K = C)
  const float* packed_hh;      // gate panels of W_hh (K = H)
  const float* bias;           // [4H]
  const float* hidden_prev;    // [B, H] h_{t-1}
  float* gates;                // [B, 4H] in: x_t·W_ihᵀ when input is nullptr; out: activations when saving
  bool save_gates;             // write the activations into gates
  float* cell;                 // [B, H] in: c_{t-1}, out: c_t
  float* cell_prev_saved;      // [B, H] or nullptr
  float* output;               // [B, H] h_t
};

// One step of the backward recurrence. Rows are this step's B rows.
struct BackwardStep {
  int64_t rows;                   // B
  int64_t H;
  const float* packed_hh;         // column panels of W_hh [4H, H] (K = 4H)
  const float* grad_gates_later;  // [B, 4H] dL/d(pre-activations) of the step after this one, nullptr at the last
  const float* grad_hidden_n;     // [B, H] dL/dh_n: the recurrent gradient of the last step
  const float* gates;             // [B, 4H] saved activations
  const float* cell_prev;         // [B, H] saved c_{t-1}
  const float* grad_output;       // [B, H]
  float* grad_cell;               // [B, H] in: dL/dc_t, out: dL/dc_{t-1}
  float* grad_gates;              // [B, 4H] out
};

#if FL_HAVE_AVX512_KERNEL
// tile[r][0..64) (+)= sum_k a[r·lda + k] · panel[k][0..64) for r < ROWS: the register-tiled product.
template <int ROWS>
FL_AVX512 void tile_product(int64_t K, const float* a, int64_t lda, const float* panel, bool accumulate,
                            float* tile) {
  __m512 acc[ROWS][4];
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      acc[r][c] = accumulate ? _mm512_loadu_ps(tile + r * kTileColumns + c * kLanes) : _mm512_setzero_ps();
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* w = panel + k * kTileColumns;
    const __m512 w0 = _mm512_loadu_ps(w);
    const __m512 w1 = _mm512_loadu_ps(w + kLanes);
    const __m512 w2 = _mm512_loadu_ps(w + 2 * kLanes);
    const __m512 w3 = _mm512_loadu_ps(w + 3 * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
      const __m512 x = _mm512_set1_ps(a[r * lda + k]);
      acc[r][0] = _mm512_fmadd_ps(x, w0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(x, w1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(x, w2, acc[r][2]);
      acc[r][3] = _mm512_fmadd_ps(x, w3, acc[r][3]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) _mm512_storeu_ps(tile + r * kTileColumns + c * kLanes, acc[r][c]);
  }
}

FL_AVX512 void tile_product_rows(int rows, int64_t K, const float* a, int64_t lda, const float* panel,
                                 bool accumulate, float* tile) {
  switch (rows) {
    case 1: return tile_product<1>(K, a, lda, panel, accumulate, tile);
    case 2: return tile_product<2>(K, a, lda, panel, accumulate, tile);
    case 3: return tile_product<3>(K, a, lda, panel, accumulate, tile);
    case 4: return tile_product<4>(K, a, lda, panel, accumulate, tile);
    case 5: return tile_product<5>(K, a, lda, panel, accumulate, tile);
    default: return tile_product<6>(K, a, lda, panel, accumulate, tile);
  }
}

// The cell update of `units` units of one row from its tile row (x·W_ihᵀ + h·W_hhᵀ, gate-major within
// the panel), with the math of the per-step pointwise pass. Not inlined into the tile loop: with its own
// restrict pointers the compiler vectorizes it.
__attribute__((noinline)) FL_AVX512 void forward_tile_row(int64_t H, int64_t units, const float* __restrict tile_row,
                                                          const float* __restrict bias, float* __restrict gates,
                                                          float* __restrict cell, float* __restrict cell_prev_saved,
                                                          float* __restrict output) {
  if (cell_prev_saved) {
    for (int64_t lane = 0; lane < units; ++lane) cell_prev_saved[lane] = cell[lane];
  }
  float activations[4][kLanes];
  for (int64_t lane = 0; lane < units; ++lane) {
    float next_cell, hidden;
    math::cell_forward<float>(tile_row[lane] + bias[lane], tile_row[kLanes + lane] + bias[H + lane],
                              tile_row[2 * kLanes + lane] + bias[2 * H + lane],
                              tile_row[3 * kLanes + lane] + bias[3 * H + lane], cell[lane], activations[0][lane],
                              activations[1][lane], activations[2][lane], activations[3][lane], next_cell, hidden);
    cell[lane] = next_cell;
    output[lane] = hidden;
  }
  if (gates) {
    for (int64_t gate = 0; gate < 4; ++gate) {
      for (int64_t lane = 0; lane < units; ++lane) gates[gate * H + lane] = activations[gate][lane];
    }
  }
}

// The tile of `rows` rows of x·W_ihᵀ for one gate panel, from a [rows, 4H] gate matrix (zero beyond `units`).
void load_tile(int rows, int64_t H, int64_t units, const float* gates, float* tile) {
  for (int r = 0; r < rows; ++r) {
    for (int64_t gate = 0; gate < 4; ++gate) {
      float* out = tile + r * kTileColumns + gate * kLanes;
      std::memcpy(out, gates + r * 4 * H + gate * H, units * sizeof(float));
      std::fill(out + units, out + kLanes, 0.0f);
    }
  }
}

// All rows of gate panels [begin, end) for one step.
FL_AVX512 void forward_panels(const ForwardStep& s, int64_t begin, int64_t end) {
  alignas(64) float tile[kMaxTileRows * kTileColumns];
  for (int64_t panel = begin; panel < end; ++panel) {
    const float* weights_ih = s.packed_ih + panel * s.C * kTileColumns;
    const float* weights_hh = s.packed_hh + panel * s.H * kTileColumns;
    const int64_t first_unit = panel * kLanes;
    const int64_t units = std::min(kLanes, s.H - first_unit);
    const int64_t tile_height = tile_rows_for(s.rows);
    for (int64_t row0 = 0; row0 < s.rows; row0 += tile_height) {
      const int rows = static_cast<int>(std::min<int64_t>(tile_height, s.rows - row0));
      if (s.project_input) {
        tile_product_rows(rows, s.C, s.input + row0 * s.C, s.C, weights_ih, /*accumulate=*/false, tile);
      } else {
        load_tile(rows, s.H, units, s.gates + row0 * 4 * s.H + first_unit, tile);
      }
      tile_product_rows(rows, s.H, s.hidden_prev + row0 * s.H, s.H, weights_hh, /*accumulate=*/true, tile);
      for (int r = 0; r < rows; ++r) {
        const int64_t row = row0 + r;
        forward_tile_row(s.H, units, tile + r * kTileColumns, s.bias + first_unit,
                         s.save_gates ? s.gates + row * 4 * s.H + first_unit : nullptr, s.cell + row * s.H + first_unit,
                         s.cell_prev_saved ? s.cell_prev_saved + row * s.H + first_unit : nullptr,
                         s.output + row * s.H + first_unit);
      }
    }
  }
}

// The backward of the cell update for `units` units of one row; `recurrent` is dL/dh_t arriving through
// the recurrence (a tile row, or dL/dh_n at the last step), added to the output's gradient as the
// per-step pass adds them.
__attribute__((noinline)) FL_AVX512 void backward_tile_row(
    int64_t H, int64_t units, const float* __restrict recurrent, const float* __restrict grad_output,
    const float* __restrict gates, const float* __restrict cell_prev, float* __restrict grad_cell,
    float* __restrict grad_gates) {
  for (int64_t lane = 0; lane < units; ++lane) {
    float grad_i, grad_f, grad_g, grad_o, grad_cell_prev;
    math::cell_backward<float>(gates[lane], gates[H + lane], gates[2 * H + lane], gates[3 * H + lane],
                               cell_prev[lane], grad_output[lane] + recurrent[lane], grad_cell[lane], grad_i, grad_f,
                               grad_g, grad_o, grad_cell_prev);
    grad_gates[lane] = grad_i;
    grad_gates[H + lane] = grad_f;
    grad_gates[2 * H + lane] = grad_g;
    grad_gates[3 * H + lane] = grad_o;
    grad_cell[lane] = grad_cell_prev;
  }
}

// All rows of column panels [begin, end) (64 units each) for one backward step.
FL_AVX512 void backward_panels(const BackwardStep& s, int64_t begin, int64_t end) {
  alignas(64) float tile[kMaxTileRows * kTileColumns];
  const int64_t H = s.H;
  for (int64_t panel = begin; panel < end; ++panel) {
    const int64_t first_unit = panel * kTileColumns;
    const int64_t units = std::min(kTileColumns, H - first_unit);
    const int64_t tile_height = tile_rows_for(s.rows);
    for (int64_t row0 = 0; row0 < s.rows; row0 += tile_height) {
      const int rows = static_cast<int>(std::min<int64_t>(tile_height, s.rows - row0));
      if (s.grad_gates_later) {
        tile_product_rows(rows, 4 * H, s.grad_gates_later + row0 * 4 * H, 4 * H, s.packed_hh + panel * 4 * H * kTileColumns,
                          /*accumulate=*/false, tile);
      }
      for (int r = 0; r < rows; ++r) {
        const int64_t row = row0 + r;
        const float* recurrent = s.grad_gates_later ? tile + r * kTileColumns : s.grad_hidden_n + row * H + first_unit;
        backward_tile_row(H, units, recurrent, s.grad_output + row * H + first_unit,
                          s.gates + row * 4 * H + first_unit, s.cell_prev + row * H + first_unit,
                          s.grad_cell + row * H + first_unit, s.grad_gates + row * 4 * H + first_unit);
      }
    }
  }
}

// out[rows, cols] = a[rows, K] · the matrix behind `packed` (column panels), for column panels [begin, end).
FL_AVX512 void product_panels(int64_t rows, int64_t K, const float* a, const float* packed, int64_t cols, float* out,
                              int64_t begin, int64_t end) {
  alignas(64) float tile[kMaxTileRows * kTileColumns];
  for (int64_t panel = begin; panel < end; ++panel) {
    const int64_t first = panel * kTileColumns, count = std::min(kTileColumns, cols - first);
    const int64_t tile_height = tile_rows_for(rows);
    for (int64_t row0 = 0; row0 < rows; row0 += tile_height) {
      const int tile_rows = static_cast<int>(std::min<int64_t>(tile_height, rows - row0));
      tile_product_rows(tile_rows, K, a + row0 * K, K, packed + panel * K * kTileColumns, /*accumulate=*/false, tile);
      for (int r = 0; r < tile_rows; ++r) {
        std::memcpy(out + (row0 + r) * cols + first, tile + r * kTileColumns, count * sizeof(float));
      }
    }
  }
}
#endif

void check_supported(const LstmSequenceShape& shape, at::ScalarType dtype) {
  TORCH_CHECK(sequence_supported(shape, dtype),
              "fused_lstm: the fused CPU step serves float32 padded sequences without projection on an AVX-512 CPU; "
              "got ", dtype);
}

}  // namespace

bool sequence_forward_projects_input(const LstmSequenceShape& shape) {
  // With few rows per step, streaming W_ih's panels every step costs more than the multiply-adds they
  // feed: one GEMM over all T·B rows first is faster there.
  return shape.batch >= kMinRowsToProjectPerStep;
}

bool sequence_supported(const LstmSequenceShape& shape, at::ScalarType dtype) {
  return dtype == at::kFloat && shape.uniform_batch && !shape.projected && shape.hidden > 0 && cpu_has_avx512() &&
         fused_step_enabled();
}

void sequence_forward(const LstmSequenceForwardParams& p, at::ScalarType dtype) {
  check_supported({p.steps, p.batch, p.hidden, true, false}, dtype);
#if FL_HAVE_AVX512_KERNEL
  const int64_t T = p.steps, B = p.batch, H = p.hidden, C = p.input_size;
  const std::vector<float> packed_ih =
      p.project_input ? pack_gate_panels(static_cast<const float*>(p.weight_ih), H, C) : std::vector<float>();
  const std::vector<float> packed_hh = pack_gate_panels(static_cast<const float*>(p.weight_hh), H, H);
  const float* hidden_prev = static_cast<const float*>(p.h0);
  for (int64_t i = 0; i < T; ++i) {
    const int64_t t = p.reverse ? T - 1 - i : i;
    ForwardStep step;
    step.rows = B;
    step.H = H;
    step.C = C;
    step.project_input = p.project_input;
    step.input = static_cast<const float*>(p.input) + t * B * C;
    step.packed_ih = packed_ih.data();  // empty unless projecting per step
    step.packed_hh = packed_hh.data();
    step.bias = static_cast<const float*>(p.bias);
    step.hidden_prev = hidden_prev;
    step.save_gates = p.save_for_backward;
    step.gates = p.save_for_backward || !p.project_input ? static_cast<float*>(p.gates) + t * B * 4 * H : nullptr;
    step.cell = static_cast<float*>(p.cell);
    step.cell_prev_saved = p.save_for_backward ? static_cast<float*>(p.cell_prev_saved) + t * B * H : nullptr;
    step.output = static_cast<float*>(p.output) + t * B * H;
    at::parallel_for(0, divup(H, kLanes), 1, [&](int64_t begin, int64_t end) { forward_panels(step, begin, end); });
    hidden_prev = step.output;
  }
#endif
}

void sequence_backward(const LstmSequenceBackwardParams& p, at::ScalarType dtype) {
  check_supported({p.steps, p.batch, p.hidden, true, false}, dtype);
#if FL_HAVE_AVX512_KERNEL
  const int64_t T = p.steps, B = p.batch, H = p.hidden;
  const std::vector<float> packed_hh = pack_column_panels(static_cast<const float*>(p.weight_hh), 4 * H, H);
  const int64_t panels = divup(H, kTileColumns);
  auto* grad_gates = static_cast<float*>(p.grad_gates);
  const float* grad_gates_later = nullptr;
  // Steps in the opposite order of the forward's visit.
  for (int64_t i = 0; i < T; ++i) {
    const int64_t t = p.reverse ? i : T - 1 - i;
    BackwardStep step;
    step.rows = B;
    step.H = H;
    step.packed_hh = packed_hh.data();
    step.grad_gates_later = grad_gates_later;
    step.grad_hidden_n = static_cast<const float*>(p.grad_hidden);
    step.gates = static_cast<const float*>(p.gates) + t * B * 4 * H;
    step.cell_prev = static_cast<const float*>(p.cell_prev) + t * B * H;
    step.grad_output = static_cast<const float*>(p.grad_output) + t * B * H;
    step.grad_cell = static_cast<float*>(p.grad_cell);
    step.grad_gates = grad_gates + t * B * 4 * H;
    at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) { backward_panels(step, begin, end); });
    grad_gates_later = step.grad_gates;
  }
  // dL/dh0 = dL/d(pre-activations of the first visited step) · W_hh.
  auto* grad_hidden = static_cast<float*>(p.grad_hidden);
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    product_panels(B, 4 * H, grad_gates_later, packed_hh.data(), H, grad_hidden, begin, end);
  });
#endif
}

}  // namespace cpu
}  // namespace fused_lstm
