// The fused pointwise passes of one LSTM step on the GPU, templated on the element type. Included only
// by the per-dtype pointwise_<dtype>.cu files, which instantiate the launchers.
// Letters: R rows active at this step (b_t), H hidden size, V elements per thread (kVec).
//
// A thread does all four gates of its V hidden units: 4 gate reads and writes, the cell read and
// written, h written (layout and launch shape in pointwise_cuda_common.cuh). All math runs in acc_t
// (float for fp16/bf16) through lstm_math.h, the same functions the CPU pass uses.
#pragma once

#include "../lstm_math.h"
#include "../params.h"
#include "pointwise_cuda.h"
#include "pointwise_cuda_common.cuh"

namespace fused_lstm {
namespace cuda {
namespace detail {

constexpr int kLstmGates = 4;

template <typename scalar_t, typename acc_t, int kVec>
__global__ void __launch_bounds__(kThreadsPerBlock) lstm_forward_pointwise_kernel(
    int64_t rows,                           // R
    int64_t hidden,                         // H, a multiple of V
    scalar_t* __restrict__ gates,           // [R, 4H] in: x·W_ihᵀ + h·W_hhᵀ; out: σ(i), σ(f), tanh(g), σ(o)
    const scalar_t* __restrict__ bias,      // [4H] b_ih + b_hh
    acc_t* __restrict__ cell,               // [R, H] in: c_{t-1}; out: c_t
    acc_t* __restrict__ cell_prev_saved,    // [R, H] out: c_{t-1}; nullptr when not saved
    scalar_t* __restrict__ hidden_out,      // [R, H] out: h_t = o·tanh(c_t)
    scalar_t* __restrict__ hidden_state) {  // [R, H] out: h_t again; nullptr when not wanted
  const int64_t gate_row_stride = kLstmGates * hidden;
  for_each_pack<kVec>(rows, hidden, [=](int64_t row, int64_t column) {
    scalar_t* row_gates = gates + row * gate_row_stride + column;
    const int64_t state_offset = row * hidden + column;
    Pack<scalar_t, kVec> gate_values[kLstmGates];  // pre-activations in, activations out
    // The bias is reloaded per row (from L1): held across rows it would cost registers and occupancy.
    Pack<scalar_t, kVec> gate_bias[kLstmGates];
#pragma unroll
    for (int gate = 0; gate < kLstmGates; ++gate) {
      gate_values[gate] = load_pack<kVec>(row_gates + gate * hidden);
      gate_bias[gate] = load_pack<kVec>(bias + gate * hidden + column);
    }
    const Pack<acc_t, kVec> cell_prev = load_pack<kVec>(cell + state_offset);
    if (cell_prev_saved != nullptr) store_pack(cell_prev_saved + state_offset, cell_prev);

    Pack<acc_t, kVec> cell_next;
    Pack<scalar_t, kVec> hidden_next;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      acc_t pre[kLstmGates], activation[kLstmGates], hidden_value;
#pragma unroll
      for (int gate = 0; gate < kLstmGates; ++gate) {
        pre[gate] = static_cast<acc_t>(gate_values[gate].value[k]) + static_cast<acc_t>(gate_bias[gate].value[k]);
      }
      math::cell_forward<acc_t>(pre[0], pre[1], pre[2], pre[3], cell_prev.value[k], activation[0], activation[1],
                                activation[2], activation[3], cell_next.value[k], hidden_value);
#pragma unroll
      for (int gate = 0; gate < kLstmGates; ++gate) gate_values[gate].value[k] = static_cast<scalar_t>(activation[gate]);
      hidden_next.value[k] = static_cast<scalar_t>(hidden_value);
    }

#pragma unroll
    for (int gate = 0; gate < kLstmGates; ++gate) store_pack(row_gates + gate * hidden, gate_values[gate]);
    store_pack(cell + state_offset, cell_next);
    store_pack(hidden_out + state_offset, hidden_next);
    if (hidden_state != nullptr) store_pack(hidden_state + state_offset, hidden_next);
  });
}

template <typename scalar_t, typename acc_t, int kVec>
__global__ void __launch_bounds__(kThreadsPerBlock) lstm_backward_pointwise_kernel(
    int64_t rows,                                // R
    int64_t hidden,                              // H, a multiple of V
    const scalar_t* __restrict__ gates,          // [R, 4H] activations saved by forward
    const acc_t* __restrict__ cell_prev,         // [R, H] c_{t-1} saved by forward
    const scalar_t* __restrict__ grad_hidden,    // [R, H] dL/dh_t (first term)
    const scalar_t* __restrict__ grad_hidden_2,  // [R, H] dL/dh_t (second term); nullptr when absent
    acc_t* __restrict__ grad_cell,               // [R, H] in: dL/dc_t; out: dL/dc_{t-1}
    scalar_t* __restrict__ grad_gates) {         // [R, 4H] out: dL/d(pre-activations)
  const int64_t gate_row_stride = kLstmGates * hidden;
  for_each_pack<kVec>(rows, hidden, [=](int64_t row, int64_t column) {
    const int64_t gate_offset = row * gate_row_stride + column;
    const int64_t state_offset = row * hidden + column;
    Pack<scalar_t, kVec> gate_values[kLstmGates];  // saved activations in, gradients out
#pragma unroll
    for (int gate = 0; gate < kLstmGates; ++gate) gate_values[gate] = load_pack<kVec>(gates + gate_offset + gate * hidden);
    const Pack<acc_t, kVec> cell_prev_values = load_pack<kVec>(cell_prev + state_offset);
    const Pack<scalar_t, kVec> grad_hidden_values = load_pack<kVec>(grad_hidden + state_offset);
    Pack<scalar_t, kVec> grad_hidden_2_values;
    if (grad_hidden_2 != nullptr) grad_hidden_2_values = load_pack<kVec>(grad_hidden_2 + state_offset);
    Pack<acc_t, kVec> grad_cell_values = load_pack<kVec>(grad_cell + state_offset);

#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      acc_t activation[kLstmGates], grad_pre[kLstmGates];
#pragma unroll
      for (int gate = 0; gate < kLstmGates; ++gate) activation[gate] = static_cast<acc_t>(gate_values[gate].value[k]);
      acc_t total_grad_hidden = static_cast<acc_t>(grad_hidden_values.value[k]);
      if (grad_hidden_2 != nullptr) total_grad_hidden += static_cast<acc_t>(grad_hidden_2_values.value[k]);
      math::cell_backward<acc_t>(activation[0], activation[1], activation[2], activation[3],
                                 cell_prev_values.value[k], total_grad_hidden, grad_cell_values.value[k],
                                 grad_pre[0], grad_pre[1], grad_pre[2], grad_pre[3], grad_cell_values.value[k]);
#pragma unroll
      for (int gate = 0; gate < kLstmGates; ++gate) gate_values[gate].value[k] = static_cast<scalar_t>(grad_pre[gate]);
    }

#pragma unroll
    for (int gate = 0; gate < kLstmGates; ++gate) {
      store_pack(grad_gates + gate_offset + gate * hidden, gate_values[gate]);
    }
    store_pack(grad_cell + state_offset, grad_cell_values);
  });
}

}  // namespace detail

