// One step of an LSTM or GRU cell over a batch of up to 128 rows in one call on the CPU, the GEMMs included: for
// each hidden unit, the products of [x_b, h_b] with the unit's gate rows of [W_ih, W_hh] run in vector registers
// (all gates at once, straight from the weights as they are: no packing), then the cell's math on the block of
// units just computed. Up to 16 rows as dot products; more (AVX-512) with the batch rows in the vector lanes.
// The backends' cell_forward hooks.
//
// Why: at the batch sizes of a decoder or an RL rollout step (B = 1 .. 16) the two library GEMMs and the
// separate pointwise pass of the per-step path cost mostly their fixed overhead (allocations, dispatch,
// thread hand-offs), several times torch's LSTMCell at small H; up to 128 rows the library GEMMs (which pack
// the weights at every call) and the separate pass still lost to the kernel (B = 64, H = 256, 2-core Xeon:
// 437 µs on the GEMM path, 334 µs).
#pragma once

#include <ATen/ATen.h>

#include "../params.h"

namespace fused_lstm {
namespace cpu {

// float32, options::cpu_isa() at least avx2, and at most 16 batch rows (128 with avx512).
bool cell_forward_supported(int64_t batch, int64_t input_size, int64_t hidden, at::ScalarType dtype);
void lstm_cell_forward(const LstmCellForwardParams& params, at::ScalarType dtype);
void gru_cell_forward(const GruCellForwardParams& params, at::ScalarType dtype);

}  // namespace cpu
}  // namespace fused_lstm
