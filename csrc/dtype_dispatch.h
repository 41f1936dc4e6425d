// The one dtype dispatch of the kernels (CPU and CUDA alike): visit(scalar_t{}) with the element type of
// `dtype`: float, double, c10::BFloat16 or c10::Half. Any other dtype raises, naming `kernels`.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

namespace fused_lstm {

template <typename Visitor>
void dispatch_dtype(at::ScalarType dtype, const char* kernels, const Visitor& visit) {
  switch (dtype) {
    case at::kFloat: return visit(float{});
    case at::kDouble: return visit(double{});
    case at::kBFloat16: return visit(c10::BFloat16{});
    case at::kHalf: return visit(c10::Half{});
    default: TORCH_CHECK(false, "fused_lstm: ", kernels, " support float32, float64, bfloat16 and float16, got ", dtype);
  }
}

}  // namespace fused_lstm
