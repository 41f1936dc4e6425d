// The ops' autograd for eager calls, in C++ (fused_lstm._C.<op>_autograd, which fused_lstm.autograd.call uses
// outside torch.func, forward-mode AD, tracing and compiling).
//
// Why a second form beside the Python autograd that torch.library registers: a decoder or an unrolled training
// loop calls a cell (or a one-step layer) once per step, and a Python autograd.Function around the op cost more
// per step than the kernels at small sizes. Both forms read the ops' descriptions (op_descriptions.h) and find
// every saved tensor, cotangent and gradient by name; a backward that must itself be differentiable
// (create_graph=True) is handed to the Python form, whose second derivatives are the reference's.
#pragma once

#include <pybind11/pybind11.h>

namespace fused_lstm {

// Adds to the module, for each forward op (lstm_layer_forward, gru_layer_forward, lstm_cell_forward,
// gru_cell_forward), <op>_autograd(its arguments but save_for_backward) -> its outputs, differentiable;
// op_descriptions() -> the descriptions as dicts; and set_differentiable_backward(fn), the Python backward for
// create_graph=True: fn(op, saved tensors by name, needs-gradient by argument name, output gradients by name,
// plain arguments by name) -> gradients by argument name.
void bind_eager_autograd(pybind11::module_& module);

}  // namespace fused_lstm
