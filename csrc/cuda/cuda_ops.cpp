// The CUDA kernels of the fused_lstm ops (schemas in ../op_descriptions.h): the shared sequence drivers with the
// CUDA backend (cuda_backend.h). The GEMMs run through ATen on the current stream of input's device; so do
// the pointwise kernels.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <initializer_list>

#include "../checks.h"
#include "../layer_ops.h"
#include "cuda_backend.h"

namespace fused_lstm {
namespace {

struct CudaDevice {
  // The kernels and GEMMs run on the current stream of input's device.
  static void check_devices(const char* op, const at::Tensor& input, const at::Tensor* batch_sizes,
                            std::initializer_list<NamedTensor> tensors) {
    fused_lstm::check_devices(op, "the CUDA kernels", at::kCUDA, input, batch_sizes, tensors);
  }
  using Guard = at::cuda::OptionalCUDAGuard;
  static const LstmBackend& lstm_backend() { return cuda::lstm_backend(); }
  static const GruBackend& gru_backend() { return cuda::gru_backend(); }
};

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CUDA, m) { register_layer_ops<CudaDevice>(m); }

}  // namespace fused_lstm
