// The whole recurrence (lstm_recurrence_cpu.h) for bfloat16 on CPUs with AMX (Intel Sapphire Rapids and later): the
// whole forward recurrence of a layer, x_t·W_ihᵀ + h_{t-1}·W_hhᵀ accumulated in float32 AMX tiles (TDPBF16PS)
// and the cell update run on them, per step; c_t in float32 throughout.
//
// Tiles: a C tile holds one gate of 16 hidden units for 16 batch rows (float32); four of them (i, f, g, o) make
// the cell of those units. A tiles are 16 rows × 32 bfloat16 of x_t or h_{t-1}; B tiles 16 pairs of rows of
// W_ihᵀ / W_hhᵀ × 16 units (the VNNI layout TDPBF16PS reads), packed once per call.
// Rows: the batch in row tiles of 16 (padded with zero rows); K: inputs and hidden units in chunks of 32
// (padded with zeros). Each thread takes blocks of 16 hidden units, the same blocks at every step, with one
// team for the whole recurrence (parallel_steps) and h_{t-1} in a bfloat16 buffer both steps share.
#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>

#include <cstring>
#include <vector>

#include "../lstm_math.h"
#include "clones.h"
#include "isa.h"
#include "lstm_recurrence_amx.h"
#include "parallel.h"

#if FL_HAVE_X86_TILES
#define FL_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq")))
#endif

namespace fused_lstm {
namespace cpu {
namespace {

using bf16 = c10::BFloat16;

constexpr int64_t kTileRows = 16;  // batch rows of a tile (M)
constexpr int64_t kTileK = 32;     // bfloat16 of K in one tile row (64 bytes)
constexpr int64_t kUnits = 16;     // hidden units of a C tile (N: 16 floats, 64 bytes)
constexpr int64_t kTileElements = kTileRows * kTileK;  // one packed B tile: 16 pair-rows × 32 bfloat16

int64_t round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

// B tiles of a weight W [4H, K]: for unit block u, K chunk c and gate g, the tile at ((u·chunks + c)·4 + g)
// holds tile[p][2n + q] = W[g·H + 16u + n][32c + 2p + q] (zero past H and K).
std::vector<bf16> pack_vnni(const bf16* weight, int64_t H, int64_t K) {
  const int64_t blocks = at::divup(H, kUnits), chunks = at::divup(K, kTileK);
  std::vector<bf16> packed(static_cast<size_t>(blocks * chunks * 4 * kTileElements), bf16(0.0f));
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      for (int64_t c = 0; c < chunks; ++c) {
        for (int64_t g = 0; g < 4; ++g) {
          bf16* tile = packed.data() + ((u * chunks + c) * 4 + g) * kTileElements;
          for (int64_t n = 0; n < kUnits && u * kUnits + n < H; ++n) {
            const bf16* row = weight + (g * H + u * kUnits + n) * K;
            for (int64_t k = c * kTileK; k < std::min(K, (c + 1) * kTileK); ++k) {
              const int64_t kk = k - c * kTileK;
              tile[(kk / 2) * kTileK + 2 * n + kk % 2] = row[k];
            }
          }
        }
      }
    }
  });
  return packed;
}

// The cell update of one row of 16 units from its four gate tiles' row (pre-activations without bias).
__attribute__((noinline)) FL_CPU_CLONES void amx_cell_row(
    int64_t H, int64_t units, const float* __restrict pre_i, const float* __restrict pre_f,
    const float* __restrict pre_g, const float* __restrict pre_o, const bf16* __restrict bias,
    float* __restrict cell, float* __restrict cell_prev_saved, bf16* __restrict output, bf16* __restrict h_next,
    bf16* __restrict gates) {
  float activations[4][kUnits];
  for (int64_t n = 0; n < units; ++n) {
    float next_cell, hidden;
    if (cell_prev_saved) cell_prev_saved[n] = cell[n];
    math::cell_forward<float>(pre_i[n] + float(bias[n]), pre_f[n] + float(bias[H + n]), pre_g[n] + float(bias[2 * H + n]),
                              pre_o[n] + float(bias[3 * H + n]), cell[n], activations[0][n], activations[1][n],
                              activations[2][n], activations[3][n], next_cell, hidden);
    cell[n] = next_cell;
    output[n] = bf16(hidden);
    h_next[n] = bf16(hidden);
  }
  if (gates) {
    for (int64_t g = 0; g < 4; ++g) {
      for (int64_t n = 0; n < units; ++n) gates[g * H + n] = bf16(activations[g][n]);
    }
  }
}

