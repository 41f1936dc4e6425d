// The dtype dispatch of the CUDA pointwise passes; the typed launchers live in pointwise_<dtype>.cu.
#include "pointwise_cuda.h"

#include "../dtype_dispatch.h"

namespace fused_lstm {
namespace cuda {
namespace {

constexpr const char* kKernels = "the CUDA kernels";

}  // namespace

void forward_pointwise(const LstmForwardPointwiseParams& params, at::ScalarType dtype) {
  dispatch_dtype(dtype, kKernels, [&](auto element) { launch_forward_pointwise<decltype(element)>(params); });
}

void backward_pointwise(const LstmBackwardPointwiseParams& params, at::ScalarType dtype) {
  dispatch_dtype(dtype, kKernels, [&](auto element) { launch_backward_pointwise<decltype(element)>(params); });
}

void gru_forward_pointwise(const GruForwardPointwiseParams& params, at::ScalarType dtype) {
  dispatch_dtype(dtype, kKernels, [&](auto element) { launch_gru_forward_pointwise<decltype(element)>(params); });
}

void gru_backward_pointwise(const GruBackwardPointwiseParams& params, at::ScalarType dtype) {
  dispatch_dtype(dtype, kKernels, [&](auto element) { launch_gru_backward_pointwise<decltype(element)>(params); });
}

}  // namespace cuda
}  // namespace fused_lstm
