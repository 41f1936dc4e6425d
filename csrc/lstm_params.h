// Torch-free description of one fused pointwise pass of an LSTM layer, shared by the CPU and CUDA
// backends. Shapes use one letter convention: T steps, N batch rows active at this step (b_t),
// C input features, H hidden size, P projection size (P = H when there is no projection).
// Element types are erased (void*): `scalar` is the tensor dtype, `acc` is float for fp16/bf16 and
// the dtype itself otherwise; the cell state and its gradient always live in `acc`.
#pragma once

#include <cstdint>

namespace fused_lstm {

// Forward of one step: gate pre-activations -> activations, cell update, hidden output.
struct LstmForwardPointwiseParams {
  int64_t rows;           // N: active batch rows at this step
  int64_t hidden;         // H
  void* gates;            // [N, 4H] scalar; in: x·W_ihᵀ + h·W_hhᵀ (no bias), out: σ(i), σ(f), tanh(g), σ(o)
  const void* bias;       // [4H] scalar, b_ih + b_hh (zeros when the layer has no bias)
  void* cell;             // [N, H] acc; in: c_{t-1}, out: c_t (updated in place)
  void* cell_prev_saved;  // [N, H] acc; receives c_{t-1} for backward; nullptr at inference
  void* hidden_out;       // [N, H] scalar; o·tanh(c_t): the layer output, or the projection input when P < H
  void* hidden_state;     // [N, H] scalar; a second copy of o·tanh(c_t) (the recurrent state); may be nullptr
};

// Backward of one step: gradient of the loss w.r.t. the gate pre-activations and c_{t-1}.
struct LstmBackwardPointwiseParams {
  int64_t rows;               // N: active batch rows at this step
  int64_t hidden;             // H
  const void* gates;          // [N, 4H] scalar; activations saved by forward
  const void* cell_prev;      // [N, H] acc; c_{t-1} saved by forward
  const void* grad_hidden;    // [N, H] scalar; dL/d(o·tanh(c_t)) from the output at this step
  const void* grad_hidden_2;  // [N, H] scalar; a second term of the same gradient (the recurrence); may be nullptr
  void* grad_cell;            // [N, H] acc; in: dL/dc_t from step t+1, out: dL/dc_{t-1} (in place)
  void* grad_gates;           // [N, 4H] scalar; out: dL/d(pre-activations)
};

}  // namespace fused_lstm