#if FL_HAVE_X86_TILES
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t bytes_per_row[16];
  uint8_t rows[16];
};

// tmm0-3: the four gates' C tiles; tmm4: A (x_t or h_{t-1}); tmm5, tmm6: B tiles, alternating.
FL_AMX void configure_tiles() {
  TileConfig config{};
  config.palette_id = 1;
  for (int tile = 0; tile < 7; ++tile) {
    config.rows[tile] = kTileRows;
    config.bytes_per_row[tile] = 64;
  }
  _tile_loadconfig(&config);
}

// C_g += A · B_g for g = 0..3 over `chunks` K chunks: A rows from `a` (row stride `a_stride` bfloat16), B tiles
// from `b` (four per chunk, see pack_vnni).
FL_AMX inline void accumulate(const bf16* a, int64_t a_stride, const bf16* b, int64_t chunks) {
  for (int64_t c = 0; c < chunks; ++c) {
    _tile_loadd(4, a + c * kTileK, a_stride * sizeof(bf16));
    const bf16* tiles = b + c * 4 * kTileElements;
    _tile_loadd(5, tiles, 64);
    _tile_dpbf16ps(0, 4, 5);
    _tile_loadd(6, tiles + kTileElements, 64);
    _tile_dpbf16ps(1, 4, 6);
    _tile_loadd(5, tiles + 2 * kTileElements, 64);
    _tile_dpbf16ps(2, 4, 5);
    _tile_loadd(6, tiles + 3 * kTileElements, 64);
    _tile_dpbf16ps(3, 4, 6);
  }
}

// One step for the unit blocks [begin, end): every row tile.
struct AmxStep {
  int64_t B, Bp, H, C;        // batch, batch padded to row tiles, hidden, input size
  int64_t input_chunks, hidden_chunks;
  const bf16* x;              // [Bp rows of step t, stride x_stride]: x_t, padded as the tiles need
  int64_t x_stride;
  const bf16* packed_ih;      // B tiles of W_ih
  const bf16* packed_hh;      // B tiles of W_hh
  const bf16* bias;           // [4H]
  const bf16* h_prev;         // [Bp, Hp] h_{t-1}, zero past B rows and H columns
  bf16* h_next;               // [Bp, Hp] h_t, same layout
  int64_t h_stride;           // Hp
  float* cell;                // [B, H] in: c_{t-1}, out: c_t
  float* cell_prev_saved;     // [B, H] or nullptr
  bf16* output;               // [B, H] h_t rows of step t
  bf16* gates;                // [B, 4H] activations, or nullptr
};

FL_AMX void amx_step(const AmxStep& s, int64_t begin, int64_t end) {
  configure_tiles();
  alignas(64) float tiles[4][kTileRows][kUnits];
  for (int64_t u = begin; u < end; ++u) {
    const int64_t j0 = u * kUnits, units = std::min(kUnits, s.H - j0);
    const bf16* b_ih = s.packed_ih + u * s.input_chunks * 4 * kTileElements;
    const bf16* b_hh = s.packed_hh + u * s.hidden_chunks * 4 * kTileElements;
    for (int64_t r0 = 0; r0 < s.Bp; r0 += kTileRows) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      if (s.input_chunks) accumulate(s.x + r0 * s.x_stride, s.x_stride, b_ih, s.input_chunks);
      accumulate(s.h_prev + r0 * s.h_stride, s.h_stride, b_hh, s.hidden_chunks);
      _tile_stored(0, tiles[0], 64);
      _tile_stored(1, tiles[1], 64);
      _tile_stored(2, tiles[2], 64);
      _tile_stored(3, tiles[3], 64);
      for (int64_t r = 0; r < kTileRows && r0 + r < s.B; ++r) {
        const int64_t row = r0 + r;
        amx_cell_row(s.H, units, tiles[0][r], tiles[1][r], tiles[2][r], tiles[3][r], s.bias + j0,
                     s.cell + row * s.H + j0, s.cell_prev_saved ? s.cell_prev_saved + row * s.H + j0 : nullptr,
                     s.output + row * s.H + j0, s.h_next + row * s.h_stride + j0,
                     s.gates ? s.gates + row * 4 * s.H + j0 : nullptr);
      }
    }
  }
  _tile_release();
}

