#include "pointwise_cpu.h"

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "../dtype_dispatch.h"
#include "../gru_math.h"
#include "../lstm_math.h"
#include "clones.h"
#include "parallel.h"

namespace fused_lstm {
namespace cpu {
namespace {

// Enough elements per task that thread hand-off (a few µs) stays small against the math (~4-6 ns
// per element on one core): a B=32, H=256 step already splits over two threads.
constexpr int64_t kElementsPerTask = 4096;

int64_t rows_per_task(int64_t hidden) { return std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(1, hidden)); }

// The rows below read and write scalar_t and compute in acc_t (float for float16/bfloat16, as on CUDA; the
// LSTM cell state and its gradient are acc_t throughout). Each inner loop is branch-free so that the
// compiler vectorizes it.
template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

template <typename scalar_t, typename acc_t = acc_type<scalar_t>>
inline void forward_row(int64_t H, scalar_t* __restrict gates, const scalar_t* __restrict bias, acc_t* __restrict cell,
                        scalar_t* __restrict hidden_out) {
  for (int64_t j = 0; j < H; ++j) {
    acc_t pre[4];
    for (int g = 0; g < 4; ++g) pre[g] = acc_t(gates[g * H + j]) + acc_t(bias[g * H + j]);
    acc_t gate_i, gate_f, gate_g, gate_o, cell_next, hidden;
    math::cell_forward<acc_t>(pre[0], pre[1], pre[2], pre[3], cell[j], gate_i, gate_f, gate_g, gate_o, cell_next,
                              hidden);
    gates[j] = scalar_t(gate_i);
    gates[H + j] = scalar_t(gate_f);
    gates[2 * H + j] = scalar_t(gate_g);
    gates[3 * H + j] = scalar_t(gate_o);
    cell[j] = cell_next;
    hidden_out[j] = scalar_t(hidden);
  }
}

template <typename scalar_t, typename acc_t = acc_type<scalar_t>>
inline void backward_row(int64_t H, const scalar_t* __restrict gates, const acc_t* __restrict cell_prev,
                         const scalar_t* __restrict grad_hidden, const scalar_t* __restrict grad_hidden_2,
                         acc_t* __restrict grad_cell, scalar_t* __restrict grad_gates) {
  for (int64_t j = 0; j < H; ++j) {
    acc_t grad_i, grad_f, grad_g, grad_o, grad_cell_prev;
    math::cell_backward<acc_t>(acc_t(gates[j]), acc_t(gates[H + j]), acc_t(gates[2 * H + j]),
                               acc_t(gates[3 * H + j]), cell_prev[j], acc_t(grad_hidden[j]) + acc_t(grad_hidden_2[j]),
                               grad_cell[j], grad_i, grad_f, grad_g, grad_o, grad_cell_prev);
    grad_gates[j] = scalar_t(grad_i);
    grad_gates[H + j] = scalar_t(grad_f);
    grad_gates[2 * H + j] = scalar_t(grad_g);
    grad_gates[3 * H + j] = scalar_t(grad_o);
    grad_cell[j] = grad_cell_prev;
  }
}

template <typename scalar_t, typename acc_t = acc_type<scalar_t>>
inline void gru_forward_row(int64_t H, scalar_t* __restrict gates, const scalar_t* __restrict hidden_gates,
                            const scalar_t* __restrict bias_ih, const scalar_t* __restrict bias_hh,
                            scalar_t* __restrict hidden_state, scalar_t* __restrict hidden_out,
                            scalar_t* __restrict candidate_saved) {
  for (int64_t j = 0; j < H; ++j) {
    const acc_t candidate = acc_t(hidden_gates[2 * H + j]) + acc_t(bias_hh[2 * H + j]);
    acc_t gate_r, gate_z, gate_n, hidden;
    math::gru_cell_forward<acc_t>(
        acc_t(gates[j]) + acc_t(hidden_gates[j]) + acc_t(bias_ih[j]) + acc_t(bias_hh[j]),
        acc_t(gates[H + j]) + acc_t(hidden_gates[H + j]) + acc_t(bias_ih[H + j]) + acc_t(bias_hh[H + j]),
        acc_t(gates[2 * H + j]) + acc_t(bias_ih[2 * H + j]), candidate, acc_t(hidden_state[j]), gate_r, gate_z, gate_n,
        hidden);
    gates[j] = scalar_t(gate_r);
    gates[H + j] = scalar_t(gate_z);
    gates[2 * H + j] = scalar_t(gate_n);
    hidden_state[j] = scalar_t(hidden);
    hidden_out[j] = scalar_t(hidden);
    candidate_saved[j] = scalar_t(candidate);
  }
}

template <typename scalar_t, typename acc_t = acc_type<scalar_t>>
inline void gru_backward_row(int64_t H, const scalar_t* __restrict gates, const scalar_t* __restrict candidate,
                             const scalar_t* __restrict hidden_prev, const scalar_t* __restrict grad_output,
                             scalar_t* __restrict grad_hidden, scalar_t* __restrict grad_gates,
                             scalar_t* __restrict grad_hidden_gates) {
  for (int64_t j = 0; j < H; ++j) {
    acc_t grad_r, grad_z, grad_input_n, grad_candidate, grad_hidden_prev;
    math::gru_cell_backward<acc_t>(acc_t(gates[j]), acc_t(gates[H + j]), acc_t(gates[2 * H + j]), acc_t(candidate[j]),
                                   acc_t(hidden_prev[j]), acc_t(grad_output[j]) + acc_t(grad_hidden[j]), grad_r,
                                   grad_z, grad_input_n, grad_candidate, grad_hidden_prev);
    grad_gates[j] = scalar_t(grad_r);
    grad_gates[H + j] = scalar_t(grad_z);
    grad_gates[2 * H + j] = scalar_t(grad_input_n);
    grad_hidden_gates[j] = scalar_t(grad_r);
    grad_hidden_gates[H + j] = scalar_t(grad_z);
    grad_hidden_gates[2 * H + j] = scalar_t(grad_candidate);
    grad_hidden[j] = scalar_t(grad_hidden_prev);
  }
}

// The rows of float32, bfloat16 and float16 get AVX-512 and AVX2+FMA clones (clones.h; AVX-512 measured 1.4×
// faster than AVX2 per element for float32). float64 exists for gradcheck; its speed matters less.
#define FL_CLONED_ROWS(scalar_t, suffix)                                                                          \
  FL_CPU_CLONES void forward_row_##suffix(int64_t H, scalar_t* gates, const scalar_t* bias,                       \
                                          acc_type<scalar_t>* cell, scalar_t* hidden_out) {                       \
    forward_row<scalar_t>(H, gates, bias, cell, hidden_out);                                                      \
  }                                                                                                               \
  FL_CPU_CLONES void backward_row_##suffix(int64_t H, const scalar_t* gates, const acc_type<scalar_t>* cell_prev,  \
                                           const scalar_t* grad_hidden, const scalar_t* grad_hidden_2,           \
                                           acc_type<scalar_t>* grad_cell, scalar_t* grad_gates) {                \
    backward_row<scalar_t>(H, gates, cell_prev, grad_hidden, grad_hidden_2, grad_cell, grad_gates);               \
  }                                                                                                               \
  FL_CPU_CLONES void gru_forward_row_##suffix(int64_t H, scalar_t* gates, const scalar_t* hidden_gates,           \
                                              const scalar_t* bias_ih, const scalar_t* bias_hh,                  \
                                              scalar_t* hidden_state, scalar_t* hidden_out,                      \
                                              scalar_t* candidate_saved) {                                        \
    gru_forward_row<scalar_t>(H, gates, hidden_gates, bias_ih, bias_hh, hidden_state, hidden_out,                 \
                              candidate_saved);                                                                   \
  }                                                                                                               \
  FL_CPU_CLONES void gru_backward_row_##suffix(int64_t H, const scalar_t* gates, const scalar_t* candidate,        \
                                               const scalar_t* hidden_prev, const scalar_t* grad_output,         \
                                               scalar_t* grad_hidden, scalar_t* grad_gates,                      \
                                               scalar_t* grad_hidden_gates) {                                     \
    gru_backward_row<scalar_t>(H, gates, candidate, hidden_prev, grad_output, grad_hidden, grad_gates,            \
                               grad_hidden_gates);                                                                \
  }

