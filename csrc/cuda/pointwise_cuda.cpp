// The dtype dispatch of the CUDA pointwise passes; the typed launchers live in pointwise_<dtype>.cu.
#include "pointwise_cuda.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

namespace fused_lstm {
namespace cuda {
namespace {

// Calls visit(scalar_t{}) with the element type of `dtype`.
template <typename Visitor>
void dispatch_dtype(at::ScalarType dtype, const Visitor& visit) {
  switch (dtype) {
    case at::kFloat: return visit(float{});
    case at::kDouble: return visit(double{});
    case at::kHalf: return visit(c10::Half{});
    case at::kBFloat16: return visit(c10::BFloat16{});
    default: TORCH_CHECK(false, "fused_lstm: the CUDA kernels support float32, float64, float16 and bfloat16, got ", dtype);
  }
}

}  // namespace

void forward_pointwise(const LstmForwardPointwiseParams& params, at::ScalarType dtype) {
  dispatch_dtype(dtype, [&](auto element) { launch_forward_pointwise<decltype(element)>(params); });
}

void backward_pointwise(const LstmBackwardPointwiseParams& params, at::ScalarType dtype) {
  dispatch_dtype(dtype, [&](auto element) { launch_backward_pointwise<decltype(element)>(params); });
}

void gru_forward_pointwise(const GruForwardPointwiseParams& params, at::ScalarType dtype) {
  dispatch_dtype(dtype, [&](auto element) { launch_gru_forward_pointwise<decltype(element)>(params); });
}

void gru_backward_pointwise(const GruBackwardPointwiseParams& params, at::ScalarType dtype) {
  dispatch_dtype(dtype, [&](auto element) { launch_gru_backward_pointwise<decltype(element)>(params); });
}

}  // namespace cuda
}  // namespace fused_lstm
