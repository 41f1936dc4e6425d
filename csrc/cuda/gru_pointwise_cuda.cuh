// The fused pointwise passes of one GRU step on the GPU, templated on the element type. Included only
// by the per-dtype pointwise_<dtype>.cu files, which instantiate the launchers.
// Letters: R rows active at this step (b_t), H hidden size, V elements per thread (kVec).
//
// A thread does the three gates (r, z, n) of its V hidden units (layout and launch shape in
// pointwise_cuda_common.cuh). All math runs in acc_t (float for fp16/bf16) through gru_math.h, the
// same functions the CPU pass uses; the hidden state itself is kept in scalar_t, as on the CPU.
#pragma once

#include "../gru_math.h"
#include "../params.h"
#include "pointwise_cuda.h"
#include "pointwise_cuda_common.cuh"

namespace fused_lstm {
namespace cuda {
namespace detail {

constexpr int kGruGates = 3;

template <typename scalar_t, typename acc_t, int kVec>
__global__ void __launch_bounds__(kThreadsPerBlock) gru_forward_pointwise_kernel(
    int64_t rows,                                      // R
    int64_t hidden,                                    // H, a multiple of V
    scalar_t* __restrict__ gates,                      // [R, 3H] in: x·W_ihᵀ; out: r, z, n
    const scalar_t* __restrict__ hidden_gates,         // [R, 3H] h_{t-1}·W_hhᵀ
    const scalar_t* __restrict__ bias_ih,              // [3H]
    const scalar_t* __restrict__ bias_hh,              // [3H]
    scalar_t* __restrict__ hidden_state,               // [R, H] in: h_{t-1}; out: h_t
    scalar_t* __restrict__ hidden_out,                 // [R, H] out: h_t
    scalar_t* __restrict__ candidate_hidden_saved) {  // [R, H] out: h_n + b_hn; nullptr when not saved
  const int64_t gate_row_stride = kGruGates * hidden;
  for_each_pack<kVec>(rows, hidden, [=](int64_t row, int64_t column) {
    const int64_t gate_offset = row * gate_row_stride + column;
    const int64_t state_offset = row * hidden + column;
    Pack<scalar_t, kVec> input_part[kGruGates], hidden_part[kGruGates];  // input_part: in x·W_ihᵀ, out r, z, n
    // The biases are reloaded per row (from L1): held across rows they would cost registers and occupancy.
    Pack<scalar_t, kVec> input_bias[kGruGates], hidden_bias[kGruGates];
#pragma unroll
    for (int gate = 0; gate < kGruGates; ++gate) {
      input_part[gate] = load_pack<kVec>(gates + gate_offset + gate * hidden);
      hidden_part[gate] = load_pack<kVec>(hidden_gates + gate_offset + gate * hidden);
      input_bias[gate] = load_pack<kVec>(bias_ih + gate * hidden + column);
      hidden_bias[gate] = load_pack<kVec>(bias_hh + gate * hidden + column);
    }
    Pack<scalar_t, kVec> hidden_values = load_pack<kVec>(hidden_state + state_offset);  // h_{t-1} in, h_t out
    Pack<scalar_t, kVec> candidate_values;

#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const auto sum = [&](int gate) {  // both GEMM parts and both biases of gate r or z
        return static_cast<acc_t>(input_part[gate].value[k]) + static_cast<acc_t>(hidden_part[gate].value[k]) +
               static_cast<acc_t>(input_bias[gate].value[k]) + static_cast<acc_t>(hidden_bias[gate].value[k]);
      };
      const acc_t candidate = static_cast<acc_t>(hidden_part[2].value[k]) + static_cast<acc_t>(hidden_bias[2].value[k]);
      const acc_t input_n = static_cast<acc_t>(input_part[2].value[k]) + static_cast<acc_t>(input_bias[2].value[k]);
      acc_t gate_r, gate_z, gate_n, hidden_value;
      math::gru_cell_forward<acc_t>(sum(0), sum(1), input_n, candidate, static_cast<acc_t>(hidden_values.value[k]),
                                    gate_r, gate_z, gate_n, hidden_value);
      input_part[0].value[k] = static_cast<scalar_t>(gate_r);
      input_part[1].value[k] = static_cast<scalar_t>(gate_z);
      input_part[2].value[k] = static_cast<scalar_t>(gate_n);
      hidden_values.value[k] = static_cast<scalar_t>(hidden_value);
      candidate_values.value[k] = static_cast<scalar_t>(candidate);
    }

#pragma unroll
    for (int gate = 0; gate < kGruGates; ++gate) store_pack(gates + gate_offset + gate * hidden, input_part[gate]);
    store_pack(hidden_state + state_offset, hidden_values);
    store_pack(hidden_out + state_offset, hidden_values);
    if (candidate_hidden_saved != nullptr) store_pack(candidate_hidden_saved + state_offset, candidate_values);
  });
}

template <typename scalar_t, typename acc_t, int kVec>
__global__ void __launch_bounds__(kThreadsPerBlock) gru_backward_pointwise_kernel(
    int64_t rows,                                    // R
    int64_t hidden,                                  // H, a multiple of V
    const scalar_t* __restrict__ gates,              // [R, 3H] r, z, n saved by forward
    const scalar_t* __restrict__ candidate_hidden,   // [R, H] h_n + b_hn saved by forward
    const scalar_t* __restrict__ hidden_prev,        // [R, H] h_{t-1}
    const scalar_t* __restrict__ grad_output,        // [R, H] dL/dh_t from the layer output
    scalar_t* __restrict__ grad_hidden,              // [R, H] in: dL/dh_t through the recurrence; out: z·dL/dh_t
    scalar_t* __restrict__ grad_gates,               // [R, 3H] out: dL/d(x·W_ihᵀ + b_ih)
    scalar_t* __restrict__ grad_hidden_gates) {      // [R, 3H] out: dL/d(h·W_hhᵀ + b_hh)
  const int64_t gate_row_stride = kGruGates * hidden;
  for_each_pack<kVec>(rows, hidden, [=](int64_t row, int64_t column) {
    const int64_t gate_offset = row * gate_row_stride + column;
    const int64_t state_offset = row * hidden + column;
    Pack<scalar_t, kVec> gate_values[kGruGates];  // saved r, z, n in; gradients of the input part out
#pragma unroll
    for (int gate = 0; gate < kGruGates; ++gate) gate_values[gate] = load_pack<kVec>(gates + gate_offset + gate * hidden);
    const Pack<scalar_t, kVec> candidate_values = load_pack<kVec>(candidate_hidden + state_offset);
    const Pack<scalar_t, kVec> hidden_prev_values = load_pack<kVec>(hidden_prev + state_offset);
    const Pack<scalar_t, kVec> grad_output_values = load_pack<kVec>(grad_output + state_offset);
    Pack<scalar_t, kVec> grad_hidden_values = load_pack<kVec>(grad_hidden + state_offset);
    Pack<scalar_t, kVec> grad_candidate_values;

#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      acc_t grad_r, grad_z, grad_input_n, grad_candidate, grad_hidden_prev;
      math::gru_cell_backward<acc_t>(
          static_cast<acc_t>(gate_values[0].value[k]), static_cast<acc_t>(gate_values[1].value[k]),
          static_cast<acc_t>(gate_values[2].value[k]), static_cast<acc_t>(candidate_values.value[k]),
          static_cast<acc_t>(hidden_prev_values.value[k]),
          static_cast<acc_t>(grad_output_values.value[k]) + static_cast<acc_t>(grad_hidden_values.value[k]),
          grad_r, grad_z, grad_input_n, grad_candidate, grad_hidden_prev);
      gate_values[0].value[k] = static_cast<scalar_t>(grad_r);
      gate_values[1].value[k] = static_cast<scalar_t>(grad_z);
      gate_values[2].value[k] = static_cast<scalar_t>(grad_input_n);
      grad_candidate_values.value[k] = static_cast<scalar_t>(grad_candidate);
      grad_hidden_values.value[k] = static_cast<scalar_t>(grad_hidden_prev);
    }

#pragma unroll
    for (int gate = 0; gate < kGruGates; ++gate) store_pack(grad_gates + gate_offset + gate * hidden, gate_values[gate]);
    // The hidden part shares r's and z's gradients; its n part is the gradient of h_n + b_hn.
    store_pack(grad_hidden_gates + gate_offset, gate_values[0]);
    store_pack(grad_hidden_gates + gate_offset + hidden, gate_values[1]);
    store_pack(grad_hidden_gates + gate_offset + 2 * hidden, grad_candidate_values);
    store_pack(grad_hidden + state_offset, grad_hidden_values);
  });
}

}  // namespace detail

