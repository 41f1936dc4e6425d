#pragma once

#include <ATen/ATen.h>

#include "../params.h"

namespace fused_lstm {
namespace cpu {

// The fused pointwise passes (LSTM and GRU) on the CPU, parallel over batch rows: float32, float64, bfloat16
// and float16 (the last two computed in float32, as on CUDA).
void forward_pointwise(const LstmForwardPointwiseParams& params, at::ScalarType dtype);
void backward_pointwise(const LstmBackwardPointwiseParams& params, at::ScalarType dtype);
void gru_forward_pointwise(const GruForwardPointwiseParams& params, at::ScalarType dtype);
void gru_backward_pointwise(const GruBackwardPointwiseParams& params, at::ScalarType dtype);

}  // namespace cpu
}  // namespace fused_lstm
