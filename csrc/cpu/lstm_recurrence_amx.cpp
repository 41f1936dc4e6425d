// The whole recurrence (lstm_recurrence_cpu.h) for bfloat16 on CPUs with AMX (Intel Sapphire Rapids and later): the
// whole forward recurrence of a layer, x_t·W_ihᵀ + h_{t-1}·W_hhᵀ accumulated in float32 AMX tiles (TDPBF16PS)
// and the cell update run on them, per step; c_t in float32 throughout. x_t·W_ihᵀ is computed a few steps ahead
// into float32 tiles (amx_project), which each step then loads as its starting accumulators.
//
// Tiles: a C tile holds one gate of 16 hidden units for 16 batch rows (float32); four of them (i, f, g, o) make
// the cell of those units. A tiles are 16 rows × 32 bfloat16 of x_t or h_{t-1}; B tiles 16 pairs of rows of
// W_ihᵀ / W_hhᵀ × 16 units (the VNNI layout TDPBF16PS reads), packed once per call.
// Rows: the batch in row tiles of 16 (padded with zero rows); K: inputs and hidden units in chunks of 32
// (padded with zeros). Each thread takes blocks of 16 hidden units, the same blocks at every step, with one
// team for the whole recurrence (parallel_steps) and h_{t-1} in a bfloat16 buffer both steps share.
//
// What sets the speed (measured on a 2-core Xeon with AMX): the AMX unit runs its instructions in order, and a
// tile load from L2 costs more than two TDPBF16PS (about 40 against 16 cycles), so a kernel is fast by loading few
// tiles per product (two row tiles share each B tile) and by keeping the vector units busy with the cell updates
// while the tiles accumulate.
#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>

#include <cstring>
#include <iterator>
#include <numeric>

#include "../gemm.h"
#include "isa.h"
#include "lstm_recurrence_amx.h"
#include "parallel.h"
#include "transpose_avx512.h"
#include "vector_math_avx512.h"

#if FL_HAVE_X86_TILES
#define FL_AMX __attribute__((target("amx-tile,amx-bf16,avx512bf16,avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#endif

