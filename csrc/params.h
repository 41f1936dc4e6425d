// Torch-free descriptions of what the drivers hand a backend (lstm_layer.h, gru_layer.h), shared by the CPU and
// CUDA backends: one fused pointwise pass of an LSTM or GRU step, the whole recurrence of an LSTM layer, one step
// of a fused cell. Letters: T steps, B batch, R batch rows active at this step (b_t), C input features, H hidden
// size, P projection size (P = H when there is no projection).
// Element types are erased (void*): `scalar` is the tensor dtype, `acc` is float for fp16/bf16 and
// the dtype itself otherwise; the cell state and its gradient always live in `acc`.
#pragma once

#include <cstdint>

namespace fused_lstm {

// Forward of one step: gate pre-activations -> activations, cell update, hidden output.
struct LstmForwardPointwiseParams {
  int64_t rows;           // R: batch rows active at this step (b_t)
  int64_t hidden;         // H
  void* gates;            // [R, 4H] scalar; in: x·W_ihᵀ + h·W_hhᵀ (no bias), out: σ(i), σ(f), tanh(g), σ(o)
  const void* bias;       // [4H] scalar, b_ih + b_hh (zeros when the layer has no bias)
  void* cell;             // [R, H] acc; in: c_{t-1}, out: c_t (updated in place)
  void* cell_prev_saved;  // [R, H] acc; receives c_{t-1} for backward; nullptr at inference
  void* hidden_out;       // [R, H] scalar; o·tanh(c_t): the layer output, or the projection input when P < H
  void* hidden_state;     // [R, H] scalar; a second copy of o·tanh(c_t) (the recurrent state); may be nullptr
};

// What decides whether a backend can run the whole recurrence of a layer in one call (see
// LstmBackend::recurrence_forward_kernel in lstm_layer.h).
struct LstmRecurrenceShape {
  int64_t steps;       // T
  int64_t batch;       // B
  int64_t hidden;      // H
  bool uniform_batch;  // every step has all B rows (padded input): rows of step t are [t·B, (t+1)·B)
  bool projected;      // the layer has a projection (weight_hr, P < H)
};

// The whole-recurrence kernel a backend chose for a case (LstmBackend::recurrence_*_kernel): its name (nullptr:
// none, run per step) and which of the backend's kernels it is (the backend's own code: the CPU's instruction
// set). The driver hands it back to the backend's run hooks, so the kernel that runs is the one chosen, even if
// an option changed in between.
struct RecurrenceKernel {
  const char* name = nullptr;
  int variant = 0;
};

// The whole recurrence of one layer in one direction, uniform batch, no projection (P = H): rows of
// step t are [t·B, (t+1)·B) of the [T·B, ...] tensors. Every pointer is contiguous and row-major.
// The input projection x·W_ihᵀ either arrives in `gates` (project_input false: the driver ran it as one
// GEMM over all rows) or the backend computes it inside each step from `input` and `weight_ih`
// (project_input true, see LstmBackend::recurrence_forward_projects_input), in which case `gates` is
// only written, and only when saving.
struct LstmRecurrenceForwardParams {
  int64_t steps;            // T
  int64_t batch;            // B
  int64_t hidden;           // H
  int64_t input_size;       // C
  bool reverse;             // visit the steps from T-1 down to 0
  bool save_for_backward;   // write the activations into gates and c_{t-1} into cell_prev_saved
  bool project_input;       // compute x·W_ihᵀ from input and weight_ih (see above)
  const void* input;        // [T·B, C] scalar
  const void* weight_ih;    // [4H, C] scalar
  const void* weight_hh;    // [4H, H] scalar
  const void* bias;         // [4H] scalar, b_ih + b_hh (zeros when the layer has no bias)
  const void* h0;           // [B, H] scalar
  void* gates;              // [T·B, 4H] scalar; in: x·W_ihᵀ unless project_input; out (when saving): σ(i), σ(f), tanh(g), σ(o)
  void* cell;               // [B, H] acc; in: c0, out: c of the last visited step
  void* cell_prev_saved;    // [T·B, H] acc; receives c_{t-1} when saving; nullptr otherwise
  void* output;             // [T·B, H] scalar; out: h_t of every step
};

// The backward recurrence of one layer in one direction over T consecutive steps (same cases and layout
// as above; the driver calls it for blocks of steps, last visited first): the gradients of the gate
// pre-activations of every step and of the cell state before the block. dL/dh into the block visited next
// (one small GEMM) and the weight and input gradients (large GEMMs over the block's rows) are the driver's.
struct LstmRecurrenceBackwardParams {
  int64_t steps;            // T
  int64_t batch;            // B
  int64_t hidden;           // H
  bool reverse;             // the forward visited the steps from T-1 down to 0
  const void* weight_hh_prepared;  // W_hh in the backend's own layout (LstmBackend's prepare hook)
  const void* gates;        // [T·B, 4H] scalar; activations saved by forward
  const void* cell_prev;    // [T·B, H] acc; c_{t-1} saved by forward
  const void* grad_output;  // [T·B, H] scalar; dL/dh_t from the layer output
  const void* grad_hidden_n;  // [B, H] scalar; dL/dh of the block's last visited step from later steps (dL/dh_n)
  void* grad_cell;          // [B, H] acc; in: dL/dc of the block's last visited step, out: dL/dc before the block
  void* grad_gates;         // [T·B, 4H] scalar; out: dL/d(pre-activations) of every step
};

// One step of an LSTM cell over a batch, the GEMMs included, in one call: a backend's fused cell kernel for
// the sizes where two library GEMMs and a pointwise pass cost mostly their fixed overhead (LSTMCell, one-step
// layers). All pointers contiguous and row-major.
struct LstmCellForwardParams {
  int64_t batch;          // B
  int64_t input_size;     // C
  int64_t hidden;         // H
  const void* input;      // [B, C] scalar
  const void* h0;         // [B, H] scalar
  const void* c0;         // [B, H] acc
  const void* weight_ih;  // [4H, C] scalar
  const void* weight_hh;  // [4H, H] scalar
  const void* bias_ih;    // [4H] scalar, or nullptr (no bias)
  const void* bias_hh;    // [4H] scalar, or nullptr (no bias)
  void* h1;               // [B, H] scalar; out: o·tanh(c1)
  void* c1;               // [B, H] acc; out
  void* gates;            // [B, 4H] scalar; out: σ(i), σ(f), tanh(g), σ(o) for backward; nullptr at inference
};

// Backward of one step: gradient of the loss w.r.t. the gate pre-activations and c_{t-1}.
struct LstmBackwardPointwiseParams {
  int64_t rows;               // R: batch rows active at this step (b_t)
  int64_t hidden;             // H
  const void* gates;          // [R, 4H] scalar; activations saved by forward
  const void* cell_prev;      // [R, H] acc; c_{t-1} saved by forward
  const void* grad_hidden;    // [R, H] scalar; dL/d(o·tanh(c_t)) from the output at this step
  const void* grad_hidden_2;  // [R, H] scalar; a second term of the same gradient (the recurrence); may be nullptr
  void* grad_cell;            // [R, H] acc; in: dL/dc_t from step t+1, out: dL/dc_{t-1} (in place)
  void* grad_gates;           // [R, 4H] scalar; out: dL/d(pre-activations)
};

}  // namespace fused_lstm

