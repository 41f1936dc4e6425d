// Each fused op, described once: its forward and backward schemas (argument and result names) and what its
// autograd needs to know besides them. torch.ops.fused_lstm.* are registered from here (define_ops, also by the
// host emulation of the CUDA kernels under its own library name). Both autograds read the same table, so every
// saved tensor, gradient and cotangent is found by name: the C++ one for eager calls (eager_autograd.cpp) and
// Python's (fused_lstm/autograd.py, through _C.op_descriptions(); that file says why both exist). The fake
// kernels and vmap rules (fused_lstm/fake_kernels.py, vmap_rules.py) name the schemas' arguments, which
// tests/test_ops.py checks against this table.
//
// Conventions that the table relies on instead of spelling out:
// - the backward op's arguments are the forward's outputs' cotangents `grad_<output>`, the saved tensors by
//   their forward names (arguments or outputs), the forward's plain arguments (reverse), and
//   has_bias (whether the forward had a bias), compute_grad_input, compute_grad_weights;
// - it returns `grad_<argument>` for each differentiable argument, but where `gradient_aliases` says otherwise.
#pragma once

#include <torch/library.h>

#include <utility>
#include <vector>

namespace fused_lstm {

struct OpDescription {
  // The ops fused_lstm::<kind>_forward and <kind>_backward; fused_lstm/reference.py's <kind> (and <kind>_jvp)
  // has the forward's contract.
  const char* kind;
  const char* forward_schema;
  const char* backward_schema;
  std::vector<const char*> differentiable;   // the forward's arguments that take gradients
  std::vector<const char*> weights;          // of those, the ones compute_grad_weights asks for
  std::vector<const char*> outputs;          // the forward's differentiable results (the leading ones)
  std::vector<const char*> saved_outputs;    // its other results, which only the backward reads
  // The tensor an output's zero cotangent is shaped like, where the output itself is not saved.
  std::vector<std::pair<const char*, const char*>> cotangent_like;
  // (result of the backward, forward argument) where the result is not grad_<argument>: one result serving two.
  std::vector<std::pair<const char*, const char*>> gradient_aliases;
};

inline const std::vector<OpDescription>& op_descriptions() {
  static const std::vector<OpDescription> descriptions = {
      // One LSTM layer in one direction over a (packed) sequence. See lstm_layer.h for the shapes.
      {"lstm_layer",
       "lstm_layer_forward(Tensor input, Tensor batch_sizes, Tensor h0, Tensor c0, Tensor weight_ih, "
       "Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, Tensor? weight_hr, bool reverse, "
       "bool save_for_backward) "
       "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor gates, Tensor cell_prev, Tensor proj_input)",
       "lstm_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor input, "
       "Tensor batch_sizes, Tensor h0, Tensor weight_ih, Tensor weight_hh, Tensor? weight_hr, Tensor output, "
       "Tensor gates, Tensor cell_prev, Tensor proj_input, bool reverse, bool has_bias, "
       "bool compute_grad_input=True, bool compute_grad_weights=True) "
       "-> (Tensor grad_input, Tensor grad_h0, Tensor grad_c0, Tensor grad_weight_ih, Tensor grad_weight_hh, "
       "Tensor grad_bias, Tensor grad_weight_hr)",
       {"input", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"},
       {"weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"},
       {"output", "h_n", "c_n"},
       {"gates", "cell_prev", "proj_input"},
       {{"h_n", "h0"}, {"c_n", "c0"}},
       // b_ih and b_hh enter the gates alike (summed once per call): one gradient serves both.
       {{"grad_bias", "bias_ih"}, {"grad_bias", "bias_hh"}}},
      // One GRU layer in one direction. See gru_layer.h for the shapes.
      {"gru_layer",
       "gru_layer_forward(Tensor input, Tensor batch_sizes, Tensor h0, Tensor weight_ih, Tensor weight_hh, "
       "Tensor? bias_ih, Tensor? bias_hh, bool reverse, bool save_for_backward) "
       "-> (Tensor output, Tensor h_n, Tensor gates, Tensor candidate_hidden)",
       "gru_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor input, Tensor batch_sizes, Tensor h0, "
       "Tensor weight_ih, Tensor weight_hh, Tensor output, Tensor gates, Tensor candidate_hidden, bool reverse, "
       "bool has_bias, bool compute_grad_input=True, bool compute_grad_weights=True) -> (Tensor grad_input, "
       "Tensor grad_h0, Tensor grad_weight_ih, Tensor grad_weight_hh, Tensor grad_bias_ih, Tensor grad_bias_hh)",
       {"input", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"},
       {"weight_ih", "weight_hh", "bias_ih", "bias_hh"},
       {"output", "h_n"},
       {"gates", "candidate_hidden"},
       {{"h_n", "h0"}},
       {}},
      // One step of an LSTMCell. See lstm_layer.h for the shapes.
      {"lstm_cell",
       "lstm_cell_forward(Tensor input, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
       "Tensor? bias_hh, bool save_for_backward) -> (Tensor h1, Tensor c1, Tensor gates)",
       "lstm_cell_backward(Tensor grad_h1, Tensor grad_c1, Tensor input, Tensor h0, Tensor c0, Tensor weight_ih, "
       "Tensor weight_hh, Tensor gates, bool has_bias, bool compute_grad_input=True, "
       "bool compute_grad_weights=True) -> (Tensor grad_input, Tensor grad_h0, Tensor grad_c0, "
       "Tensor grad_weight_ih, Tensor grad_weight_hh, Tensor grad_bias)",
       {"input", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"},
       {"weight_ih", "weight_hh", "bias_ih", "bias_hh"},
       {"h1", "c1"},
       {"gates"},
       {{"h1", "h0"}, {"c1", "c0"}},
       // b_ih and b_hh enter the gates alike: one gradient serves both.
       {{"grad_bias", "bias_ih"}, {"grad_bias", "bias_hh"}}},
      // One step of a GRUCell. See gru_layer.h for the shapes.
      {"gru_cell",
       "gru_cell_forward(Tensor input, Tensor h0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
       "Tensor? bias_hh, bool save_for_backward) -> (Tensor h1, Tensor gates, Tensor candidate_hidden)",
       "gru_cell_backward(Tensor grad_h1, Tensor input, Tensor h0, Tensor weight_ih, Tensor weight_hh, "
       "Tensor gates, Tensor candidate_hidden, bool has_bias, bool compute_grad_input=True, "
       "bool compute_grad_weights=True) -> (Tensor grad_input, Tensor grad_h0, Tensor grad_weight_ih, "
       "Tensor grad_weight_hh, Tensor grad_bias_ih, Tensor grad_bias_hh)",
       {"input", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"},
       {"weight_ih", "weight_hh", "bias_ih", "bias_hh"},
       {"h1"},
       {"gates", "candidate_hidden"},
       {{"h1", "h0"}},
       {}},
  };
  return descriptions;
}

inline void define_ops(torch::Library& m) {
  for (const OpDescription& op : op_descriptions()) {
    m.def(op.forward_schema);
    m.def(op.backward_schema);
  }
  // The paths the op `kind` (lstm_layer, gru_layer, lstm_cell, gru_cell) takes for these arguments (as its
  // forward's; batch_sizes [B] for a cell, weight_hr only for a projected LSTM layer): (forward, backward), each
  // "fused cell", "whole recurrence (<kernel>)" or "per step". See lstm_layer.h.
  m.def(
      "layer_paths(str kind, Tensor input, Tensor batch_sizes, Tensor h0, Tensor weight_ih, Tensor weight_hh, "
      "Tensor? weight_hr) -> (str forward, str backward)");
}

}  // namespace fused_lstm