FL_CLONED_ROWS(float, float)
FL_CLONED_ROWS(c10::BFloat16, bfloat16)
FL_CLONED_ROWS(c10::Half, float16)
#undef FL_CLONED_ROWS

// One entry per element type: the cloned rows, or the plain template (float64).
template <typename scalar_t>
struct Rows {
  static constexpr auto forward = &forward_row<scalar_t>;
  static constexpr auto backward = &backward_row<scalar_t>;
  static constexpr auto gru_forward = &gru_forward_row<scalar_t>;
  static constexpr auto gru_backward = &gru_backward_row<scalar_t>;
};
#define FL_ROWS(scalar_t, suffix)                                        \
  template <>                                                            \
  struct Rows<scalar_t> {                                                \
    static constexpr auto forward = &forward_row_##suffix;               \
    static constexpr auto backward = &backward_row_##suffix;             \
    static constexpr auto gru_forward = &gru_forward_row_##suffix;       \
    static constexpr auto gru_backward = &gru_backward_row_##suffix;     \
  };
FL_ROWS(float, float)
FL_ROWS(c10::BFloat16, bfloat16)
FL_ROWS(c10::Half, float16)
#undef FL_ROWS

template <typename scalar_t>
void forward_typed(const LstmForwardPointwiseParams& p) {
  using acc_t = acc_type<scalar_t>;
  const int64_t H = p.hidden;
  auto* gates = static_cast<scalar_t*>(p.gates);
  const auto* bias = static_cast<const scalar_t*>(p.bias);
  auto* cell = static_cast<acc_t*>(p.cell);
  auto* cell_prev_saved = static_cast<acc_t*>(p.cell_prev_saved);
  auto* hidden_out = static_cast<scalar_t*>(p.hidden_out);
  auto* hidden_state = static_cast<scalar_t*>(p.hidden_state);
  at::parallel_for(0, p.rows, rows_per_task(H), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      if (cell_prev_saved) std::memcpy(cell_prev_saved + row * H, cell + row * H, H * sizeof(acc_t));
      Rows<scalar_t>::forward(H, gates + row * 4 * H, bias, cell + row * H, hidden_out + row * H);
      if (hidden_state) std::memcpy(hidden_state + row * H, hidden_out + row * H, H * sizeof(scalar_t));
    }
  });
}

