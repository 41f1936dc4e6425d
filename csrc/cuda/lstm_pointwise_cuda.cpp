// The dtype dispatch of the CUDA pointwise passes; the typed launchers live in lstm_pointwise_<dtype>.cu.
#include "lstm_pointwise_cuda.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

namespace fused_lstm {
namespace cuda {

void forward_pointwise(const LstmForwardPointwiseParams& params, at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return launch_forward_pointwise<float>(params);
    case at::kDouble: return launch_forward_pointwise<double>(params);
    case at::kHalf: return launch_forward_pointwise<c10::Half>(params);
    case at::kBFloat16: return launch_forward_pointwise<c10::BFloat16>(params);
    default: TORCH_CHECK(false, "fused_lstm: the CUDA kernels support float32, float64, float16 and bfloat16, got ", dtype);
  }
}

void backward_pointwise(const LstmBackwardPointwiseParams& params, at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return launch_backward_pointwise<float>(params);
    case at::kDouble: return launch_backward_pointwise<double>(params);
    case at::kHalf: return launch_backward_pointwise<c10::Half>(params);
    case at::kBFloat16: return launch_backward_pointwise<c10::BFloat16>(params);
    default: TORCH_CHECK(false, "fused_lstm: the CUDA kernels support float32, float64, float16 and bfloat16, got ", dtype);
  }
}

}  // namespace cuda
}  // namespace fused_lstm
