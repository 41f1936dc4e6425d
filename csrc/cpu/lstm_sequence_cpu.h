// The whole recurrence of one float32 LSTM layer on the CPU with the GEMMs and the pointwise math fused
// per step (the CPU counterpart of a persistent kernel; LstmBackend's sequence hooks):
//  - forward: W_ih and W_hh are packed once per call into panels that hold the four gates of 16 hidden
//    units (8 with AVX2) side by side, so that one register tile (up to 6 batch rows × 4 gates × 16 units
//    with AVX-512, 3 × 4 × 8 with AVX2) accumulates x_t·W_ihᵀ + h_{t-1}·W_hhᵀ and the cell update runs on
//    it while it is in registers/L1: no input-projection GEMM over all rows first and, at inference, no
//    gate matrix at all (below 4 batch rows x·W_ihᵀ is one GEMM over all rows first, and the tiles start
//    from it);
//  - backward: per step, dL/dh_t = dL/d(gates_{t+1})·W_hh for 64 hidden units per tile (32 with AVX2), and
//    the backward of the cell update on that tile; the weight and input gradients are large GEMMs over
//    blocks of steps, taken by the caller (csrc/lstm_layer.cpp, backward_in_step_blocks) between calls.
// Each step is one parallel pass over the panels, by one team of threads kept for the whole recurrence
// (parallel_steps in parallel.h).
//
// Why: the per-step path calls a library GEMM with M = batch rows every step, which reaches 75–150
// GFLOP/s on the 2-core development machine (whole layers on these tiles: 160–210; FMA peak ~230), plus
// separate pointwise passes; oneDNN's fused RNN (what nn.LSTM runs on the CPU) is built the same way.
#pragma once

#include <ATen/ATen.h>

#include "../lstm_params.h"

namespace fused_lstm {
namespace cpu {

// Padded input (uniform batch), no projection, a CPU with AVX-512 or AVX2+FMA, and not turned off:
// FUSED_LSTM_CPU_FUSED_STEP unset/"1" uses the best instruction set, "0" turns the fused step off,
// "avx2"/"avx512" force one (raising if the CPU lacks it); read once per process, anything else raises.
// Forward: float32, and bfloat16 on CPUs with AMX (lstm_sequence_amx.h) unless forced down to AVX2.
// Backward: float32.
bool sequence_forward_supported(const LstmSequenceShape& shape, at::ScalarType dtype);
bool sequence_backward_supported(const LstmSequenceShape& shape, at::ScalarType dtype);
// Whether the forward computes x·W_ihᵀ in its steps (enough batch rows; always in bfloat16) or reads one
// GEMM's result.
bool sequence_forward_projects_input(const LstmSequenceShape& shape, at::ScalarType dtype);
void sequence_forward(const LstmSequenceForwardParams& params, at::ScalarType dtype);
// W_hh [4H, H] float32 as column panels of 64 gate columns (32 with AVX2), zero beyond column H.
at::Tensor sequence_backward_prepare_weight(const at::Tensor& weight_hh);
void sequence_backward(const LstmSequenceBackwardParams& params, at::ScalarType dtype);

}  // namespace cpu
}  // namespace fused_lstm