template <typename scalar_t>
void backward_typed(const LstmBackwardPointwiseParams& p) {
  using acc_t = acc_type<scalar_t>;
  const int64_t H = p.hidden;
  const auto* gates = static_cast<const scalar_t*>(p.gates);
  const auto* cell_prev = static_cast<const acc_t*>(p.cell_prev);
  const auto* grad_hidden = static_cast<const scalar_t*>(p.grad_hidden);
  const auto* grad_hidden_2 = static_cast<const scalar_t*>(p.grad_hidden_2);
  auto* grad_cell = static_cast<acc_t*>(p.grad_cell);
  auto* grad_gates = static_cast<scalar_t*>(p.grad_gates);
  at::parallel_for(0, p.rows, rows_per_task(H), [&](int64_t begin, int64_t end) {
    // Without a second gradient term, add zeros: one loop body keeps the inner loop branch-free.
    std::vector<scalar_t> zeros(grad_hidden_2 ? 0 : H, scalar_t(0));
    for (int64_t row = begin; row < end; ++row) {
      const scalar_t* second = grad_hidden_2 ? grad_hidden_2 + row * H : zeros.data();
      Rows<scalar_t>::backward(H, gates + row * 4 * H, cell_prev + row * H, grad_hidden + row * H, second,
                               grad_cell + row * H, grad_gates + row * 4 * H);
    }
  });
}