namespace fused_lstm {

// GRU forward of one step (gate order r, z, n as in PyTorch):
//   r = σ(x_r + h_r + b_ir + b_hr), z = σ(x_z + h_z + b_iz + b_hz),
//   n = tanh(x_n + b_in + r·(h_n + b_hn)), h_t = (1 − z)·n + z·h_{t-1}
struct GruForwardPointwiseParams {
  int64_t rows;                  // R: batch rows active at this step (b_t)
  int64_t hidden;                // H
  void* gates;                   // [R, 3H] scalar; in: x·W_ihᵀ (no bias), out: r, z, n
  const void* hidden_gates;      // [R, 3H] scalar; h_{t-1}·W_hhᵀ (no bias)
  const void* bias_ih;           // [3H] scalar (zeros when the layer has no bias)
  const void* bias_hh;           // [3H] scalar (zeros when the layer has no bias)
  void* hidden_state;            // [R, H] scalar; in: h_{t-1}, out: h_t (in place)
  void* hidden_out;              // [R, H] scalar; h_t, the layer output rows of this step
  void* candidate_hidden_saved;  // [R, H] scalar; receives h_n + b_hn for backward; nullptr at inference
};

// One step of a GRU cell over a batch, the GEMMs included, in one call (as LstmCellForwardParams).
struct GruCellForwardParams {
  int64_t batch;           // B
  int64_t input_size;      // C
  int64_t hidden;          // H
  const void* input;       // [B, C] scalar
  const void* h0;          // [B, H] scalar
  const void* weight_ih;   // [3H, C] scalar
  const void* weight_hh;   // [3H, H] scalar
  const void* bias_ih;     // [3H] scalar, or nullptr (no bias)
  const void* bias_hh;     // [3H] scalar, or nullptr (no bias)
  void* h1;                // [B, H] scalar; out
  void* gates;             // [B, 3H] scalar; out: r, z, n for backward; nullptr at inference
  void* candidate_hidden;  // [B, H] scalar; out: h0·W_hnᵀ + b_hn for backward; nullptr at inference
};

// GRU backward of one step.
struct GruBackwardPointwiseParams {
  int64_t rows;                  // R: batch rows active at this step (b_t)
  int64_t hidden;                // H
  const void* gates;             // [R, 3H] scalar; r, z, n saved by forward
  const void* candidate_hidden;  // [R, H] scalar; h_n + b_hn saved by forward
  const void* hidden_prev;       // [R, H] scalar; h_{t-1}
  const void* grad_output;       // [R, H] scalar; dL/dh_t from the layer output
  void* grad_hidden;             // [R, H] scalar; in: dL/dh_t through the recurrence, out: z·dL/dh_t (in place)
  void* grad_gates;              // [R, 3H] scalar; out: dL/d(input pre-activations x·W_ihᵀ + b_ih)
  void* grad_hidden_gates;       // [R, 3H] scalar; out: dL/d(h·W_hhᵀ + b_hh)
};

}  // namespace fused_lstm
