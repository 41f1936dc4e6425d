// The op schemas of fused_lstm and their CPU implementations. The CUDA implementations of the same
// schemas are registered in cuda/; fake kernels and autograd live in fused_lstm/ops.py.
#include <Python.h>
#include <torch/library.h>

#include "checks.h"
#include "cpu/lstm_pointwise_cpu.h"
#include "cpu/lstm_sequence_cpu.h"
#include "gru_layer.h"
#include "lstm_layer.h"

// Importing fused_lstm._C loads this library, which registers the ops; the module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

namespace fused_lstm {
namespace {

const PointwiseBackend kCpuBackend{&cpu::forward_pointwise,
                                   &cpu::backward_pointwise,
                                   &cpu::sequence_supported,
                                   &cpu::sequence_forward,
                                   &cpu::sequence_forward_projects_input,
                                   &cpu::sequence_supported,
                                   &cpu::sequence_backward_prepare_weight,
                                   &cpu::sequence_backward};
const GruPointwiseBackend kCpuGruBackend{&cpu::gru_forward_pointwise, &cpu::gru_backward_pointwise};

void check_cpu_dtype(const char* op, const at::Tensor& input) {
  check_defined(op, {{"input", &input}});
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
              op, ": the CPU kernels support float32 and float64, got ", input.scalar_type(),
              " (float16/bfloat16 run on CUDA)");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_forward_cpu(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& weight_ih, const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& weight_hr, bool reverse, bool save_for_backward) {
  check_cpu_dtype("fused_lstm.lstm_layer_forward", input);
  return lstm_layer_forward(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias, weight_hr, reverse,
                            save_for_backward, kCpuBackend);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward_cpu(const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
                        const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
                        const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                        const std::optional<at::Tensor>& weight_hr, const at::Tensor& output,
                        const at::Tensor& gates, const at::Tensor& cell_prev, const at::Tensor& proj_input,
                        bool reverse, bool has_bias, bool compute_grad_input, bool compute_grad_weights) {
  check_cpu_dtype("fused_lstm.lstm_layer_backward", input);
  return lstm_layer_backward(grad_output, grad_h_n, grad_c_n, input, batch_sizes, h0, weight_ih, weight_hh,
                             weight_hr, output, gates, cell_prev, proj_input, reverse, has_bias, compute_grad_input,
                             compute_grad_weights, kCpuBackend);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_layer_forward_cpu(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
    bool reverse, bool save_for_backward) {
  check_cpu_dtype("fused_lstm.gru_layer_forward", input);
  return gru_layer_forward(input, batch_sizes, h0, weight_ih, weight_hh, bias_ih, bias_hh, reverse,
                           save_for_backward, kCpuGruBackend);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_layer_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& input, const at::Tensor& batch_sizes,
    const at::Tensor& h0, const at::Tensor& weight_ih, const at::Tensor& weight_hh, const at::Tensor& output,
    const at::Tensor& gates, const at::Tensor& candidate_hidden, bool reverse, bool has_bias, bool compute_grad_input,
    bool compute_grad_weights) {
  check_cpu_dtype("fused_lstm.gru_layer_backward", input);
  return gru_layer_backward(grad_output, grad_h_n, input, batch_sizes, h0, weight_ih, weight_hh, output, gates,
                            candidate_hidden, reverse, has_bias, compute_grad_input, compute_grad_weights,
                            kCpuGruBackend);
}

// The persistent recurrent kernel exists only on CUDA: every other device answers false. Registered for
// CPU and Meta (the op returns no tensor, so the Meta kernel is all that meta and fake tensors need).
bool persistent_forward_supported_elsewhere(const at::Tensor& input, const at::Tensor& h0,
                                            const at::Tensor& weight_hh, const at::Tensor& batch_sizes,
                                            bool /*has_projection*/) {
  check_defined("fused_lstm.persistent_forward_supported",
                {{"input", &input}, {"h0", &h0}, {"weight_hh", &weight_hh}, {"batch_sizes", &batch_sizes}});
  return false;
}

}  // namespace

TORCH_LIBRARY(fused_lstm, m) {
  // One layer in one direction over a (packed) sequence. See lstm_layer.h for the shapes.
  m.def(
      "lstm_layer_forward(Tensor input, Tensor batch_sizes, Tensor h0, Tensor c0, Tensor weight_ih, "
      "Tensor weight_hh, Tensor? bias, Tensor? weight_hr, bool reverse, bool save_for_backward) "
      "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor gates, Tensor cell_prev, Tensor proj_input)");
  m.def(
      "lstm_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor input, "
      "Tensor batch_sizes, Tensor h0, Tensor weight_ih, Tensor weight_hh, Tensor? weight_hr, Tensor output, "
      "Tensor gates, Tensor cell_prev, Tensor proj_input, bool reverse, bool has_bias, "
      "bool compute_grad_input=True, bool compute_grad_weights=True) "
      "-> (Tensor grad_input, Tensor grad_h0, Tensor grad_c0, Tensor grad_weight_ih, Tensor grad_weight_hh, "
      "Tensor grad_bias, Tensor grad_weight_hr)");
  // One GRU layer in one direction. See gru_layer.h for the shapes.
  m.def(
      "gru_layer_forward(Tensor input, Tensor batch_sizes, Tensor h0, Tensor weight_ih, Tensor weight_hh, "
      "Tensor? bias_ih, Tensor? bias_hh, bool reverse, bool save_for_backward) "
      "-> (Tensor output, Tensor h_n, Tensor gates, Tensor candidate_hidden)");
  m.def(
      "gru_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor input, Tensor batch_sizes, Tensor h0, "
      "Tensor weight_ih, Tensor weight_hh, Tensor output, Tensor gates, Tensor candidate_hidden, bool reverse, "
      "bool has_bias, bool compute_grad_input=True, bool compute_grad_weights=True) -> (Tensor grad_input, "
      "Tensor grad_h0, Tensor grad_weight_ih, Tensor grad_weight_hh, Tensor grad_bias_ih, Tensor grad_bias_hh)");
  // Whether lstm_layer_forward would run this layer (input [N, C], h0 [B, P], weight_hh [4H, P],
  // batch_sizes [T]) as one persistent CUDA kernel instead of the per-step loop: only on CUDA, with
  // FUSED_LSTM_PERSISTENT=1, and for the cases the kernel covers (see cuda/lstm_persistent.h).
  m.def(
      "persistent_forward_supported(Tensor input, Tensor h0, Tensor weight_hh, Tensor batch_sizes, "
      "bool has_projection) -> bool");
}

TORCH_LIBRARY_IMPL(fused_lstm, CPU, m) {
  m.impl("lstm_layer_forward", &lstm_layer_forward_cpu);
  m.impl("lstm_layer_backward", &lstm_layer_backward_cpu);
  m.impl("gru_layer_forward", &gru_layer_forward_cpu);
  m.impl("gru_layer_backward", &gru_layer_backward_cpu);
  m.impl("persistent_forward_supported", &persistent_forward_supported_elsewhere);
}

TORCH_LIBRARY_IMPL(fused_lstm, Meta, m) {
  m.impl("persistent_forward_supported", &persistent_forward_supported_elsewhere);
}

}  // namespace fused_lstm
