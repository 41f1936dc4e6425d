// The fused pointwise passes of an LSTM or GRU step on CUDA: dtype dispatchers (the backends' entry
// points) and the typed launchers they call, one instantiation per dtype in pointwise_<dtype>.cu.
// Every launch runs on the current stream of the current device, neither allocates nor synchronizes
// (CUDA-graph safe), and picks 16-byte vector accesses when H and the pointers allow them.
#pragma once

#include <c10/core/ScalarType.h>

#include "../params.h"

namespace fused_lstm {
namespace cuda {

// float32, float64, float16 and bfloat16; anything else raises.
void forward_pointwise(const LstmForwardPointwiseParams& params, at::ScalarType dtype);
void backward_pointwise(const LstmBackwardPointwiseParams& params, at::ScalarType dtype);
void gru_forward_pointwise(const GruForwardPointwiseParams& params, at::ScalarType dtype);
void gru_backward_pointwise(const GruBackwardPointwiseParams& params, at::ScalarType dtype);

// scalar_t: float, double, c10::Half or c10::BFloat16. The LSTM cell state and its gradient are float
// for the half types and scalar_t otherwise (see params.h); GRU tensors are all scalar_t.
template <typename scalar_t>
void launch_forward_pointwise(const LstmForwardPointwiseParams& params);
template <typename scalar_t>
void launch_backward_pointwise(const LstmBackwardPointwiseParams& params);
template <typename scalar_t>
void launch_gru_forward_pointwise(const GruForwardPointwiseParams& params);
template <typename scalar_t>
void launch_gru_backward_pointwise(const GruBackwardPointwiseParams& params);

}  // namespace cuda
}  // namespace fused_lstm
