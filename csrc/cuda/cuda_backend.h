// The CUDA backend of the shared sequence drivers (lstm_layer.h, gru_layer.h): the pointwise kernels and
// the persistent forward. The CUDA registration (cuda_ops.cpp) and the host emulation of the kernels
// (emulation/emulated_ops.cpp) both run the drivers with it.
#pragma once

#include <ATen/ATen.h>

#include "../gru_layer.h"
#include "../lstm_layer.h"

namespace fused_lstm {
namespace cuda {

const LstmBackend& lstm_backend();
const GruBackend& gru_backend();

}  // namespace cuda
}  // namespace fused_lstm
