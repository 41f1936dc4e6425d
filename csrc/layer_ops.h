// The layer and cell ops' kernels, written once for every device. `Device` says how its kernels are reached:
//   static void check_devices(const char* op, const at::Tensor& input, const at::Tensor* batch_sizes,
//                             std::initializer_list<NamedTensor> tensors);  // raises before any kernel runs;
//                                                                           // batch_sizes nullptr for cell ops
//   using Guard = ...;                             // constructed from input.device(): makes it current
//   static const LstmBackend& lstm_backend();
//   static const GruBackend& gru_backend();
// register_layer_ops<Device>(m) registers them under m's dispatch key.
#pragma once

#include <torch/library.h>

#include <initializer_list>
#include <string>

#include "checks.h"
#include "gru_layer.h"
#include "lstm_layer.h"

namespace fused_lstm {

template <typename Device>
struct LayerOps {
  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_forward(
      const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& c0,
      const at::Tensor& weight_ih, const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
      const std::optional<at::Tensor>& bias_hh, const std::optional<at::Tensor>& weight_hr, bool reverse,
      bool save_for_backward) {
    Device::check_devices("fused_lstm.lstm_layer_forward", input, &batch_sizes,
                          {{"h0", &h0},
                           {"c0", &c0},
                           {"weight_ih", &weight_ih},
                           {"weight_hh", &weight_hh},
                           {"bias_ih", optional_address(bias_ih)},
                           {"bias_hh", optional_address(bias_hh)},
                           {"weight_hr", optional_address(weight_hr)}});
    const typename Device::Guard guard(input.device());
    return fused_lstm::lstm_layer_forward(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh,
                                          weight_hr, reverse, save_for_backward, Device::lstm_backend());
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
  lstm_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
                      const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
                      const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                      const std::optional<at::Tensor>& weight_hr, const at::Tensor& output, const at::Tensor& gates,
                      const at::Tensor& cell_prev, const at::Tensor& proj_input, bool reverse, bool has_bias,
                      bool compute_grad_input, bool compute_grad_weights) {
    Device::check_devices("fused_lstm.lstm_layer_backward", input, &batch_sizes,
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
                           // proj_input is read only with a projection; without one it may be anything.
                           {"proj_input", weight_hr.has_value() ? &proj_input : nullptr}});
    const typename Device::Guard guard(input.device());
    return fused_lstm::lstm_layer_backward(grad_output, grad_h_n, grad_c_n, input, batch_sizes, h0, weight_ih,
                                           weight_hh, weight_hr, output, gates, cell_prev, proj_input, reverse,
                                           has_bias, compute_grad_input, compute_grad_weights,
                                           Device::lstm_backend());
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_layer_forward(
      const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& weight_ih,
      const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
      const std::optional<at::Tensor>& bias_hh, bool reverse, bool save_for_backward) {
    Device::check_devices("fused_lstm.gru_layer_forward", input, &batch_sizes,
                          {{"h0", &h0},
                           {"weight_ih", &weight_ih},
                           {"weight_hh", &weight_hh},
                           {"bias_ih", optional_address(bias_ih)},
                           {"bias_hh", optional_address(bias_hh)}});
    const typename Device::Guard guard(input.device());
    return fused_lstm::gru_layer_forward(input, batch_sizes, h0, weight_ih, weight_hh, bias_ih, bias_hh, reverse,
                                         save_for_backward, Device::gru_backend());
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_layer_backward(
      const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& input,
      const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
      const at::Tensor& output, const at::Tensor& gates, const at::Tensor& candidate_hidden, bool reverse,
      bool has_bias, bool compute_grad_input, bool compute_grad_weights) {
    Device::check_devices("fused_lstm.gru_layer_backward", input, &batch_sizes,
                          {{"grad_output", &grad_output},
                           {"grad_h_n", &grad_h_n},
                           {"h0", &h0},
                           {"weight_ih", &weight_ih},
                           {"weight_hh", &weight_hh},
                           {"output", &output},
                           {"gates", &gates},
                           {"candidate_hidden", &candidate_hidden}});
    const typename Device::Guard guard(input.device());
    return fused_lstm::gru_layer_backward(grad_output, grad_h_n, input, batch_sizes, h0, weight_ih, weight_hh, output,
                                          gates, candidate_hidden, reverse, has_bias, compute_grad_input,
                                          compute_grad_weights, Device::gru_backend());
  }

  // The paths of `kind` (lstm_layer, gru_layer, lstm_cell, gru_cell; a cell's batch_sizes is [B]).
  static std::tuple<std::string, std::string> layer_paths(const std::string& kind, const at::Tensor& input,
                                                         const at::Tensor& batch_sizes, const at::Tensor& h0,
                                                         const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                                         const std::optional<at::Tensor>& weight_hr) {
    const char* op = "fused_lstm.layer_paths";
    const bool lstm = kind == "lstm_layer" || kind == "lstm_cell", cell = kind == "lstm_cell" || kind == "gru_cell";
    TORCH_CHECK(lstm || kind == "gru_layer" || kind == "gru_cell", op,
                ": kind must be lstm_layer, gru_layer, lstm_cell or gru_cell, got '", kind, "'");
    TORCH_CHECK(kind == "lstm_layer" || !weight_hr.has_value(), op, ": only an LSTM layer has a projection");
    Device::check_devices(op, input, &batch_sizes,
                          {{"h0", &h0},
                           {"weight_ih", &weight_ih},
                           {"weight_hh", &weight_hh},
                           {"weight_hr", optional_address(weight_hr)}});
    TORCH_CHECK(!cell || batch_sizes.numel() == 1, op, ": a cell runs one step (batch_sizes [B])");
    const typename Device::Guard guard(input.device());
    auto paths = lstm ? fused_lstm::lstm_layer_paths(input, batch_sizes, h0, weight_ih, weight_hh, weight_hr,
                                                     Device::lstm_backend())
                      : fused_lstm::gru_layer_paths(input, batch_sizes, h0, weight_ih, weight_hh, Device::gru_backend());
    // A cell op runs the fused cell or one GEMM step; its backward is always one step.
    if (cell) return {std::get<0>(paths) == "fused cell" ? "fused cell" : "per step", "per step"};
    return paths;
  }

  // Cell ops: one step, no batch_sizes.
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_cell_forward(
      const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_ih,
      const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
      const std::optional<at::Tensor>& bias_hh, bool save_for_backward) {
    Device::check_devices("fused_lstm.lstm_cell_forward", input, nullptr,
                          {{"h0", &h0},
                           {"c0", &c0},
                           {"weight_ih", &weight_ih},
                           {"weight_hh", &weight_hh},
                           {"bias_ih", optional_address(bias_ih)},
                           {"bias_hh", optional_address(bias_hh)}});
    const typename Device::Guard guard(input.device());
    return fused_lstm::lstm_cell_forward(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, save_for_backward,
                                         Device::lstm_backend());
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_cell_backward(
      const at::Tensor& grad_h1, const at::Tensor& grad_c1, const at::Tensor& input, const at::Tensor& h0,
      const at::Tensor& c0, const at::Tensor& weight_ih, const at::Tensor& weight_hh, const at::Tensor& gates,
      bool has_bias, bool compute_grad_input, bool compute_grad_weights) {
    Device::check_devices("fused_lstm.lstm_cell_backward", input, nullptr,
                          {{"grad_h1", &grad_h1},
                           {"grad_c1", &grad_c1},
                           {"h0", &h0},
                           {"c0", &c0},
                           {"weight_ih", &weight_ih},
                           {"weight_hh", &weight_hh},
                           {"gates", &gates}});
    const typename Device::Guard guard(input.device());
    return fused_lstm::lstm_cell_backward(grad_h1, grad_c1, input, h0, c0, weight_ih, weight_hh, gates, has_bias,
                                          compute_grad_input, compute_grad_weights, Device::lstm_backend());
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_cell_forward(
      const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
      const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh, bool save_for_backward) {
    Device::check_devices("fused_lstm.gru_cell_forward", input, nullptr,
                          {{"h0", &h0},
                           {"weight_ih", &weight_ih},
                           {"weight_hh", &weight_hh},
                           {"bias_ih", optional_address(bias_ih)},
                           {"bias_hh", optional_address(bias_hh)}});
    const typename Device::Guard guard(input.device());
    return fused_lstm::gru_cell_forward(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, save_for_backward,
                                        Device::gru_backend());
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_cell_backward(
      const at::Tensor& grad_h1, const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_ih,
      const at::Tensor& weight_hh, const at::Tensor& gates, const at::Tensor& candidate_hidden, bool has_bias,
      bool compute_grad_input, bool compute_grad_weights) {
    Device::check_devices("fused_lstm.gru_cell_backward", input, nullptr,
                          {{"grad_h1", &grad_h1},
                           {"h0", &h0},
                           {"weight_ih", &weight_ih},
                           {"weight_hh", &weight_hh},
                           {"gates", &gates},
                           {"candidate_hidden", &candidate_hidden}});
    const typename Device::Guard guard(input.device());
    return fused_lstm::gru_cell_backward(grad_h1, input, h0, weight_ih, weight_hh, gates, candidate_hidden, has_bias,
                                         compute_grad_input, compute_grad_weights, Device::gru_backend());
  }
};

template <typename Device>
void register_layer_ops(torch::Library& m) {
  m.impl("lstm_layer_forward", &LayerOps<Device>::lstm_layer_forward);
  m.impl("lstm_layer_backward", &LayerOps<Device>::lstm_layer_backward);
  m.impl("gru_layer_forward", &LayerOps<Device>::gru_layer_forward);
  m.impl("gru_layer_backward", &LayerOps<Device>::gru_layer_backward);
  m.impl("lstm_cell_forward", &LayerOps<Device>::lstm_cell_forward);
  m.impl("lstm_cell_backward", &LayerOps<Device>::lstm_cell_backward);
  m.impl("gru_cell_forward", &LayerOps<Device>::gru_cell_forward);
  m.impl("gru_cell_backward", &LayerOps<Device>::gru_cell_backward);
  m.impl("layer_paths", &LayerOps<Device>::layer_paths);
}

// A Guard for devices that need none (the CPU).
struct NoDeviceGuard {
  explicit NoDeviceGuard(const c10::Device&) {}
};

}  // namespace fused_lstm
