// The sequence loop of one LSTM layer in one direction, written once for every backend: the GEMMs
// go through ATen (MKL/oneDNN on CPU, cuBLAS on the current CUDA stream), and the fused pointwise
// passes are the backend's. Letters: T steps, B batch, N rows of the packed sequence (sum of the
// per-step batch sizes), C input features, H hidden size, P output size (proj_size, or H).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "lstm_params.h"

namespace fused_lstm {

// The two fused pointwise passes of a backend; each dispatches on `dtype` and runs on the current
// stream of its device. A backend may also offer the whole recurrence of a layer in one call (the CUDA
// persistent kernel, the CPU fused step): when sequence_forward_supported (nullptr: never) says yes for a
// case, the driver runs sequence_forward instead of the per-step GEMM + pointwise loop, and likewise for
// the backward; each writes the same tensors as the loop it replaces, so either backward follows either
// forward.
struct PointwiseBackend {
  void (*forward)(const LstmForwardPointwiseParams& params, at::ScalarType dtype);
  void (*backward)(const LstmBackwardPointwiseParams& params, at::ScalarType dtype);
  bool (*sequence_forward_supported)(const LstmSequenceShape& shape, at::ScalarType dtype);
  void (*sequence_forward)(const LstmSequenceForwardParams& params, at::ScalarType dtype);
  // Whether sequence_forward computes x·W_ihᵀ inside its steps for this case (nullptr: never), rather than
  // reading it from one GEMM over all rows that the driver runs first (see LstmSequenceForwardParams).
  bool (*sequence_forward_projects_input)(const LstmSequenceShape& shape);
  bool (*sequence_backward_supported)(const LstmSequenceShape& shape, at::ScalarType dtype);
  // W_hh [4H, H] in the layout sequence_backward reads (e.g. packed panels), made once per backward and
  // passed to each of its calls, one per block of steps, as LstmSequenceBackwardParams::weight_hh_prepared.
  at::Tensor (*sequence_backward_prepare_weight)(const at::Tensor& weight_hh);
  void (*sequence_backward)(const LstmSequenceBackwardParams& params, at::ScalarType dtype);
};

// Returns (output [N,P], h_n [B,P], c_n [B,H], gates [N,4H], cell_prev [N,H], proj_input [N,H]).
// The last three are what backward needs; they are empty tensors when save_for_backward is false,
// and proj_input is empty when there is no projection.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_forward(
    const at::Tensor& input,        // [N, C] time-major packed rows (padded input: N = T·B)
    const at::Tensor& batch_sizes,  // [T] int64 on CPU, non-increasing: rows active at each step
    const at::Tensor& h0,           // [B, P]
    const at::Tensor& c0,           // [B, H]
    const at::Tensor& weight_ih,    // [4H, C]
    const at::Tensor& weight_hh,    // [4H, P]
    const std::optional<at::Tensor>& bias,       // [4H] b_ih + b_hh
    const std::optional<at::Tensor>& weight_hr,  // [P, H] projection
    bool reverse, bool save_for_backward, const PointwiseBackend& backend);

// Returns (grad_input [N,C], grad_h0 [B,P], grad_c0 [B,H], grad_weight_ih [4H,C], grad_weight_hh [4H,P],
// grad_bias [4H] (empty without bias), grad_weight_hr [P,H] (empty without projection)). grad_input is
// empty unless compute_grad_input, and the weight and bias gradients are empty unless
// compute_grad_weights: when nothing needs them, their GEMMs (dx; dW_ih, dW_hh, dW_hr) are skipped.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward(
    const at::Tensor& grad_output,  // [N, P]
    const at::Tensor& grad_h_n,     // [B, P]
    const at::Tensor& grad_c_n,     // [B, H]
    const at::Tensor& input,        // [N, C]
    const at::Tensor& batch_sizes,  // [T]
    const at::Tensor& h0,           // [B, P]
    const at::Tensor& weight_ih,    // [4H, C]
    const at::Tensor& weight_hh,    // [4H, P]
    const std::optional<at::Tensor>& weight_hr,  // [P, H]
    const at::Tensor& output,       // [N, P] forward output
    const at::Tensor& gates,        // [N, 4H] saved activations
    const at::Tensor& cell_prev,    // [N, H] saved c_{t-1}, accumulation dtype
    const at::Tensor& proj_input,   // [N, H] saved o·tanh(c_t) when projecting, else empty
    bool reverse, bool has_bias, bool compute_grad_input, bool compute_grad_weights,
    const PointwiseBackend& backend);

}  // namespace fused_lstm
