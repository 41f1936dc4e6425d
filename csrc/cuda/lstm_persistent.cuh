// The persistent recurrent LSTM forward kernel, templated on the element type. Included only by the
// per-dtype lstm_persistent_<dtype>.cu files, which instantiate the planner and the launcher.
// Letters: T steps, B batch, H hidden size, Hc hidden units of one CTA, Hp = H rounded up to V,
// V elements per 16-byte vector, R batch rows per work item, BT rows of h_{t-1} staged at once.
//
// Work split (one launch for the whole sequence of one layer and direction):
//   - CTA k owns the hidden units [j0, j0 + Hc), j0 = k·Hc, and so the 4·Hc gate rows {g·H + j} of
//     W_hh: all four gates of its units, so the cell update needs nothing from other CTAs. Its W_hh
//     slice [4·Hc, H] is copied into shared memory once (rows padded to Hp with zeros) and stays there.
//     Hc = ceil(H / SMs), so there are at most as many CTAs as SMs, one per SM.
//   - Step t: the CTA copies into shared memory, BT batch rows at a time, h_{t-1} [BT, H] (h0, or the
//     output rows of the previous step, written by every CTA: loaded through L2 with ld.global.cg, never
//     from a stale L1 line), the x·W_ihᵀ columns of its gate rows [BT, 4·Hc] (the gates buffer, one
//     GEMM before the launch) and its c_{t-1} [BT, Hc]: all loads of a tile in flight at once. A work
//     item is (R batch rows, one unit j); the 8 warps take items in turn. The 32 lanes of a warp split
//     the H columns (V consecutive columns per lane, 16-byte shared loads), each lane accumulates its
//     partial dot products for the 4 gates × R rows in float (FFMA), and a butterfly of warp shuffles
//     gives every lane the full sums. Lane r < R then does the cell of row r: x·W_ihᵀ + the recurrent
//     sum + bias, math::cell_forward (the same function as the per-step pass), and writes the
//     activations into the gates row and c_{t-1} into cell_prev_saved (when saving), c_t into the cell
//     state (global [B, H]: each CTA reads and writes only its own columns) and h_t into the output
//     rows of step t.
//   - A grid barrier (cooperative_groups grid.sync, a cooperative launch with every CTA co-resident)
//     ends each step: step t+1 reads the rows step t wrote. Step t reads only the rows of step t−1
//     (or h0) and writes only the rows of step t, so no step reads rows that are being written.
//
// Shared memory per CTA: the W_hh slice 4·Hc·Hp·sizeof(scalar_t) (W_hh and h kept in scalar_t and
// converted to float when used) and the bias 4·Hc floats, plus per staged batch row h [Hp] scalar_t and
// x·W_ihᵀ [4, Hc] and c [Hc] floats (so each cell reads only shared memory). With 132 SMs and 227 KB
// (232448 bytes) per CTA (H100/H200), every H up to these fits (above them the per-step path runs):
//   float32:          H <= 1312 with B >= 4 (Hc = 10: 210080 + 4·5448 = 231872 bytes), H <= 1320 with B < 4;
//   float16/bfloat16: H <= 1848 with B >= 4 (Hc = 14: 207200 + 4·3976 = 223104 bytes), H <= 1896 with B < 4.
//
// Numerics: the per-step path rounds x·W_ihᵀ + h·W_hhᵀ to scalar_t (cuBLAS's output) before adding the
// bias; this kernel keeps that sum in float, so fp16/bf16 results differ from it by rounding only.
#pragma once

#include <ATen/OpMathType.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../lstm_math.h"
#include "../params.h"
#include "lstm_persistent.h"
#include "device_runtime.cuh"
#include "pointwise_cuda_common.cuh"