template <typename scalar_t>
void launch_forward_pointwise(const LstmForwardPointwiseParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  detail::launch_vector_or_scalar<scalar_t>(
      p.rows, p.hidden, {p.gates, p.bias, p.cell, p.cell_prev_saved, p.hidden_out, p.hidden_state},
      [&](auto vector, const detail::LaunchShape& shape) {
        launch_kernel(&detail::lstm_forward_pointwise_kernel<scalar_t, acc_t, decltype(vector)::value>, shape.grid,
                      shape.block, 0, p.rows, p.hidden, static_cast<scalar_t*>(p.gates),
                      static_cast<const scalar_t*>(p.bias), static_cast<acc_t*>(p.cell),
                      static_cast<acc_t*>(p.cell_prev_saved), static_cast<scalar_t*>(p.hidden_out),
                      static_cast<scalar_t*>(p.hidden_state));
      });
}

template <typename scalar_t>
void launch_backward_pointwise(const LstmBackwardPointwiseParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  detail::launch_vector_or_scalar<scalar_t>(
      p.rows, p.hidden, {p.gates, p.cell_prev, p.grad_hidden, p.grad_hidden_2, p.grad_cell, p.grad_gates},
      [&](auto vector, const detail::LaunchShape& shape) {
        launch_kernel(&detail::lstm_backward_pointwise_kernel<scalar_t, acc_t, decltype(vector)::value>, shape.grid,
                      shape.block, 0, p.rows, p.hidden, static_cast<const scalar_t*>(p.gates),
                      static_cast<const acc_t*>(p.cell_prev), static_cast<const scalar_t*>(p.grad_hidden),
                      static_cast<const scalar_t*>(p.grad_hidden_2), static_cast<acc_t*>(p.grad_cell),
                      static_cast<scalar_t*>(p.grad_gates));
      });
}

}  // namespace cuda
}  // namespace fused_lstm