namespace fused_lstm {
namespace cpu {
namespace {

using bf16 = c10::BFloat16;

constexpr int64_t kTileRows = 16;  // batch rows of a tile (M)
constexpr int64_t kTileK = 32;     // bfloat16 of K in one tile row (64 bytes)
constexpr int64_t kUnits = 16;     // hidden units of a C tile (N: 16 floats, 64 bytes)
constexpr int64_t kTileElements = kTileRows * kTileK;  // one packed B tile: 16 pair-rows × 32 bfloat16
constexpr int64_t kProjectedRows = 256;  // rows of x (all steps together) projected in one pass

int64_t round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

#if FL_HAVE_X86_TILES
// B tiles of a weight W [4H, K]: for unit block u, K chunk c and gate g, the tile at ((u·chunks + c)·4 + g)
// holds tile[p][2n + q] = W[g·H + 16u + n][32c + 2p + q] (zero past H and K): the 16 rows' chunks, each 16
// words of two bfloat16, transposed. pack_vnni_block writes every element of the tiles of block u (so the buffer,
// packed_vnni_elements long, may start uninitialized).
FL_AMX void pack_vnni_block(const bf16* weight, int64_t H, int64_t K, int64_t u, bf16* packed) {
  const int64_t chunks = at::divup(K, kTileK);
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t k0 = c * kTileK, k_count = std::min(kTileK, K - k0);
    const __mmask32 k_mask = static_cast<__mmask32>(k_count == kTileK ? ~0u : (1u << k_count) - 1);
    for (int64_t g = 0; g < 4; ++g) {
      __m512i rows[kUnits];
      for (int64_t n = 0; n < kUnits; ++n) {
        const int64_t unit = u * kUnits + n;
        rows[n] = unit < H ? _mm512_maskz_loadu_epi16(k_mask, weight + (g * H + unit) * K + k0)
                           : _mm512_setzero_si512();
      }
      bf16* tile = packed + ((u * chunks + c) * 4 + g) * kTileElements;
      transpose_16x16_words(rows, reinterpret_cast<uint32_t*>(tile), 16);
    }
  }
}

int64_t packed_vnni_elements(int64_t H, int64_t K) {
  return at::divup(H, kUnits) * at::divup(K, kTileK) * 4 * kTileElements;
}

// Every tile 16 rows of 64 bytes; amx_project and amx_step run with the tiles so configured. accumulate: tmm0-3
// the four gates' C tiles, tmm4 A (x_t or h_{t-1}), tmm5 and tmm6 B tiles, alternating; accumulate_pair: tmm0-3
// C tiles (two row tiles × two gates), tmm4-5 A, tmm6-7 B.
void configure_tiles() { load_tile_config(TileConfig(8)); }

FL_AMX void release_tiles() { _tile_release(); }

// Work the accumulations run between K chunks (see PendingCells): none by default.
struct NoWork {
  void operator()() const {}
};

// C_g += A · B_g for g = 0..3 over `chunks` K chunks: A rows from `a` (row stride `a_stride` bfloat16), B tiles
// from `b` (four per chunk, see pack_vnni_block).
template <typename Between = NoWork>
FL_AMX inline void accumulate(const bf16* a, int64_t a_stride, const bf16* b, int64_t chunks,
                              const Between& between = Between()) {
  for (int64_t c = 0; c < chunks; ++c) {
    between();
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

// bfloat16 <-> float32 for 16 values, `mask` choosing the lanes read or written (round to nearest even, as
// c10::BFloat16).
FL_AMX inline __m512 load_bf16(__mmask16 mask, const bf16* source) {
  const __m512i widened = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, source));
  return _mm512_castsi512_ps(_mm512_slli_epi32(widened, 16));
}

FL_AMX inline void store_bf16(__mmask16 mask, bf16* destination, __m512 value) {
  _mm256_mask_storeu_epi16(destination, mask, (__m256i)_mm512_cvtneps_pbh(value));
}

// What a step reads and writes; the steps of one call differ only in the pointers marked "of the step".
struct AmxStep {
  int64_t B, Bp, H;           // batch, batch padded to row tiles, hidden
  int64_t blocks;             // unit blocks: H / 16 rounded up
  int64_t input_chunks, hidden_chunks;
  int64_t x_stride;           // bfloat16 between rows of x
  const bf16* packed_ih;      // B tiles of W_ih
  const bf16* packed_hh;      // B tiles of W_hh
  const bf16* bias;           // [4H]
  int64_t h_stride;           // Hp
  const bf16* x;              // of the step: [Bp rows, x_stride] x_t, padded as the tiles need
  float* projection;          // of the step: [Bp / 16, blocks, 4 gates, 16 rows, 16 units] x_t·W_ihᵀ tiles
  const bf16* h_prev;         // of the step: [Bp, Hp] h_{t-1}, zero past B rows and H columns
  bf16* h_next;               // of the step: [Bp, Hp] h_t, same layout
  float* cell;                // [B, H] in: c_{t-1}, out: c_t
  float* cell_prev_saved;     // of the step: [B, H] or nullptr
  bf16* output;               // of the step: [B, H] h_t rows of step t
  bf16* gates;                // of the step: [B, 4H] activations, or nullptr
};

FL_AMX inline float* projection_tiles(const AmxStep& s, int64_t row_tile, int64_t block) {
  return s.projection + (row_tile * s.blocks + block) * 4 * kTileRows * kUnits;
}

// C tiles 0-3 += (A rows a0, a1) · (B tiles of gates gate, gate + 1) over `chunks` K chunks: each B tile read serves
// two row tiles, halving the weight traffic of a step (the weights come from L2; the two A row tiles stay in L1).
template <typename Between = NoWork>
FL_AMX inline void accumulate_pair(const bf16* a0, const bf16* a1, int64_t a_stride, const bf16* b, int64_t gate,
                                   int64_t chunks, const Between& between = Between()) {
  for (int64_t c = 0; c < chunks; ++c) {
    between();
    const bf16* tiles = b + (c * 4 + gate) * kTileElements;
    _tile_loadd(4, a0 + c * kTileK, a_stride * sizeof(bf16));
    _tile_loadd(6, tiles, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(7, tiles + kTileElements, 64);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, a1 + c * kTileK, a_stride * sizeof(bf16));
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
}

// x_t·W_ihᵀ of the unit blocks [begin, end) for each given step, into its projection tiles: one pass over a few
// steps reads each block's W_ih tiles once for all their rows, two row tiles (of any steps) at a time.
FL_AMX void amx_project(const AmxStep* steps, int64_t count, int64_t begin, int64_t end) {
  constexpr int64_t kGateTile = kTileRows * kUnits;
  const int64_t row_tiles = steps[0].Bp / kTileRows, input_chunks = steps[0].input_chunks;
  const auto x_rows = [&](int64_t tile) {
    const AmxStep& s = steps[tile / row_tiles];
    return s.x + (tile % row_tiles) * kTileRows * s.x_stride;
  };
  for (int64_t u = begin; u < end; ++u) {
    const bf16* b_ih = steps[0].packed_ih + u * input_chunks * 4 * kTileElements;
    for (int64_t tile = 0; tile < count * row_tiles; tile += 2) {
      // A lone last tile is paired with itself: the same accumulators, stored twice.
      const int64_t other = std::min(tile + 1, count * row_tiles - 1);
      float* projection0 = projection_tiles(steps[tile / row_tiles], tile % row_tiles, u);
      float* projection1 = projection_tiles(steps[other / row_tiles], other % row_tiles, u);
      for (int64_t gate = 0; gate < 4; gate += 2) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        accumulate_pair(x_rows(tile), x_rows(other), steps[0].x_stride, b_ih, gate, input_chunks);
        _tile_stored(0, projection0 + gate * kGateTile, 64);
        _tile_stored(1, projection0 + (gate + 1) * kGateTile, 64);
        _tile_stored(2, projection1 + gate * kGateTile, 64);
        _tile_stored(3, projection1 + (gate + 1) * kGateTile, 64);
      }
    }
  }
}

// The cell updates of one block of one or two row tiles, run a few rows at a time while the tiles of the next block
// accumulate: the AMX unit works through its queue while the vector units run the cells, where run one after the
// other they would wait for each other.
struct PendingCells {
  const float (*tiles)[4][kTileRows][kUnits] = nullptr;  // [row tile of the block][gate]
  int64_t first_row = 0, u = 0;
  __mmask16 mask = 0;
  int64_t row = 0, rows = 0;  // rows done, rows in all

