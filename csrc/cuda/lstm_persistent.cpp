// The dispatcher of the persistent recurrent LSTM forward (see lstm_persistent.h): the option, the scope
// and the dtype dispatch; the typed planner and launcher live in lstm_persistent_<dtype>.cu.
#include "lstm_persistent.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include "../options.h"

namespace fused_lstm {
namespace cuda {

const char* persistent_forward_kernel(const LstmRecurrenceShape& shape, at::ScalarType dtype) {
  if (!options::cuda_persistent()) return nullptr;
  // Out of scope for this kernel: packed sequences of unequal lengths, projections, float64. They run
  // the per-step loop of lstm_layer_forward, which is this extension's own GEMM + fused pointwise
  // kernel per step (not a fallback to PyTorch's LSTM).
  if (!shape.uniform_batch || shape.projected || shape.steps < 1 || shape.batch < 1 || shape.hidden < 1) {
    return nullptr;
  }
  bool fits = false;
  switch (dtype) {
    case at::kFloat: fits = plan_persistent_forward<float>(shape.batch, shape.hidden).fits; break;
    case at::kHalf: fits = plan_persistent_forward<c10::Half>(shape.batch, shape.hidden).fits; break;
    case at::kBFloat16: fits = plan_persistent_forward<c10::BFloat16>(shape.batch, shape.hidden).fits; break;
    default: break;
  }
  return fits ? "persistent kernel" : nullptr;
}

void persistent_forward(const LstmRecurrenceForwardParams& params, at::ScalarType dtype) {
  // This kernel reads x·W_ihᵀ from params.gates; the CUDA backend never asks it to project the input.
  TORCH_CHECK(!params.project_input, "fused_lstm: the persistent LSTM kernel does not project the input itself");
  switch (dtype) {
    case at::kFloat: return launch_persistent_forward<float>(params);
    case at::kHalf: return launch_persistent_forward<c10::Half>(params);
    case at::kBFloat16: return launch_persistent_forward<c10::BFloat16>(params);
    default:
      TORCH_CHECK(false, "fused_lstm: the persistent LSTM kernel supports float32, float16 and bfloat16, got ", dtype);
  }
}

}  // namespace cuda
}  // namespace fused_lstm
