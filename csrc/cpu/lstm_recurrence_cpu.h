// The whole recurrence of one LSTM layer on the CPU with the GEMMs and the pointwise math fused per step
// (the CPU counterpart of a persistent kernel; LstmBackend's recurrence hooks):
//  - forward: W_ih and W_hh are packed once per call into panels that hold the four gates of 16 hidden
//    units (8 with AVX2) side by side, so that one register tile (up to 6 batch rows × 4 gates × 16 units
//    with AVX-512, 3 × 4 × 8 with AVX2) accumulates x_t·W_ihᵀ + h_{t-1}·W_hhᵀ and the cell update runs on
//    it while it is in registers/L1: no input-projection GEMM over all rows first and, at inference, no
//    gate matrix at all (below 4 batch rows x·W_ihᵀ is one GEMM over all rows first, and the tiles start
//    from it);
//  - backward: per step, dL/dh_t = dL/d(gates_{t+1})·W_hh for 64 hidden units per tile (32 with AVX2), and
//    the backward of the cell update on that tile; the weight and input gradients are large GEMMs over
//    blocks of steps, taken by the caller (csrc/lstm_layer.cpp, backward_whole_recurrence) between calls.
// Each step is one parallel pass over the panels, by one team of threads kept for the whole recurrence
// (parallel_steps in parallel.h).
//
// Why: the per-step path calls a library GEMM with M = batch rows every step, which reaches 75–150
// GFLOP/s on the 2-core development machine (whole layers on these tiles: 160–210; FMA peak ~230), plus
// separate pointwise passes; oneDNN's fused RNN (what nn.LSTM runs on the CPU) is built the same way.
#pragma once

#include <ATen/ATen.h>

#include "../params.h"

namespace fused_lstm {
namespace cpu {

// The hooks of LstmBackend (lstm_layer.h). The whole recurrence runs here for padded input (uniform batch)
// without projection: float32 on AVX-512 or AVX2+FMA register tiles, bfloat16 on AMX tiles or AVX512-BF16
// register tiles (vdpbf16ps), as options::cpu_isa() allows; the backward on the same register tiles (bfloat16 on
// vdpbf16ps, also where the forward runs AMX). *_kernel choose the kernel (its variant: the instruction set it
// runs with) or none; the run hooks take the chosen kernel.
RecurrenceKernel recurrence_forward_kernel(const LstmRecurrenceShape& shape, at::ScalarType dtype);
RecurrenceKernel recurrence_backward_kernel(const LstmRecurrenceShape& shape, at::ScalarType dtype);
// Whether the forward computes x·W_ihᵀ in its steps (enough batch rows; always in bfloat16) or reads one
// GEMM's result.
bool recurrence_forward_projects_input(const LstmRecurrenceShape& shape, at::ScalarType dtype);
void recurrence_forward(const LstmRecurrenceForwardParams& params, at::ScalarType dtype, const RecurrenceKernel& kernel);
// W_hh [4H, H] as column panels of 64 gate columns (32 with AVX2; bfloat16 rows in pairs), zero beyond column H.
at::Tensor recurrence_backward_prepare_weight(const at::Tensor& weight_hh, const RecurrenceKernel& kernel);
void recurrence_backward(const LstmRecurrenceBackwardParams& params, at::ScalarType dtype,
                         const RecurrenceKernel& kernel);

}  // namespace cpu
}  // namespace fused_lstm