  // The cell updates of `count` rows (those left if fewer).
  FL_AMX void run(const AmxStep& s, int64_t count) {
    const int64_t end = std::min(rows, row + count);
    if (row >= end) return;
    const int64_t j0 = u * kUnits;
    const __m512 bias[4] = {load_bf16(mask, s.bias + j0), load_bf16(mask, s.bias + s.H + j0),
                            load_bf16(mask, s.bias + 2 * s.H + j0), load_bf16(mask, s.bias + 3 * s.H + j0)};
    for (; row + 4 <= end; row += 4) cell_rows<4>(s, bias);
    for (; row < end; ++row) cell_rows<1>(s, bias);
  }

  // Rows [row, row + kRows) side by side: the activations are chains of dependent operations (the exponential's
  // polynomial, the reciprocal's Newton step, tanh(c_t) after c_t), and one row alone leaves the vector units
  // waiting on them.
  template <int kRows>
  FL_AMX __attribute__((always_inline)) inline void cell_rows(const AmxStep& s, const __m512 (&bias)[4]) const {
    const int64_t j0 = u * kUnits;
    __m512 gate[4][kRows], cell_next[kRows], hidden[kRows];
    for (int r = 0; r < kRows; ++r) {
      const float (*pre)[kTileRows][kUnits] = tiles[(row + r) / kTileRows];
      for (int g = 0; g < 4; ++g) gate[g][r] = _mm512_add_ps(_mm512_load_ps(pre[g][(row + r) % kTileRows]), bias[g]);
    }
    for (int r = 0; r < kRows; ++r) gate[0][r] = avx512::sigmoid(gate[0][r]);
    for (int r = 0; r < kRows; ++r) gate[1][r] = avx512::sigmoid(gate[1][r]);
    for (int r = 0; r < kRows; ++r) gate[2][r] = avx512::tanh(gate[2][r]);
    for (int r = 0; r < kRows; ++r) gate[3][r] = avx512::sigmoid(gate[3][r]);
    for (int r = 0; r < kRows; ++r) {
      const int64_t b = first_row + row + r;
      const __m512 cell_prev = _mm512_maskz_loadu_ps(mask, s.cell + b * s.H + j0);
      if (s.cell_prev_saved) _mm512_mask_storeu_ps(s.cell_prev_saved + b * s.H + j0, mask, cell_prev);
      cell_next[r] = _mm512_fmadd_ps(gate[1][r], cell_prev, _mm512_mul_ps(gate[0][r], gate[2][r]));
    }
    for (int r = 0; r < kRows; ++r) hidden[r] = _mm512_mul_ps(gate[3][r], avx512::tanh(cell_next[r]));
    for (int r = 0; r < kRows; ++r) {
      const int64_t b = first_row + row + r;
      _mm512_mask_storeu_ps(s.cell + b * s.H + j0, mask, cell_next[r]);
      store_bf16(mask, s.output + b * s.H + j0, hidden[r]);
      store_bf16(mask, s.h_next + b * s.h_stride + j0, hidden[r]);
      if (s.gates) {
        for (int g = 0; g < 4; ++g) store_bf16(mask, s.gates + b * 4 * s.H + g * s.H + j0, gate[g][r]);
      }
    }
  }
};

// One step for the unit blocks [begin, end): the row tiles two at a time (one when one is left; each B tile then
// serves both), each block's accumulators starting from its projection tiles, the previous block's cells run
// between its chunks.
FL_AMX void amx_step(const AmxStep& s, int64_t begin, int64_t end) {
  constexpr int64_t kGateTile = kTileRows * kUnits;
  // Two blocks' tiles: the one accumulating and the one whose cells are pending.
  alignas(64) float tiles[2][2][4][kTileRows][kUnits];
  const int64_t row_tiles = s.Bp / kTileRows;
  PendingCells pending;
  int64_t job = 0;
  for (int64_t rt = 0; rt < row_tiles; rt += 2) {
    const bool pair = rt + 1 < row_tiles;
    const bf16* a0 = s.h_prev + rt * kTileRows * s.h_stride;
    const bf16* a1 = a0 + kTileRows * s.h_stride;
    for (int64_t u = begin; u < end; ++u, ++job) {
      auto& block = tiles[job % 2];
      const bf16* b_hh = s.packed_hh + u * s.hidden_chunks * 4 * kTileElements;
      const float* projection0 = projection_tiles(s, rt, u);
      // The previous block's cells, spread evenly over this block's chunks in groups of four rows (one call of
      // PendingCells::run per row costs more in set-up than the row).
      const int64_t chunks = (pair ? 2 : 1) * s.hidden_chunks;
      int64_t chunk = 0;
      const auto between = [&]() {
        const int64_t due = std::min(pending.rows, round_up(at::divup(++chunk * pending.rows, chunks), 4));
        pending.run(s, due - pending.row);
      };
      if (pair) {
        const float* projection1 = projection_tiles(s, rt + 1, u);
        for (int64_t gate = 0; gate < 4; gate += 2) {
          _tile_loadd(0, projection0 + gate * kGateTile, 64);
          _tile_loadd(1, projection0 + (gate + 1) * kGateTile, 64);
          _tile_loadd(2, projection1 + gate * kGateTile, 64);
          _tile_loadd(3, projection1 + (gate + 1) * kGateTile, 64);
          accumulate_pair(a0, a1, s.h_stride, b_hh, gate, s.hidden_chunks, between);
          _tile_stored(0, block[0][gate], 64);
          _tile_stored(1, block[0][gate + 1], 64);
          _tile_stored(2, block[1][gate], 64);
          _tile_stored(3, block[1][gate + 1], 64);
        }
      } else {
        _tile_loadd(0, projection0, 64);
        _tile_loadd(1, projection0 + kGateTile, 64);
        _tile_loadd(2, projection0 + 2 * kGateTile, 64);
        _tile_loadd(3, projection0 + 3 * kGateTile, 64);
        accumulate(a0, s.h_stride, b_hh, s.hidden_chunks, between);
        _tile_stored(0, block[0][0], 64);
        _tile_stored(1, block[0][1], 64);
        _tile_stored(2, block[0][2], 64);
        _tile_stored(3, block[0][3], 64);
      }
      pending.run(s, pending.rows);  // what the chunks left
      const int64_t units = std::min(kUnits, s.H - u * kUnits);
      pending.tiles = block;
      pending.first_row = rt * kTileRows;
      pending.u = u;
      pending.mask = static_cast<__mmask16>((1u << units) - 1);
      pending.row = 0;
      pending.rows = std::min((pair ? 2 : 1) * kTileRows, s.B - rt * kTileRows);
    }
  }
  pending.run(s, pending.rows);
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
  const int64_t blocks = at::divup(H, kUnits), row_tiles = Bp / kTileRows;
  // x as the A tiles read it: straight from the input when its rows and columns fill whole tiles, else a padded
  // copy [T, Bp, Cp].
  const bool input_fits = B % kTileRows == 0 && C % kTileK == 0;
  // The input is projected for a few steps at a time, about kProjectedRows rows (the projection tiles of one step
  // are [row_tiles, blocks, 4, 16, 16] floats).
  const int64_t projected_steps = std::min(T, std::max<int64_t>(1, kProjectedRows / Bp));
  const int64_t step_projection = row_tiles * blocks * 4 * kTileRows * kUnits;

  // The scratch, one buffer reused across calls (gemm.h): the packed weights, the projection tiles, h_{t-1} and
  // h_t alternating by step (zero past B and H), the padded input if needed.
  const int64_t ih_elements = packed_vnni_elements(H, C), hh_elements = packed_vnni_elements(H, H);
  const int64_t projection_elements = projected_steps * step_projection, h_elements = 2 * Bp * Hp;
  const int64_t x_elements = input_fits ? 0 : T * Bp * Cp;
  // A leading 0, then the bytes of each part (rounded up to 64, cache lines); offsets[k]: where part k starts.
  const int64_t sizes[] = {0, round_up(ih_elements * 2, 64), round_up(hh_elements * 2, 64),
                           round_up(projection_elements * 4, 64), round_up(h_elements * 2, 64), x_elements * 2};
  int64_t offsets[6];
  std::partial_sum(std::begin(sizes), std::end(sizes), offsets);
  const at::Tensor scratch = reusable_empty(1, offsets[5] + 64, at::TensorOptions(at::kByte));
  char* const base = reinterpret_cast<char*>(round_up(reinterpret_cast<int64_t>(scratch.data_ptr()), 64));
  auto* const packed_ih = reinterpret_cast<bf16*>(base + offsets[0]);
  auto* const packed_hh = reinterpret_cast<bf16*>(base + offsets[1]);
  auto* const projection = reinterpret_cast<float*>(base + offsets[2]);  // fully written before read
  auto* const h_buffers = reinterpret_cast<bf16*>(base + offsets[3]);
  auto* const x_padded = reinterpret_cast<bf16*>(base + offsets[4]);
  if (!input_fits) {
    std::memset(x_padded, 0, x_elements * sizeof(bf16));
    for (int64_t row = 0; row < T * B; ++row) {
      std::memcpy(x_padded + ((row / B) * Bp + row % B) * Cp, input + row * C, C * sizeof(bf16));
    }
  }
  std::memset(h_buffers, 0, h_elements * sizeof(bf16));
  const auto* h0 = static_cast<const bf16*>(p.h0);
  for (int64_t row = 0; row < B; ++row) std::memcpy(h_buffers + row * Hp, h0 + row * H, H * sizeof(bf16));

  AmxStep first{};
  first.B = B;
  first.Bp = Bp;
  first.H = H;
  first.blocks = blocks;
  first.input_chunks = Cp / kTileK;
  first.hidden_chunks = Hp / kTileK;
  first.x_stride = input_fits ? C : Cp;
  first.packed_ih = packed_ih;
  first.packed_hh = packed_hh;
  first.bias = static_cast<const bf16*>(p.bias);
  first.h_stride = Hp;
  first.cell = static_cast<float*>(p.cell);
  auto* output = static_cast<bf16*>(p.output);
  const auto step_at = [&](int64_t i) {
    const int64_t t = p.reverse ? T - 1 - i : i;
    AmxStep step = first;
    step.x = input_fits ? input + t * B * C : x_padded + t * Bp * Cp;
    step.projection = projection + (i % projected_steps) * step_projection;
    step.h_prev = h_buffers + (i % 2) * Bp * Hp;
    step.h_next = h_buffers + ((i + 1) % 2) * Bp * Hp;
    step.cell_prev_saved = p.save_for_backward ? static_cast<float*>(p.cell_prev_saved) + t * B * H : nullptr;
    step.output = output + t * B * H;
    step.gates = p.save_for_backward ? static_cast<bf16*>(p.gates) + t * B * 4 * H : nullptr;
    return step;
  };
  // Each thread packs the weights and projects the input of its own unit blocks, which only it reads: no barrier
  // between those and the steps. It configures its tiles for its first step and releases them after its last (the
  // tile configuration is per thread and lasts across the steps).
  parallel_steps(T, blocks, [&](int64_t i, int64_t begin, int64_t end) {
    if (i == 0) {
      // The thread packs the weights of its own blocks, which only it reads, into its own cache.
      for (int64_t u = begin; u < end; ++u) {
        pack_vnni_block(static_cast<const bf16*>(p.weight_ih), H, C, u, packed_ih);
        pack_vnni_block(static_cast<const bf16*>(p.weight_hh), H, H, u, packed_hh);
      }
      configure_tiles();
    }
    if (i % projected_steps == 0) {
      AmxStep steps[kProjectedRows / kTileRows];
      const int64_t count = std::min(projected_steps, T - i);
      for (int64_t j = 0; j < count; ++j) steps[j] = step_at(i + j);
      amx_project(steps, count, begin, end);
    }
    amx_step(step_at(i), begin, end);
    if (i == T - 1) release_tiles();
  });
#endif
}

}  // namespace cpu
}  // namespace fused_lstm