template <typename scalar_t>
void launch_gru_forward_pointwise(const GruForwardPointwiseParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  detail::launch_vector_or_scalar<scalar_t>(
      p.rows, p.hidden,
      {p.gates, p.hidden_gates, p.bias_ih, p.bias_hh, p.hidden_state, p.hidden_out, p.candidate_hidden_saved},
      [&](auto vector, const detail::LaunchShape& shape) {
        launch_kernel(&detail::gru_forward_pointwise_kernel<scalar_t, acc_t, decltype(vector)::value>, shape.grid,
                      shape.block, 0, p.rows, p.hidden, static_cast<scalar_t*>(p.gates),
                      static_cast<const scalar_t*>(p.hidden_gates), static_cast<const scalar_t*>(p.bias_ih),
                      static_cast<const scalar_t*>(p.bias_hh), static_cast<scalar_t*>(p.hidden_state),
                      static_cast<scalar_t*>(p.hidden_out), static_cast<scalar_t*>(p.candidate_hidden_saved));
      });
}

template <typename scalar_t>
void launch_gru_backward_pointwise(const GruBackwardPointwiseParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  detail::launch_vector_or_scalar<scalar_t>(
      p.rows, p.hidden,
      {p.gates, p.candidate_hidden, p.hidden_prev, p.grad_output, p.grad_hidden, p.grad_gates, p.grad_hidden_gates},
      [&](auto vector, const detail::LaunchShape& shape) {
        launch_kernel(&detail::gru_backward_pointwise_kernel<scalar_t, acc_t, decltype(vector)::value>, shape.grid,
                      shape.block, 0, p.rows, p.hidden, static_cast<const scalar_t*>(p.gates),
                      static_cast<const scalar_t*>(p.candidate_hidden), static_cast<const scalar_t*>(p.hidden_prev),
                      static_cast<const scalar_t*>(p.grad_output), static_cast<scalar_t*>(p.grad_hidden),
                      static_cast<scalar_t*>(p.grad_gates), static_cast<scalar_t*>(p.grad_hidden_gates));
      });
}

}  // namespace cuda
}  // namespace fused_lstm
