// The LSTM pointwise math, written once for both backends (__host__ __device__ inline functions).
// Gate order is PyTorch's: i, f, g, o. All math runs in the accumulation type `acc_t`
// (float for fp16/bf16/fp32, double for fp64).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FL_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FL_HOST_DEVICE inline
#endif

namespace fused_lstm {
namespace math {

#if !defined(__CUDA_ARCH__)
// Host float exp as straight-line code so that the compiler vectorizes the pointwise loops (libm's
// expf is a call the loop cannot vectorize; with it the pointwise pass costs as much as the GEMMs).
// Range reduction x = n·ln2 + r with n rounded by the 1.5·2^23 trick (float→int conversions stop
// gcc's if-conversion), then a degree-6 polynomial for e^r on |r| <= ln2/2: within 2 ulp.
// NaN propagates (comparisons with NaN are false, so the clamps keep it). The upper clamp lies above
// ln(FLT_MAX) = 88.72 so that large arguments overflow to +inf as expf does (sigmoid(-inf) must be 0,
// not 4e-39, or a saturated gate times an infinite state gives inf instead of NaN); 2^n is applied
// in two halves because n = 128 does not fit the exponent field.
inline float host_expf(float x) {
  const float max_arg = 89.0f;
  const float min_arg = -87.3365447505531f;  // below it the result is under FLT_MIN; flushed to 0
  const bool underflow = x < min_arg;
  x = x > max_arg ? max_arg : x;
  x = x < min_arg ? min_arg : x;
  const float round_magic = 12582912.0f;  // adding 1.5·2^23 rounds to an integer kept in the low bits
  const float shifted = x * 1.44269504088896341f + round_magic;
  const float n_float = shifted - round_magic;
  int32_t shifted_bits, magic_bits;
  std::memcpy(&shifted_bits, &shifted, sizeof(shifted));
  std::memcpy(&magic_bits, &round_magic, sizeof(round_magic));
  const int32_t n = shifted_bits - magic_bits;
  float r = x - n_float * 0.693359375f;  // ln2 in two parts so that r stays exact
  r = r - n_float * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t n_low = n >> 1;  // n in [-126, 128]: both halves stay normal
  const int32_t scale_low_bits = (n_low + 127) << 23;
  const int32_t scale_high_bits = (n - n_low + 127) << 23;
  float scale_low, scale_high;
  std::memcpy(&scale_low, &scale_low_bits, sizeof(scale_low));
  std::memcpy(&scale_high, &scale_high_bits, sizeof(scale_high));
  const float result = p * scale_low * scale_high;
  return underflow ? 0.0f : result;
}

// Host float tanh: an odd polynomial near zero (where 1 - 2/(e^2x + 1) would cancel) and the
// exponential form elsewhere; both are evaluated and one is selected, so the loop stays branch-free.
inline float host_tanhf(float x) {
  const float ax = x < 0.0f ? -x : x;
  const float z = x * x;
  float small = -5.70498872745e-3f;
  small = small * z + 2.06390887954e-2f;
  small = small * z - 5.37397155531e-2f;
  small = small * z + 1.33314422036e-1f;
  small = small * z - 3.33332819422e-1f;
  small = small * z * x + x;
  const float large_abs = 1.0f - 2.0f / (host_expf(2.0f * ax) + 1.0f);
  const float large = x < 0.0f ? -large_abs : large_abs;
  // `ax < 0.625f` is false for NaN; the large branch then yields NaN too.
  return ax < 0.625f ? small : large;
}
#endif

FL_HOST_DEVICE float sigmoid(float x) {
#if defined(__CUDA_ARCH__)
  return 1.0f / (1.0f + expf(-x));
#else
  return 1.0f / (1.0f + host_expf(-x));
#endif
}

FL_HOST_DEVICE double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

FL_HOST_DEVICE float tanh_act(float x) {
#if defined(__CUDA_ARCH__)
  return tanhf(x);
#else
  return host_tanhf(x);
#endif
}

FL_HOST_DEVICE double tanh_act(double x) { return tanh(x); }

// One cell of one step. Inputs: gate pre-activations (biases included) and c_{t-1}.
// Outputs: the activated gates (saved for backward), c_t and h_t = o·tanh(c_t).
template <typename acc_t>
FL_HOST_DEVICE void cell_forward(acc_t pre_i, acc_t pre_f, acc_t pre_g, acc_t pre_o, acc_t cell_prev,
                                 acc_t& gate_i, acc_t& gate_f, acc_t& gate_g, acc_t& gate_o,
                                 acc_t& cell, acc_t& hidden) {
  gate_i = sigmoid(pre_i);
  gate_f = sigmoid(pre_f);
  gate_g = tanh_act(pre_g);
  gate_o = sigmoid(pre_o);
  cell = gate_f * cell_prev + gate_i * gate_g;
  hidden = gate_o * tanh_act(cell);
}

// Backward of cell_forward. c_t is recomputed from the saved gates and c_{t-1} rather than stored.
// grad_hidden is dL/dh_t, grad_cell_next is dL/dc_t arriving from step t+1.
template <typename acc_t>
FL_HOST_DEVICE void cell_backward(acc_t gate_i, acc_t gate_f, acc_t gate_g, acc_t gate_o, acc_t cell_prev,
                                  acc_t grad_hidden, acc_t grad_cell_next,
                                  acc_t& grad_pre_i, acc_t& grad_pre_f, acc_t& grad_pre_g, acc_t& grad_pre_o,
                                  acc_t& grad_cell_prev) {
  const acc_t one = acc_t(1);
  const acc_t cell = gate_f * cell_prev + gate_i * gate_g;
  const acc_t tanh_cell = tanh_act(cell);
  const acc_t grad_cell = grad_cell_next + grad_hidden * gate_o * (one - tanh_cell * tanh_cell);
  grad_pre_i = grad_cell * gate_g * gate_i * (one - gate_i);
  grad_pre_f = grad_cell * cell_prev * gate_f * (one - gate_f);
  grad_pre_g = grad_cell * gate_i * (one - gate_g * gate_g);
  grad_pre_o = grad_hidden * tanh_cell * gate_o * (one - gate_o);
  grad_cell_prev = grad_cell * gate_f;
}

}  // namespace math
}  // namespace fused_lstm
