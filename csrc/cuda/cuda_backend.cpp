#include "cuda_backend.h"

#include "../checks.h"
#include "lstm_persistent.h"
#include "lstm_pointwise_cuda.h"

namespace fused_lstm {
namespace cuda {

// With FUSED_LSTM_PERSISTENT=1, lstm_layer_forward runs the cases the persistent kernel covers as one
// launch per layer and direction (lstm_persistent.h); everything else, and the backward, per step.
const LstmBackend& lstm_backend() {
  static const LstmBackend backend = [] {
    LstmBackend b;
    b.forward = &forward_pointwise;
    b.backward = &backward_pointwise;
    b.sequence_forward_supported = &persistent_forward_supported;
    b.sequence_forward = &persistent_forward;
    return b;
  }();
  return backend;
}

const GruBackend& gru_backend() {
  static const GruBackend backend = [] {
    GruBackend b;
    b.forward = &gru_forward_pointwise;
    b.backward = &gru_backward_pointwise;
    return b;
  }();
  return backend;
}

bool persistent_forward_supported_for(const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_hh,
                                      const at::Tensor& batch_sizes, bool has_projection) {
  const char* op = "fused_lstm.persistent_forward_supported";
  check_dim(op, h0, "h0", 2);
  check_dim(op, weight_hh, "weight_hh", 2);
  check_dim(op, batch_sizes, "batch_sizes", 1);
  check_dtype(op, batch_sizes, "batch_sizes", at::kLong);
  const int64_t batch = h0.size(0);
  const auto sizes = batch_sizes.contiguous();
  const int64_t* size_data = sizes.data_ptr<int64_t>();
  bool uniform_batch = true;
  for (int64_t t = 0; t < sizes.numel(); ++t) uniform_batch = uniform_batch && size_data[t] == batch;
  const LstmSequenceShape shape{sizes.numel(), batch, weight_hh.size(0) / 4, uniform_batch, has_projection};
  return persistent_forward_supported(shape, input.scalar_type());
}

}  // namespace cuda
}  // namespace fused_lstm
