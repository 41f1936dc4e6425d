// The dispatcher of the persistent recurrent LSTM forward (see lstm_persistent.h): the switch, the scope
// and the dtype dispatch; the typed planner and launcher live in lstm_persistent_<dtype>.cu.
#include "lstm_persistent.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <cstdlib>
#include <cstring>

namespace fused_lstm {
namespace cuda {
namespace {

// FUSED_LSTM_PERSISTENT: unset, empty or "0" off (the default), "1" on; anything else raises. Read at
// every call (not cached), so that a test or a benchmark can switch it within one process.
bool persistent_switch_on() {
  const char* value = std::getenv("FUSED_LSTM_PERSISTENT");
  if (value == nullptr || value[0] == '\0' || std::strcmp(value, "0") == 0) return false;
  TORCH_CHECK(std::strcmp(value, "1") == 0, "fused_lstm: FUSED_LSTM_PERSISTENT must be 0 or 1, got '", value, "'");
  return true;
}

}  // namespace

bool persistent_forward_supported(const LstmSequenceShape& shape, at::ScalarType dtype) {
  if (!persistent_switch_on()) return false;
  // Out of scope for this kernel: packed sequences of unequal lengths, projections, float64. They run
  // the per-step loop of lstm_layer_forward, which is this extension's own GEMM + fused pointwise
  // kernel per step (not a fallback to PyTorch's LSTM).
  if (!shape.uniform_batch || shape.projected || shape.steps < 1 || shape.batch < 1 || shape.hidden < 1) {
    return false;
  }
  switch (dtype) {
    case at::kFloat: return plan_persistent_forward<float>(shape.batch, shape.hidden).fits;
    case at::kHalf: return plan_persistent_forward<c10::Half>(shape.batch, shape.hidden).fits;
    case at::kBFloat16: return plan_persistent_forward<c10::BFloat16>(shape.batch, shape.hidden).fits;
    default: return false;
  }
}

void persistent_forward(const LstmSequenceForwardParams& params, at::ScalarType dtype) {
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
