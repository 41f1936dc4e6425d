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
  // Whether lstm_layer_forward would run this layer (input [N, C], h0 [B, P], weight_hh [4H, P],
  // batch_sizes [T]) as one persistent CUDA kernel instead of the per-step loop: only on CUDA, with
  // FUSED_LSTM_PERSISTENT=1, and for the cases the kernel covers (see cuda/lstm_persistent.h).
  m.def(
      "persistent_forward_supported(Tensor input, Tensor h0, Tensor weight_hh, Tensor batch_sizes, "
      "bool has_projection) -> bool");
}

}  // namespace fused_lstm