#endif

}  // namespace

void amx_recurrence_forward(const LstmRecurrenceForwardParams& p) {
  TORCH_CHECK(best_isa() == Isa::kAmx, "fused_lstm: the AMX tiles need a CPU with AMX-BF16");
  TORCH_CHECK(p.project_input, "fused_lstm: the AMX tiles project the input themselves");
#if FL_HAVE_X86_TILES
  const int64_t T = p.steps, B = p.batch, H = p.hidden, C = p.input_size;
  const int64_t Bp = round_up(B, kTileRows), Cp = round_up(C, kTileK), Hp = round_up(H, kTileK);
  const auto* input = static_cast<const bf16*>(p.input);
  const std::vector<bf16> packed_ih = pack_vnni(static_cast<const bf16*>(p.weight_ih), H, C);
  const std::vector<bf16> packed_hh = pack_vnni(static_cast<const bf16*>(p.weight_hh), H, H);
  // x as the A tiles read it: straight from the input when its rows and columns fill whole tiles, else a padded
  // copy [T, Bp, Cp].
  const bool input_fits = B % kTileRows == 0 && C % kTileK == 0;
  std::vector<bf16> x_padded(input_fits ? 0 : static_cast<size_t>(T * Bp * Cp), bf16(0.0f));
  if (!input_fits) {
    for (int64_t row = 0; row < T * B; ++row) {
      std::memcpy(x_padded.data() + ((row / B) * Bp + row % B) * Cp, input + row * C, C * sizeof(bf16));
    }
  }
  // h_{t-1} and h_t, alternating by step, zero past B and H.
  std::vector<bf16> h_buffers(static_cast<size_t>(2 * Bp * Hp), bf16(0.0f));
  const auto* h0 = static_cast<const bf16*>(p.h0);
  for (int64_t row = 0; row < B; ++row) std::memcpy(h_buffers.data() + row * Hp, h0 + row * H, H * sizeof(bf16));

  AmxStep first{};
  first.B = B;
  first.Bp = Bp;
  first.H = H;
  first.C = C;
  first.input_chunks = Cp / kTileK;
  first.hidden_chunks = Hp / kTileK;
  first.x_stride = input_fits ? C : Cp;
  first.packed_ih = packed_ih.data();
  first.packed_hh = packed_hh.data();
  first.bias = static_cast<const bf16*>(p.bias);
  first.h_stride = Hp;
  first.cell = static_cast<float*>(p.cell);
  auto* output = static_cast<bf16*>(p.output);
  const int64_t blocks = at::divup(H, kUnits);
  parallel_steps(T, blocks, [&](int64_t i, int64_t begin, int64_t end) {
    const int64_t t = p.reverse ? T - 1 - i : i;
    AmxStep step = first;
    step.x = input_fits ? input + t * B * C : x_padded.data() + t * Bp * Cp;
    step.h_prev = h_buffers.data() + (i % 2) * Bp * Hp;
    step.h_next = h_buffers.data() + ((i + 1) % 2) * Bp * Hp;
    step.cell_prev_saved = p.save_for_backward ? static_cast<float*>(p.cell_prev_saved) + t * B * H : nullptr;
    step.output = output + t * B * H;
    step.gates = p.save_for_backward ? static_cast<bf16*>(p.gates) + t * B * 4 * H : nullptr;
    amx_step(step, begin, end);
  });
#endif
}

}  // namespace cpu
}  // namespace fused_lstm
