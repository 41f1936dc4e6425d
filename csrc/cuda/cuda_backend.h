// The CUDA backend of the shared sequence drivers (lstm_layer.h, gru_layer.h): the pointwise kernels and
// the persistent forward. The CUDA registration (lstm_cuda.cpp) and the host emulation of the kernels
// (emulation/emulated_ops.cpp) both run the drivers with it.
#pragma once

#include <ATen/ATen.h>

#include "../gru_layer.h"
#include "../lstm_layer.h"

namespace fused_lstm {
namespace cuda {

const LstmBackend& lstm_backend();
const GruBackend& gru_backend();

// The decision lstm_layer_forward takes for these arguments (input [N, C], h0 [B, P], weight_hh [4H, P],
// batch_sizes [T]) on the current device: whether it runs the persistent kernel.
bool persistent_forward_supported_for(const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_hh,
                                      const at::Tensor& batch_sizes, bool has_projection);

}  // namespace cuda
}  // namespace fused_lstm
