// The sequence loop of one GRU layer in one direction, on the same pattern as lstm_layer.h: GEMMs
// through ATen, one fused pointwise pass per step from the backend. Letters: T steps, B batch,
// N packed rows, C input features, H hidden size.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "lstm_params.h"

namespace fused_lstm {

struct GruPointwiseBackend {
  void (*forward)(const GruForwardPointwiseParams& params, at::ScalarType dtype);
  void (*backward)(const GruBackwardPointwiseParams& params, at::ScalarType dtype);
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
    bool reverse, bool save_for_backward, const GruPointwiseBackend& backend);

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
    const GruPointwiseBackend& backend);

}  // namespace fused_lstm