namespace fused_lstm {
namespace cuda {
namespace persistent_detail {

constexpr int kThreads = 256;  // 8 warps per CTA, one CTA per SM
constexpr int kWarpSize = 32;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kGates = 4;
constexpr unsigned kFullMask = 0xffffffffu;

using detail::ceil_div;
using detail::vector_width;  // V: elements of one 16-byte vector

// One element through L2 only (ld.global.cg): rows another CTA wrote in the previous step are never
// served from this SM's (non-coherent) L1.
template <typename scalar_t>
__device__ __forceinline__ scalar_t load_through_l2(const scalar_t* source) {
  static_assert(sizeof(scalar_t) == 4 || sizeof(scalar_t) == 2, "float, half or bfloat16");
  scalar_t value;
  if constexpr (sizeof(scalar_t) == 4) {
    const unsigned int bits = __ldcg(reinterpret_cast<const unsigned int*>(source));
    memcpy(&value, &bits, sizeof(bits));
  } else {
    const unsigned short bits = __ldcg(reinterpret_cast<const unsigned short*>(source));
    memcpy(&value, &bits, sizeof(bits));
  }
  return value;
}

// The whole CTA copies `rows` rows of `hidden` elements (`source_stride` elements apart in global
// memory) into shared rows `padded_hidden` elements apart; the padding columns are not written.
// kThroughL2: ld.global.cg (rows written by other CTAs during this launch), else the read-only path.
template <typename scalar_t, bool kThroughL2>
__device__ __forceinline__ void stage_rows(scalar_t* __restrict__ shared, const scalar_t* __restrict__ source,
                                           int rows, int hidden, int padded_hidden, int64_t source_stride,
                                           bool vectorized) {
  constexpr int kVec = vector_width<scalar_t>();
  if (vectorized) {  // hidden % V == 0 and 16-byte aligned rows
    const int vectors_per_row = hidden / kVec;
    const int vectors = rows * vectors_per_row;
    for (int index = threadIdx.x; index < vectors; index += kThreads) {
      const int row = index / vectors_per_row;
      const int column = (index - row * vectors_per_row) * kVec;
      const uint4* from = reinterpret_cast<const uint4*>(source + row * source_stride + column);
      *reinterpret_cast<uint4*>(shared + row * padded_hidden + column) = kThroughL2 ? __ldcg(from) : __ldg(from);
    }
  } else {
    const int elements = rows * hidden;
    for (int index = threadIdx.x; index < elements; index += kThreads) {
      const int row = index / hidden;
      const int column = index - row * hidden;
      const scalar_t* from = source + row * source_stride + column;
      shared[row * padded_hidden + column] = kThroughL2 ? load_through_l2(from) : *from;
    }
  }
}

template <typename scalar_t, int kRows>
__global__ void __launch_bounds__(kThreads, 1) lstm_persistent_forward_kernel(
    int64_t steps,                           // T
    int64_t batch,                           // B
    int hidden,                              // H
    int units_per_block,                     // Hc
    int batch_tile,                          // BT, a multiple of R
    bool reverse,                            // steps visited from T-1 down to 0
    bool vectorized,                         // H % V == 0 and weight_hh, h0, output 16-byte aligned
    const scalar_t* __restrict__ weight_hh,  // [4H, H]
    const scalar_t* __restrict__ bias,       // [4H] b_ih + b_hh
    const scalar_t* __restrict__ h0,         // [B, H]
    scalar_t* __restrict__ gates,            // [T·B, 4H] in: x·W_ihᵀ; out (when saving): σ(i), σ(f), tanh(g), σ(o)
    float* __restrict__ cell,                // [B, H] in: c0; out: c of the last visited step
    float* __restrict__ cell_prev_saved,     // [T·B, H] out: c_{t-1}; nullptr when not saving (then gates
                                             //   keeps x·W_ihᵀ: nothing reads it afterwards)
    scalar_t* __restrict__ output) {         // [T·B, H] out: h_t
  namespace cg = cooperative_groups;
  constexpr int kVec = vector_width<scalar_t>();
  FL_DYNAMIC_SHARED_MEMORY(shared_memory);
  const int padded_hidden = (hidden + kVec - 1) / kVec * kVec;  // Hp: rows stay 16-byte aligned
  // [4·Hc, Hp]: row g·Hc + j holds W_hh row g·H + j0 + j.
  scalar_t* weight_shared = reinterpret_cast<scalar_t*>(shared_memory);
  // [BT, Hp]: rows [b0, b0 + BT) of h_{t-1}.
  scalar_t* hidden_shared = weight_shared + kGates * units_per_block * padded_hidden;
  // [BT, 4, Hc]: x·W_ihᵀ of this CTA's gate columns for the tile's rows at step t.
  float* projection_shared = reinterpret_cast<float*>(hidden_shared + batch_tile * padded_hidden);
  // [BT, Hc]: c_{t-1} of this CTA's units for the tile's rows.
  float* cell_shared = projection_shared + batch_tile * kGates * units_per_block;
  // [4, Hc]: this CTA's bias columns.
  float* bias_shared = cell_shared + batch_tile * units_per_block;

  const int first_unit = blockIdx.x * units_per_block;          // j0
  const int units = min(units_per_block, hidden - first_unit);  // >= 1: there are ceil(H / Hc) CTAs
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t gate_stride = int64_t(kGates) * hidden;
  const bool save = cell_prev_saved != nullptr;

  // Zero everything once: the padding columns [H, Hp) then add 0·0 to every dot product.
  const int shared_words = ((kGates * units_per_block + batch_tile) * padded_hidden * static_cast<int>(sizeof(scalar_t)) +
                            (batch_tile * (kGates + 1) + kGates) * units_per_block * static_cast<int>(sizeof(float))) / 4;
  for (int index = threadIdx.x; index < shared_words; index += kThreads) {
    reinterpret_cast<uint32_t*>(shared_memory)[index] = 0u;
  }
  __syncthreads();
  for (int gate = 0; gate < kGates; ++gate) {
    stage_rows<scalar_t, false>(weight_shared + gate * units_per_block * padded_hidden,
                                weight_hh + (int64_t(gate) * hidden + first_unit) * hidden, units, hidden,
                                padded_hidden, hidden, vectorized);
  }
  for (int index = threadIdx.x; index < kGates * units; index += kThreads) {
    const int gate = index / units, unit = index - gate * units;
    bias_shared[gate * units_per_block + unit] = static_cast<float>(bias[gate * hidden + first_unit + unit]);
  }
  // The barrier before the first tile's dot products also covers the weights and the bias.

  cg::grid_group grid = cg::this_grid();
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t t = reverse ? steps - 1 - step : step;
    // h_{t-1}: h0 first, then the output rows of the previously visited step (never those of step t).
    const scalar_t* hidden_prev = step == 0 ? h0 : output + (reverse ? t + 1 : t - 1) * batch * hidden;
    for (int64_t tile_start = 0; tile_start < batch; tile_start += batch_tile) {
      const int tile_rows = static_cast<int>(min(int64_t(batch_tile), batch - tile_start));
      const int64_t first_row = t * batch + tile_start;  // the tile's first row of gates and output
      __syncthreads();  // every warp is done with the previous tile's rows
      stage_rows<scalar_t, true>(hidden_shared, hidden_prev + tile_start * hidden, tile_rows, hidden, padded_hidden,
                                 hidden, vectorized);
      // The cells' other inputs, all loads in flight at once (one latency per tile, not one per item).
      // gates rows of step t come from the GEMM before the launch; the cell state from this CTA.
      for (int index = threadIdx.x; index < tile_rows * kGates * units; index += kThreads) {
        const int row = index / (kGates * units);
        const int rest = index - row * kGates * units;
        const int gate = rest / units, unit = rest - gate * units;
        projection_shared[(row * kGates + gate) * units_per_block + unit] =
            static_cast<float>(gates[(first_row + row) * gate_stride + gate * hidden + first_unit + unit]);
      }
      for (int index = threadIdx.x; index < tile_rows * units; index += kThreads) {
        const int row = index / units, unit = index - row * units;
        cell_shared[row * units_per_block + unit] = cell[(tile_start + row) * hidden + first_unit + unit];
      }
      __syncthreads();

      const int groups = (tile_rows + kRows - 1) / kRows;
      const int items = groups * units;
      for (int item = warp; item < items; item += kWarps) {
        const int group = item / units;
        const int unit = item - group * units;
        const int column = first_unit + unit;  // the hidden unit j0 + j
        const int row_in_tile = group * kRows + lane;
        const bool updates_cell = lane < kRows && row_in_tile < tile_rows;  // lane r does row r of the group

        // Partial dot products of this lane's columns: sum[g][r] = Σ_k h[row r][k]·W_hh[g·H + j][k].
        const scalar_t* weight_row = weight_shared + unit * padded_hidden;  // gate g at + g·Hc·Hp
        const scalar_t* hidden_row[kRows];
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          // Rows past the tile repeat its last row; their sums are never used.
          hidden_row[r] = hidden_shared + min(group * kRows + r, tile_rows - 1) * padded_hidden;
        }
        float sum[kGates][kRows];
#pragma unroll
        for (int gate = 0; gate < kGates; ++gate) {
#pragma unroll
          for (int r = 0; r < kRows; ++r) sum[gate][r] = 0.0f;
        }
        for (int k = lane * kVec; k < padded_hidden; k += kWarpSize * kVec) {
          detail::Pack<scalar_t, kVec> weight_values[kGates], hidden_values[kRows];
#pragma unroll
          for (int gate = 0; gate < kGates; ++gate) {
            weight_values[gate] = detail::load_pack<kVec>(weight_row + gate * units_per_block * padded_hidden + k);
          }
#pragma unroll
          for (int r = 0; r < kRows; ++r) hidden_values[r] = detail::load_pack<kVec>(hidden_row[r] + k);
#pragma unroll
          for (int e = 0; e < kVec; ++e) {
#pragma unroll
            for (int gate = 0; gate < kGates; ++gate) {
              const float w = static_cast<float>(weight_values[gate].value[e]);
#pragma unroll
              for (int r = 0; r < kRows; ++r) {
                sum[gate][r] = fmaf(static_cast<float>(hidden_values[r].value[e]), w, sum[gate][r]);
              }
            }
          }
        }
        // Butterfly: every lane ends with the sums over all H columns.
#pragma unroll
        for (int gate = 0; gate < kGates; ++gate) {
#pragma unroll
          for (int r = 0; r < kRows; ++r) {
#pragma unroll
            for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
              sum[gate][r] += __shfl_xor_sync(kFullMask, sum[gate][r], offset);
            }
          }
        }

        if (updates_cell) {
          const float* projection = projection_shared + row_in_tile * kGates * units_per_block + unit;
          const float cell_prev = cell_shared[row_in_tile * units_per_block + unit];
          float pre[kGates];
#pragma unroll
          for (int gate = 0; gate < kGates; ++gate) {
            float recurrent = sum[gate][0];
#pragma unroll
            for (int r = 1; r < kRows; ++r) recurrent = lane == r ? sum[gate][r] : recurrent;
            // As on the per-step path: (x·W_ihᵀ + h·W_hhᵀ) + bias.
            pre[gate] = (projection[gate * units_per_block] + recurrent) + bias_shared[gate * units_per_block + unit];
          }
          float activation[kGates], cell_next, hidden_next;
          math::cell_forward<float>(pre[0], pre[1], pre[2], pre[3], cell_prev, activation[0], activation[1],
                                    activation[2], activation[3], cell_next, hidden_next);
          const int64_t row = first_row + row_in_tile;  // of gates, cell_prev_saved and output
          if (save) {
            scalar_t* gate_out = gates + row * gate_stride + column;
#pragma unroll
            for (int gate = 0; gate < kGates; ++gate) gate_out[gate * hidden] = static_cast<scalar_t>(activation[gate]);
            cell_prev_saved[row * hidden + column] = cell_prev;
          }
          cell[(tile_start + row_in_tile) * hidden + column] = cell_next;
          output[row * hidden + column] = static_cast<scalar_t>(hidden_next);
        }
      }
    }
    // Step t+1 reads the output rows every CTA wrote in step t. grid.sync() fences memory.
    if (step + 1 < steps) grid.sync();
  }
}

