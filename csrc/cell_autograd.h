// The cell ops' autograd for eager calls, in C++ (fused_lstm._C.lstm_cell_autograd / gru_cell_autograd, which
// fused_lstm.ops._call uses outside torch.func, tracing and compiling).
//
// Why: a decoder or an unrolled training loop calls a cell once per step, and the Python autograd.Function
// around the op (its apply, set-up, and a backward that rebuilds the saved values by name) cost more per step
// than the kernels at small sizes. Same forward, saved values and backward as the ops' registered autograd
// (fused_lstm/ops.py); a backward that must itself be differentiable (create_graph=True) is handed to that
// Python code, whose second derivatives are the reference's.
#pragma once

#include <pybind11/pybind11.h>

namespace fused_lstm {

// Adds lstm_cell_autograd(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh) -> (h1, c1, gates),
// gru_cell_autograd(input, h0, weight_ih, weight_hh, bias_ih, bias_hh) -> (h1, gates, candidate_hidden) and
// set_differentiable_backward(fn) to the module.
void bind_cell_autograd(pybind11::module_& module);

}  // namespace fused_lstm
