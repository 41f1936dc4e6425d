// The schemas of fused_lstm's ops, written once: the library registers them as torch.ops.fused_lstm.*, and
// the host emulation of the CUDA kernels (cuda/emulation/) registers the same schemas under its own name.
#pragma once

#include <torch/library.h>

namespace fused_lstm {

inline void define_ops(torch::Library& m) {
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
  // One step of an LSTMCell / GRUCell. See lstm_layer.h and gru_layer.h for the shapes.
  m.def(
      "lstm_cell_forward(Tensor input, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
      "Tensor? bias_hh, bool save_for_backward) -> (Tensor h1, Tensor c1, Tensor gates)");
  m.def(
      "lstm_cell_backward(Tensor grad_h1, Tensor grad_c1, Tensor input, Tensor h0, Tensor c0, Tensor weight_ih, "
      "Tensor weight_hh, Tensor gates, bool has_bias, bool compute_grad_input=True, bool compute_grad_weights=True) "
      "-> (Tensor grad_input, Tensor grad_h0, Tensor grad_c0, Tensor grad_weight_ih, Tensor grad_weight_hh, "
      "Tensor grad_bias)");
  m.def(
      "gru_cell_forward(Tensor input, Tensor h0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
      "Tensor? bias_hh, bool save_for_backward) -> (Tensor h1, Tensor gates, Tensor candidate_hidden)");
  m.def(
      "gru_cell_backward(Tensor grad_h1, Tensor input, Tensor h0, Tensor weight_ih, Tensor weight_hh, Tensor gates, "
      "Tensor candidate_hidden, bool has_bias, bool compute_grad_input=True, bool compute_grad_weights=True) "
      "-> (Tensor grad_input, Tensor grad_h0, Tensor grad_weight_ih, Tensor grad_weight_hh, Tensor grad_bias_ih, "
      "Tensor grad_bias_hh)");
  // The paths the op `kind` (lstm_layer, gru_layer, lstm_cell, gru_cell) takes for these arguments (as its
  // forward's; batch_sizes [B] for a cell, weight_hr only for a projected LSTM layer): (forward, backward), each
  // "fused cell", "whole recurrence (<kernel>)" or "per step". See lstm_layer.h.
  m.def(
      "layer_paths(str kind, Tensor input, Tensor batch_sizes, Tensor h0, Tensor weight_ih, Tensor weight_hh, "
      "Tensor? weight_hr) -> (str forward, str backward)");
}

}  // namespace fused_lstm
