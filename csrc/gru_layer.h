// The sequence loop of one GRU layer in one direction, on the same pattern as lstm_layer.h: GEMMs
// through ATen, one fused pointwise pass per step from the backend. Letters: T steps, B batch,
// N packed rows, C input features, H hidden size.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <tuple>

#include "params.h"

namespace fused_lstm {

// What a device gives the GRU drivers, filled by member name (see LstmBackend): the fused pointwise passes of
// one step (required) and, optionally, the fused cell for small batches.
struct GruBackend {
  void (*forward)(const GruForwardPointwiseParams& params, at::ScalarType dtype) = nullptr;
  void (*backward)(const GruBackwardPointwiseParams& params, at::ScalarType dtype) = nullptr;
  bool (*cell_forward_supported)(int64_t batch, int64_t input_size, int64_t hidden, at::ScalarType dtype) = nullptr;
  void (*cell_forward)(const GruCellForwardParams& params, at::ScalarType dtype) = nullptr;
};

// Returns (output [N,H], h_n [B,H], gates [N,3H], candidate_hidden [N,H]); the last two are what
// backward needs and are empty when save_for_backward is false.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_layer_forward(
    const at::Tensor& input,        // [N, C] time-major packed rows
    const at::Tensor& batch_sizes,  // [T] int64 on CPU, non-increasing
    const at::Tensor& h0,           // [B, H]
    const at::Tensor& weight_ih,    // [3H, C]
    const at::Tensor& weight_hh,    // [3H, H]
    const std::optional<at::Tensor>& bias_ih,  // [3H]
    const std::optional<at::Tensor>& bias_hh,  // [3H]
    bool reverse, bool save_for_backward, const GruBackend& backend);

// Returns (grad_input [N,C], grad_h0 [B,H], grad_weight_ih [3H,C], grad_weight_hh [3H,H],
// grad_bias_ih [3H], grad_bias_hh [3H]); the bias gradients are empty without bias, grad_input unless
// compute_grad_input, and the weight and bias gradients unless compute_grad_weights.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_layer_backward(
    const at::Tensor& grad_output,       // [N, H]
    const at::Tensor& grad_h_n,          // [B, H]
    const at::Tensor& input,             // [N, C]
    const at::Tensor& batch_sizes,       // [T]
    const at::Tensor& h0,                // [B, H]
    const at::Tensor& weight_ih,         // [3H, C]
    const at::Tensor& weight_hh,         // [3H, H]
    const at::Tensor& output,            // [N, H] forward output
    const at::Tensor& gates,             // [N, 3H] saved r, z, n
    const at::Tensor& candidate_hidden,  // [N, H] saved h_n + b_hn
    bool reverse, bool has_bias, bool compute_grad_input, bool compute_grad_weights,
    const GruBackend& backend);

// The paths gru_layer_forward and gru_layer_backward take (as lstm_layer_paths): "fused cell" or "per step".
std::tuple<std::string, std::string> gru_layer_paths(const at::Tensor& input, const at::Tensor& batch_sizes,
                                                     const at::Tensor& h0, const at::Tensor& weight_ih,
                                                     const at::Tensor& weight_hh, const GruBackend& backend);

// One step of a GRU cell (GRUCell): returns (h1 [B,H], gates [B,3H], candidate_hidden [B,H]); the last two,
// what backward needs, are empty unless save_for_backward.
std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_cell_forward(
    const at::Tensor& input,      // [B, C]
    const at::Tensor& h0,         // [B, H]
    const at::Tensor& weight_ih,  // [3H, C]
    const at::Tensor& weight_hh,  // [3H, H]
    const std::optional<at::Tensor>& bias_ih,  // [3H]
    const std::optional<at::Tensor>& bias_hh,  // [3H]
    bool save_for_backward, const GruBackend& backend);

// Returns (grad_input [B,C], grad_h0 [B,H], grad_weight_ih [3H,C], grad_weight_hh [3H,H], grad_bias_ih [3H],
// grad_bias_hh [3H]), empty where not asked for (as lstm_cell_backward).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_cell_backward(
    const at::Tensor& grad_h1,           // [B, H]
    const at::Tensor& input,             // [B, C]
    const at::Tensor& h0,                // [B, H]
    const at::Tensor& weight_ih,         // [3H, C]
    const at::Tensor& weight_hh,         // [3H, H]
    const at::Tensor& gates,             // [B, 3H] saved r, z, n
    const at::Tensor& candidate_hidden,  // [B, H] saved h0·W_hnᵀ + b_hn
    bool has_bias, bool compute_grad_input, bool compute_grad_weights, const GruBackend& backend);

}  // namespace fused_lstm