template <typename scalar_t>
void gru_forward_typed(const GruForwardPointwiseParams& p) {
  const int64_t H = p.hidden;
  auto* gates = static_cast<scalar_t*>(p.gates);
  const auto* hidden_gates = static_cast<const scalar_t*>(p.hidden_gates);
  const auto* bias_ih = static_cast<const scalar_t*>(p.bias_ih);
  const auto* bias_hh = static_cast<const scalar_t*>(p.bias_hh);
  auto* hidden_state = static_cast<scalar_t*>(p.hidden_state);
  auto* hidden_out = static_cast<scalar_t*>(p.hidden_out);
  auto* candidate_saved = static_cast<scalar_t*>(p.candidate_hidden_saved);
  at::parallel_for(0, p.rows, rows_per_task(H), [&](int64_t begin, int64_t end) {
    // At inference nothing is saved: write into a scratch row so the inner loop stays branch-free.
    std::vector<scalar_t> scratch(candidate_saved ? 0 : H);
    for (int64_t row = begin; row < end; ++row) {
      scalar_t* candidate_row = candidate_saved ? candidate_saved + row * H : scratch.data();
      Rows<scalar_t>::gru_forward(H, gates + row * 3 * H, hidden_gates + row * 3 * H, bias_ih, bias_hh,
                                  hidden_state + row * H, hidden_out + row * H, candidate_row);
    }
  });
}

template <typename scalar_t>
void gru_backward_typed(const GruBackwardPointwiseParams& p) {
  const int64_t H = p.hidden;
  const auto* gates = static_cast<const scalar_t*>(p.gates);
  const auto* candidate = static_cast<const scalar_t*>(p.candidate_hidden);
  const auto* hidden_prev = static_cast<const scalar_t*>(p.hidden_prev);
  const auto* grad_output = static_cast<const scalar_t*>(p.grad_output);
  auto* grad_hidden = static_cast<scalar_t*>(p.grad_hidden);
  auto* grad_gates = static_cast<scalar_t*>(p.grad_gates);
  auto* grad_hidden_gates = static_cast<scalar_t*>(p.grad_hidden_gates);
  at::parallel_for(0, p.rows, rows_per_task(H), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      Rows<scalar_t>::gru_backward(H, gates + row * 3 * H, candidate + row * H, hidden_prev + row * H,
                                   grad_output + row * H, grad_hidden + row * H, grad_gates + row * 3 * H,
                                   grad_hidden_gates + row * 3 * H);
    }
  });
}

constexpr const char* kKernels = "the CPU kernels";

}  // namespace

void forward_pointwise(const LstmForwardPointwiseParams& params, at::ScalarType dtype) {
  dispatch_dtype(dtype, kKernels, [&](auto element) { forward_typed<decltype(element)>(params); });
}

void backward_pointwise(const LstmBackwardPointwiseParams& params, at::ScalarType dtype) {
  dispatch_dtype(dtype, kKernels, [&](auto element) { backward_typed<decltype(element)>(params); });
}

void gru_forward_pointwise(const GruForwardPointwiseParams& params, at::ScalarType dtype) {
  dispatch_dtype(dtype, kKernels, [&](auto element) { gru_forward_typed<decltype(element)>(params); });
}

void gru_backward_pointwise(const GruBackwardPointwiseParams& params, at::ScalarType dtype) {
  dispatch_dtype(dtype, kKernels, [&](auto element) { gru_backward_typed<decltype(element)>(params); });
}

}  // namespace cpu
}  // namespace fused_lstm
