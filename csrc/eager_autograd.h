// The ops' autograd for eager calls, in C++ (fused_lstm._C.<op>_autograd, which fused_lstm.ops._call uses outside
// torch.func, forward-mode AD, tracing and compiling).
//
// Why: a decoder or an unrolled training loop calls a cell (or a one-step layer) once per step, and a Python
// autograd.Function around the op (its apply, its set-up, a backward that rebuilds the saved values by name)
// cost more per step than the kernels at small sizes. Same forward, saved values and backward as the ops'
// registered autograd (fused_lstm/ops.py); a backward that must itself be differentiable (create_graph=True) is
// handed to that Python code, whose second derivatives are the reference's.
#pragma once

#include <pybind11/pybind11.h>

namespace fused_lstm {

// Adds to the module, for each forward op (lstm_layer_forward, gru_layer_forward, lstm_cell_forward,
// gru_cell_forward), <op>_autograd(its arguments but save_for_backward) -> its outputs, differentiable; and
// set_differentiable_backward(fn), the Python backward for create_graph=True:
// fn(op, saved tensors, needs_input_grad of each tensor argument, output gradients, reverse) -> gradients.
void bind_eager_autograd(pybind11::module_& module);

}  // namespace fused_lstm