template <typename scalar_t>
auto kernel_for(int rows_per_item) {
  return rows_per_item == 1 ? &lstm_persistent_forward_kernel<scalar_t, 1> : &lstm_persistent_forward_kernel<scalar_t, 4>;
}

}  // namespace persistent_detail

template <typename scalar_t>
PersistentPlan plan_persistent_forward(int64_t batch, int64_t hidden) {
  using namespace persistent_detail;
  PersistentPlan plan;
  const DeviceLimits device = current_device_limits();
  if (!device.cooperative_launch || batch < 1 || hidden < 1) return plan;
  const int64_t multiprocessors = device.multiprocessors;
  const int64_t padded_hidden = ceil_div(hidden, vector_width<scalar_t>()) * vector_width<scalar_t>();
  const int64_t row_bytes = padded_hidden * static_cast<int64_t>(sizeof(scalar_t));
  const int64_t units = ceil_div(hidden, multiprocessors);  // Hc: one CTA per SM at most
  const int rows_per_item = batch >= 4 ? 4 : 1;
  // W_hh slice [4·Hc, Hp] and bias [4, Hc] once; per staged batch row: h [Hp], x·W_ihᵀ [4, Hc], c [Hc].
  const int64_t fixed_bytes = kGates * units * row_bytes + kGates * units * static_cast<int64_t>(sizeof(float));
  const int64_t tile_row_bytes = row_bytes + (kGates + 1) * units * static_cast<int64_t>(sizeof(float));
  const int64_t budget = static_cast<int64_t>(device.shared_memory_per_block_optin) - fixed_bytes;
  if (budget < rows_per_item * tile_row_bytes) return plan;  // not even one row group fits beside W_hh
  const int64_t largest_tile = budget / tile_row_bytes / rows_per_item * rows_per_item;
  const int64_t tile = std::min(largest_tile, ceil_div(batch, rows_per_item) * rows_per_item);
  plan.units_per_block = static_cast<int>(units);
  plan.blocks = static_cast<int>(ceil_div(hidden, units));
  plan.rows_per_item = rows_per_item;
  plan.batch_tile = static_cast<int>(tile);
  plan.shared_bytes = static_cast<std::size_t>(fixed_bytes + tile * tile_row_bytes);

  // Above 48 KB of dynamic shared memory a kernel must opt in; the occupancy query then counts it.
  const auto kernel = kernel_for<scalar_t>(rows_per_item);
  allow_dynamic_shared_memory(kernel, plan.shared_bytes);
  const int active_per_multiprocessor = max_active_blocks_per_multiprocessor(kernel, kThreads, plan.shared_bytes);
  // A cooperative launch needs every CTA resident at once (grid.sync would otherwise deadlock; the
  // launch itself refuses such a grid).
  plan.fits = active_per_multiprocessor >= 1 && plan.blocks <= active_per_multiprocessor * multiprocessors;
  return plan;
}

