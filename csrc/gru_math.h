// The GRU pointwise math, shared by both backends. Gate order is PyTorch's: r, z, n, with b_hn inside
// the reset product.
#pragma once

#include "lstm_math.h"

namespace fused_lstm {
namespace math {

// Inputs: pre-activations of r and z (both biases included), the input part of n (x_n + b_in), the
// recurrent part of n (h_n + b_hn) and h_{t-1}. Outputs: the activated gates and h_t.
template <typename acc_t>
FL_HOST_DEVICE void gru_cell_forward(acc_t pre_r, acc_t pre_z, acc_t input_n, acc_t candidate_hidden,
                                     acc_t hidden_prev, acc_t& gate_r, acc_t& gate_z, acc_t& gate_n,
                                     acc_t& hidden) {
  gate_r = sigmoid(pre_r);
  gate_z = sigmoid(pre_z);
  gate_n = tanh_act(input_n + gate_r * candidate_hidden);
  hidden = gate_n + gate_z * (hidden_prev - gate_n);
}

// Backward of gru_cell_forward for dL/dh_t = grad_hidden. grad_hidden_prev is only the direct part
// z·dL/dh_t; the part through W_hh is a GEMM of grad_hidden_* afterwards.
template <typename acc_t>
FL_HOST_DEVICE void gru_cell_backward(acc_t gate_r, acc_t gate_z, acc_t gate_n, acc_t candidate_hidden,
                                      acc_t hidden_prev, acc_t grad_hidden, acc_t& grad_pre_r,
                                      acc_t& grad_pre_z, acc_t& grad_input_n, acc_t& grad_candidate_hidden,
                                      acc_t& grad_hidden_prev) {
  const acc_t one = acc_t(1);
  const acc_t grad_n = grad_hidden * (one - gate_z);
  const acc_t grad_z = grad_hidden * (hidden_prev - gate_n);
  grad_input_n = grad_n * (one - gate_n * gate_n);
  const acc_t grad_r = grad_input_n * candidate_hidden;
  grad_pre_r = grad_r * gate_r * (one - gate_r);
  grad_pre_z = grad_z * gate_z * (one - gate_z);
  grad_candidate_hidden = grad_input_n * gate_r;
  grad_hidden_prev = grad_hidden * gate_z;
}

}  // namespace math
}  // namespace fused_lstm
