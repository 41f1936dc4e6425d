// The dispatcher of the persistent recurrent LSTM forward (see lstm_persistent.h): the option, the scope
// and the dtype dispatch; the typed planner and launcher live in lstm_persistent_<dtype>.cu.
#include "lstm_persistent.h"

#include <type_traits>

#include "../dtype_dispatch.h"
#include "../options.h"

namespace fused_lstm {
namespace cuda {
namespace {

constexpr const char* kKernel = "the persistent LSTM kernel's dispatch";

}  // namespace

RecurrenceKernel persistent_forward_kernel(const LstmRecurrenceShape& shape, at::ScalarType dtype) {
  if (!options::cuda_persistent()) return {};
  // Out of scope for this kernel: packed sequences of unequal lengths, projections, float64. They run
  // the per-step loop of lstm_layer_forward, which is this extension's own GEMM + fused pointwise
  // kernel per step (not a fallback to PyTorch's LSTM).
  if (!shape.uniform_batch || shape.projected || shape.steps < 1 || shape.batch < 1 || shape.hidden < 1) {
    return {};
  }
  bool fits = false;
  dispatch_dtype(dtype, kKernel, [&](auto element) {
    using scalar_t = decltype(element);
    if constexpr (!std::is_same_v<scalar_t, double>) fits = plan_persistent_forward<scalar_t>(shape.batch, shape.hidden).fits;
  });
  return fits ? RecurrenceKernel{"persistent kernel", 0} : RecurrenceKernel{};
}

void persistent_forward(const LstmRecurrenceForwardParams& params, at::ScalarType dtype,
                        const RecurrenceKernel& kernel) {
  TORCH_CHECK(kernel.name != nullptr, "fused_lstm: the persistent LSTM kernel runs only a case it was chosen for");
  // This kernel reads x·W_ihᵀ from params.gates; the CUDA backend never asks it to project the input.
  TORCH_CHECK(!params.project_input, "fused_lstm: the persistent LSTM kernel does not project the input itself");
  dispatch_dtype(dtype, kKernel, [&](auto element) {
    using scalar_t = decltype(element);
    constexpr bool is_double = std::is_same_v<scalar_t, double>;
    TORCH_CHECK(!is_double, "fused_lstm: the persistent LSTM kernel runs float32, float16 and bfloat16, not float64");
    if constexpr (!is_double) launch_persistent_forward<scalar_t>(params);
  });
}

}  // namespace cuda
}  // namespace fused_lstm
