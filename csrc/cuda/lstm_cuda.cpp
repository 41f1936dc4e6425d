// The CUDA implementations of the fused_lstm ops (schemas in ../fused_lstm.cpp): the shared sequence
// loops of lstm_layer.h and gru_layer.h with the CUDA pointwise passes. The GEMMs run through ATen on
// the current stream of input's device; so do the pointwise kernels.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <initializer_list>

#include "../checks.h"
#include "../gru_layer.h"
#include "../lstm_layer.h"
#include "lstm_persistent.h"
#include "lstm_pointwise_cuda.h"

namespace fused_lstm {
namespace {

// With FUSED_LSTM_PERSISTENT=1, lstm_layer_forward runs the cases the persistent kernel covers as one
// launch per layer and direction (cuda/lstm_persistent.h); everything else, and the backward, per step.
const PointwiseBackend kCudaBackend{&cuda::forward_pointwise,
                                    &cuda::backward_pointwise,
                                    &cuda::persistent_forward_supported,
                                    &cuda::persistent_forward,
                                    /*sequence_forward_projects_input=*/nullptr,
                                    /*sequence_backward_supported=*/nullptr,
                                    /*sequence_backward_prepare_weight=*/nullptr,
                                    /*sequence_backward=*/nullptr};
const GruPointwiseBackend kCudaGruBackend{&cuda::gru_forward_pointwise, &cuda::gru_backward_pointwise};

// The kernels and GEMMs run on input's device, so every tensor must be there: a tensor elsewhere is a
// RuntimeError here, never a kernel reading another device's (or host) memory. batch_sizes is read
// by the host loop and stays on the CPU, as in PackedSequence.
void check_devices(const char* op, const at::Tensor& input, const at::Tensor& batch_sizes,
                   std::initializer_list<NamedTensor> tensors) {
  check_defined(op, {{"input", &input}, {"batch_sizes", &batch_sizes}});
  check_defined(op, tensors);
  TORCH_CHECK(input.is_cuda(), op, ": input is on ", input.device(),
              " while other arguments are on CUDA; every tensor but batch_sizes must be on input's device");
  TORCH_CHECK(batch_sizes.device().is_cpu(), op, ": batch_sizes must be a CPU tensor (as in PackedSequence), got ",
              batch_sizes.device());
  for (const NamedTensor& argument : tensors) {
    if (argument.tensor == nullptr) continue;
    TORCH_CHECK(argument.tensor->device() == input.device(), op, ": ", argument.name, " must be on device ",
                input.device(), " (the device of input), got ", argument.tensor->device());
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_forward_cuda(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& weight_ih, const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& weight_hr, bool reverse, bool save_for_backward) {
  check_devices("fused_lstm.lstm_layer_forward", input, batch_sizes,
                {{"h0", &h0},
                 {"c0", &c0},
                 {"weight_ih", &weight_ih},
                 {"weight_hh", &weight_hh},
                 {"bias", optional_address(bias)},
                 {"weight_hr", optional_address(weight_hr)}});
  const at::cuda::OptionalCUDAGuard device_guard(input.device());
  return lstm_layer_forward(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias, weight_hr, reverse,
                            save_for_backward, kCudaBackend);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward_cuda(const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
                         const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
                         const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                         const std::optional<at::Tensor>& weight_hr, const at::Tensor& output,
                         const at::Tensor& gates, const at::Tensor& cell_prev, const at::Tensor& proj_input,
                         bool reverse, bool has_bias, bool compute_grad_input, bool compute_grad_weights) {
  check_devices("fused_lstm.lstm_layer_backward", input, batch_sizes,
                {{"grad_output", &grad_output},
                 {"grad_h_n", &grad_h_n},
                 {"grad_c_n", &grad_c_n},
                 {"h0", &h0},
                 {"weight_ih", &weight_ih},
                 {"weight_hh", &weight_hh},
                 {"weight_hr", optional_address(weight_hr)},
                 {"output", &output},
                 {"gates", &gates},
                 {"cell_prev", &cell_prev},
                 {"proj_input", weight_hr.has_value() ? &proj_input : nullptr}});
  const at::cuda::OptionalCUDAGuard device_guard(input.device());
  return lstm_layer_backward(grad_output, grad_h_n, grad_c_n, input, batch_sizes, h0, weight_ih, weight_hh,
                             weight_hr, output, gates, cell_prev, proj_input, reverse, has_bias, compute_grad_input,
                             compute_grad_weights, kCudaBackend);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_layer_forward_cuda(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
    bool reverse, bool save_for_backward) {
  check_devices("fused_lstm.gru_layer_forward", input, batch_sizes,
                {{"h0", &h0},
                 {"weight_ih", &weight_ih},
                 {"weight_hh", &weight_hh},
                 {"bias_ih", optional_address(bias_ih)},
                 {"bias_hh", optional_address(bias_hh)}});
  const at::cuda::OptionalCUDAGuard device_guard(input.device());
  return gru_layer_forward(input, batch_sizes, h0, weight_ih, weight_hh, bias_ih, bias_hh, reverse,
                           save_for_backward, kCudaGruBackend);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_layer_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& input, const at::Tensor& batch_sizes,
    const at::Tensor& h0, const at::Tensor& weight_ih, const at::Tensor& weight_hh, const at::Tensor& output,
    const at::Tensor& gates, const at::Tensor& candidate_hidden, bool reverse, bool has_bias, bool compute_grad_input,
    bool compute_grad_weights) {
  check_devices("fused_lstm.gru_layer_backward", input, batch_sizes,
                {{"grad_output", &grad_output},
                 {"grad_h_n", &grad_h_n},
                 {"h0", &h0},
                 {"weight_ih", &weight_ih},
                 {"weight_hh", &weight_hh},
                 {"output", &output},
                 {"gates", &gates},
                 {"candidate_hidden", &candidate_hidden}});
  const at::cuda::OptionalCUDAGuard device_guard(input.device());
  return gru_layer_backward(grad_output, grad_h_n, input, batch_sizes, h0, weight_ih, weight_hh, output, gates,
                            candidate_hidden, reverse, has_bias, compute_grad_input, compute_grad_weights,
                            kCudaGruBackend);
}

// The same decision lstm_layer_forward_cuda takes for these arguments, on input's device.
bool persistent_forward_supported_cuda(const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_hh,
                                       const at::Tensor& batch_sizes, bool has_projection) {
  const char* op = "fused_lstm.persistent_forward_supported";
  check_devices(op, input, batch_sizes, {{"h0", &h0}, {"weight_hh", &weight_hh}});
  check_dim(op, h0, "h0", 2);
  check_dim(op, weight_hh, "weight_hh", 2);
  check_dim(op, batch_sizes, "batch_sizes", 1);
  check_dtype(op, batch_sizes, "batch_sizes", at::kLong);
  const at::cuda::OptionalCUDAGuard device_guard(input.device());
  const int64_t batch = h0.size(0);
  const auto sizes = batch_sizes.contiguous();
  const int64_t* size_data = sizes.data_ptr<int64_t>();
  bool uniform_batch = true;
  for (int64_t t = 0; t < sizes.numel(); ++t) uniform_batch = uniform_batch && size_data[t] == batch;
  const LstmSequenceShape shape{sizes.numel(), batch, weight_hh.size(0) / 4, uniform_batch, has_projection};
  return cuda::persistent_forward_supported(shape, input.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CUDA, m) {
  m.impl("lstm_layer_forward", &lstm_layer_forward_cuda);
  m.impl("lstm_layer_backward", &lstm_layer_backward_cuda);
  m.impl("gru_layer_forward", &gru_layer_forward_cuda);
  m.impl("gru_layer_backward", &gru_layer_backward_cuda);
  m.impl("persistent_forward_supported", &persistent_forward_supported_cuda);
}

}  // namespace fused_lstm
