// The sequence loop of one LSTM layer in one direction, written once for every backend: the GEMMs
// go through ATen (MKL/oneDNN on CPU, cuBLAS on the current CUDA stream), and the fused pointwise
// passes are the backend's. Letters: T steps, B batch, N rows of the packed sequence (sum of the
// per-step batch sizes), C input features, H hidden size, P output size (proj_size, or H).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <tuple>

#include "params.h"

namespace fused_lstm {

// What a device gives the LSTM drivers, filled by member name; hooks left nullptr are never called.
//  - forward / backward: the fused pointwise passes of one step (required); each dispatches on `dtype` and
//    runs on the current stream of its device.
//  - the whole-recurrence hooks (the CUDA persistent kernel, the CPU's register and AMX tiles): when
//    recurrence_forward_kernel names a kernel for a case (nullptr: none), the layer driver runs
//    recurrence_forward instead of its per-step GEMM + pointwise loop, and likewise for the backward; each
//    writes the same tensors as the loop it replaces, so either backward follows either forward.
//  - the fused cell (the CPU's, for small batches): one step of the cell with its GEMMs in one call, for the
//    cell op and one-step layers, when cell_forward_supported says yes.
struct LstmBackend {
  void (*forward)(const LstmForwardPointwiseParams& params, at::ScalarType dtype) = nullptr;
  void (*backward)(const LstmBackwardPointwiseParams& params, at::ScalarType dtype) = nullptr;
  RecurrenceKernel (*recurrence_forward_kernel)(const LstmRecurrenceShape& shape, at::ScalarType dtype) = nullptr;
  void (*recurrence_forward)(const LstmRecurrenceForwardParams& params, at::ScalarType dtype,
                             const RecurrenceKernel& kernel) = nullptr;
  // Whether recurrence_forward computes x·W_ihᵀ inside its steps for this case (nullptr: never), rather than
  // reading it from one GEMM over all rows that the driver runs first (see LstmRecurrenceForwardParams).
  bool (*recurrence_forward_projects_input)(const LstmRecurrenceShape& shape, at::ScalarType dtype) = nullptr;
  RecurrenceKernel (*recurrence_backward_kernel)(const LstmRecurrenceShape& shape, at::ScalarType dtype) = nullptr;
  // W_hh [4H, H] in the layout recurrence_backward reads (e.g. packed panels), made once per backward and
  // passed to each of its calls, one per block of steps, as LstmRecurrenceBackwardParams::weight_hh_prepared.
  at::Tensor (*recurrence_backward_prepare_weight)(const at::Tensor& weight_hh, const RecurrenceKernel& kernel) = nullptr;
  void (*recurrence_backward)(const LstmRecurrenceBackwardParams& params, at::ScalarType dtype,
                              const RecurrenceKernel& kernel) = nullptr;
  bool (*cell_forward_supported)(int64_t batch, int64_t input_size, int64_t hidden, at::ScalarType dtype) = nullptr;
  void (*cell_forward)(const LstmCellForwardParams& params, at::ScalarType dtype) = nullptr;
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
    const std::optional<at::Tensor>& bias_ih,    // [4H] (both biases or neither; summed once per call)
    const std::optional<at::Tensor>& bias_hh,    // [4H]
    const std::optional<at::Tensor>& weight_hr,  // [P, H] projection
    bool reverse, bool save_for_backward, const LstmBackend& backend);

// Returns (grad_input [N,C], grad_h0 [B,P], grad_c0 [B,H], grad_weight_ih [4H,C], grad_weight_hh [4H,P],
// grad_bias [4H]: the gradient of b_ih and of b_hh alike (empty without biases), grad_weight_hr [P,H] (empty without projection)). grad_input is
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
    const LstmBackend& backend);

// The paths lstm_layer_forward and lstm_layer_backward take for these arguments (shapes as there):
// (forward, backward), each "fused cell" (forward of one unprojected step), "whole recurrence (<kernel>)" or
// "per step". The layer_paths op.
std::tuple<std::string, std::string> lstm_layer_paths(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const std::optional<at::Tensor>& weight_hr, const LstmBackend& backend);

// The gates of an LSTM: i, f, g, o.
constexpr int64_t kLstmGates = 4;

// One step on the backend's fused cell (the caller checked that it serves these sizes; lstm_cell.cpp), for the
// cell op and a one-step layer: bias_ih and bias_hh may be undefined (a layer passes b_ih + b_hh as bias_ih).
struct FusedCellStep {
  at::Tensor h1;     // [B, H]
  at::Tensor c1;     // [B, H] in the accumulation dtype
  at::Tensor gates;  // [B, 4H] activations when saving, else [0, 4H]
  at::Tensor c0;     // [B, H] c0 in the accumulation dtype, contiguous
};
FusedCellStep run_fused_lstm_cell(const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
                                  const at::Tensor& weight_ih, const at::Tensor& weight_hh, const at::Tensor& bias_ih,
                                  const at::Tensor& bias_hh, bool save_for_backward, const LstmBackend& backend);

// One step of an LSTM cell (LSTMCell): returns (h1 [B,H], c1 [B,H], gates [B,4H]); gates, the activations
// backward needs, is empty unless save_for_backward.
std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_cell_forward(
    const at::Tensor& input,      // [B, C]
    const at::Tensor& h0,         // [B, H]
    const at::Tensor& c0,         // [B, H]
    const at::Tensor& weight_ih,  // [4H, C]
    const at::Tensor& weight_hh,  // [4H, H]
    const std::optional<at::Tensor>& bias_ih,  // [4H]
    const std::optional<at::Tensor>& bias_hh,  // [4H]
    bool save_for_backward, const LstmBackend& backend);

// Returns (grad_input [B,C], grad_h0 [B,H], grad_c0 [B,H], grad_weight_ih [4H,C], grad_weight_hh [4H,H],
// grad_bias [4H]: the gradient of b_ih and of b_hh alike); grad_input is empty unless compute_grad_input, the
// weight and bias gradients unless compute_grad_weights, the bias gradient without a bias.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_cell_backward(
    const at::Tensor& grad_h1,    // [B, H]
    const at::Tensor& grad_c1,    // [B, H]
    const at::Tensor& input,      // [B, C]
    const at::Tensor& h0,         // [B, H]
    const at::Tensor& c0,         // [B, H]
    const at::Tensor& weight_ih,  // [4H, C]
    const at::Tensor& weight_hh,  // [4H, H]
    const at::Tensor& gates,      // [B, 4H] saved activations
    bool has_bias, bool compute_grad_input, bool compute_grad_weights, const LstmBackend& backend);

}  // namespace fused_lstm
