// The CUDA kernels of the fused_lstm ops (schemas in ../op_schemas.h): the shared sequence drivers with the
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
  // The kernels and GEMMs run on input's device, so every tensor must be there: a tensor elsewhere is a
  // RuntimeError here, never a kernel reading another device's (or host) memory. batch_sizes is read by
  // the host loop and stays on the CPU, as in PackedSequence.
  static void check_devices(const char* op, const at::Tensor& input, const at::Tensor* batch_sizes,
                            std::initializer_list<NamedTensor> tensors) {
    check_defined(op, {{"input", &input}, {"batch_sizes", batch_sizes}});
    check_defined(op, tensors);
    TORCH_CHECK(input.is_cuda(), op, ": input is on ", input.device(),
                " while other arguments are on CUDA; every tensor but batch_sizes must be on input's device");
    TORCH_CHECK(batch_sizes == nullptr || batch_sizes->device().is_cpu(), op,
                ": batch_sizes must be a CPU tensor (as in PackedSequence), got ", batch_sizes->device());
    for (const NamedTensor& argument : tensors) {
      if (argument.tensor == nullptr) continue;
      TORCH_CHECK(argument.tensor->device() == input.device(), op, ": ", argument.name, " must be on device ",
                  input.device(), " (the device of input), got ", argument.tensor->device());
    }
  }
  using Guard = at::cuda::OptionalCUDAGuard;
  static const LstmBackend& lstm_backend() { return cuda::lstm_backend(); }
  static const GruBackend& gru_backend() { return cuda::gru_backend(); }
};

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CUDA, m) { register_layer_ops<CudaDevice>(m); }

}  // namespace fused_lstm
