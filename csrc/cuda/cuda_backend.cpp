#include "cuda_backend.h"

#include "lstm_persistent.h"
#include "pointwise_cuda.h"

namespace fused_lstm {
namespace cuda {

// With the option cuda_persistent on, lstm_layer_forward runs the cases the persistent kernel covers as one
// launch per layer and direction (lstm_persistent.h); everything else, and the backward, per step.
const LstmBackend& lstm_backend() {
  static const LstmBackend backend = [] {
    LstmBackend b;
    b.forward = &forward_pointwise;
    b.backward = &backward_pointwise;
    b.recurrence_forward_kernel = &persistent_forward_kernel;
    b.recurrence_forward = &persistent_forward;
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

}  // namespace cuda
}  // namespace fused_lstm