template <typename scalar_t>
void launch_persistent_forward(const LstmRecurrenceForwardParams& p) {
  using namespace persistent_detail;
  static_assert(std::is_same_v<at::opmath_type<scalar_t>, float>, "the cell state is float for these dtypes");
  const PersistentPlan plan = plan_persistent_forward<scalar_t>(p.batch, p.hidden);
  TORCH_CHECK(plan.fits, "fused_lstm: internal error: the persistent LSTM kernel was called for batch ", p.batch,
              " and hidden size ", p.hidden, ", which it does not fit");
  const bool vectorized =
      p.hidden % vector_width<scalar_t>() == 0 && detail::vector_aligned({p.weight_hh, p.h0, p.output});
  launch_cooperative_kernel(kernel_for<scalar_t>(plan.rows_per_item), dim3(plan.blocks), dim3(kThreads),
                            plan.shared_bytes, p.steps, p.batch, static_cast<int>(p.hidden), plan.units_per_block,
                            plan.batch_tile, p.reverse, vectorized, static_cast<const scalar_t*>(p.weight_hh),
                            static_cast<const scalar_t*>(p.bias), static_cast<const scalar_t*>(p.h0),
                            static_cast<scalar_t*>(p.gates), static_cast<float*>(p.cell),
                            p.save_for_backward ? static_cast<float*>(p.cell_prev_saved) : nullptr,
                            static_cast<scalar_t*>(p.output));
}

}  // namespace cuda
}  // namespace fused_lstm
