#include "lstm_pointwise_cpu.h"

#include "parallel.h"

#include <cstring>
#include <vector>

#include "../gru_math.h"
#include "../lstm_math.h"
#include "clones.h"

namespace fused_lstm {
namespace cpu {
namespace {

// Enough elements per task that thread hand-off (a few µs) stays small against the math (~4-6 ns
// per element on one core): a B=32, H=256 step already splits over two threads.
constexpr int64_t kElementsPerTask = 4096;

int64_t rows_per_task(int64_t hidden) { return std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(1, hidden)); }

// One row of the forward pass. The inner loop is branch-free so that the compiler vectorizes it.
template <typename scalar_t>
inline void forward_row(int64_t H, scalar_t* __restrict gates, const scalar_t* __restrict bias,
                        scalar_t* __restrict cell, scalar_t* __restrict hidden_out) {
  for (int64_t j = 0; j < H; ++j) {
    scalar_t gate_i, gate_f, gate_g, gate_o, cell_next, hidden;
    math::cell_forward<scalar_t>(gates[j] + bias[j], gates[H + j] + bias[H + j], gates[2 * H + j] + bias[2 * H + j],
                                 gates[3 * H + j] + bias[3 * H + j], cell[j], gate_i, gate_f, gate_g, gate_o,
                                 cell_next, hidden);
    gates[j] = gate_i;
    gates[H + j] = gate_f;
    gates[2 * H + j] = gate_g;
    gates[3 * H + j] = gate_o;
    cell[j] = cell_next;
    hidden_out[j] = hidden;
  }
}

template <typename scalar_t>
inline void backward_row(int64_t H, const scalar_t* __restrict gates, const scalar_t* __restrict cell_prev,
                         const scalar_t* __restrict grad_hidden, const scalar_t* __restrict grad_hidden_2,
                         scalar_t* __restrict grad_cell, scalar_t* __restrict grad_gates) {
  for (int64_t j = 0; j < H; ++j) {
    scalar_t grad_i, grad_f, grad_g, grad_o, grad_cell_prev;
    math::cell_backward<scalar_t>(gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j], cell_prev[j],
                                  grad_hidden[j] + grad_hidden_2[j], grad_cell[j], grad_i, grad_f, grad_g, grad_o,
                                  grad_cell_prev);
    grad_gates[j] = grad_i;
    grad_gates[H + j] = grad_f;
    grad_gates[2 * H + j] = grad_g;
    grad_gates[3 * H + j] = grad_o;
    grad_cell[j] = grad_cell_prev;
  }
}

template <typename scalar_t>
inline void gru_forward_row(int64_t H, scalar_t* __restrict gates, const scalar_t* __restrict hidden_gates,
                            const scalar_t* __restrict bias_ih, const scalar_t* __restrict bias_hh,
                            scalar_t* __restrict hidden_state, scalar_t* __restrict hidden_out,
                            scalar_t* __restrict candidate_saved) {
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t candidate = hidden_gates[2 * H + j] + bias_hh[2 * H + j];
    scalar_t gate_r, gate_z, gate_n, hidden;
    math::gru_cell_forward<scalar_t>(gates[j] + hidden_gates[j] + bias_ih[j] + bias_hh[j],
                                     gates[H + j] + hidden_gates[H + j] + bias_ih[H + j] + bias_hh[H + j],
                                     gates[2 * H + j] + bias_ih[2 * H + j], candidate, hidden_state[j], gate_r,
                                     gate_z, gate_n, hidden);
    gates[j] = gate_r;
    gates[H + j] = gate_z;
    gates[2 * H + j] = gate_n;
    hidden_state[j] = hidden;
    hidden_out[j] = hidden;
    candidate_saved[j] = candidate;
  }
}

template <typename scalar_t>
inline void gru_backward_row(int64_t H, const scalar_t* __restrict gates, const scalar_t* __restrict candidate,
                             const scalar_t* __restrict hidden_prev, const scalar_t* __restrict grad_output,
                             scalar_t* __restrict grad_hidden, scalar_t* __restrict grad_gates,
                             scalar_t* __restrict grad_hidden_gates) {
  for (int64_t j = 0; j < H; ++j) {
    scalar_t grad_r, grad_z, grad_input_n, grad_candidate, grad_hidden_prev;
    math::gru_cell_backward<scalar_t>(gates[j], gates[H + j], gates[2 * H + j], candidate[j], hidden_prev[j],
                                      grad_output[j] + grad_hidden[j], grad_r, grad_z, grad_input_n,
                                      grad_candidate, grad_hidden_prev);
    grad_gates[j] = grad_r;
    grad_gates[H + j] = grad_z;
    grad_gates[2 * H + j] = grad_input_n;
    grad_hidden_gates[j] = grad_r;
    grad_hidden_gates[H + j] = grad_z;
    grad_hidden_gates[2 * H + j] = grad_candidate;
    grad_hidden[j] = grad_hidden_prev;
  }
}

// float rows get AVX-512 and AVX2+FMA clones (clones.h; AVX-512 measured 1.4× faster than AVX2 per
// element). (float64 exists for gradcheck; its speed matters less.)

FL_CPU_CLONES void forward_row_float(int64_t H, float* gates, const float* bias, float* cell, float* hidden_out) {
  forward_row<float>(H, gates, bias, cell, hidden_out);
}

FL_CPU_CLONES void backward_row_float(int64_t H, const float* gates, const float* cell_prev, const float* grad_hidden,
                                      const float* grad_hidden_2, float* grad_cell, float* grad_gates) {
  backward_row<float>(H, gates, cell_prev, grad_hidden, grad_hidden_2, grad_cell, grad_gates);
}

FL_CPU_CLONES void gru_forward_row_float(int64_t H, float* gates, const float* hidden_gates, const float* bias_ih,
                                         const float* bias_hh, float* hidden_state, float* hidden_out,
                                         float* candidate_saved) {
  gru_forward_row<float>(H, gates, hidden_gates, bias_ih, bias_hh, hidden_state, hidden_out, candidate_saved);
}

FL_CPU_CLONES void gru_backward_row_float(int64_t H, const float* gates, const float* candidate,
                                          const float* hidden_prev, const float* grad_output, float* grad_hidden,
                                          float* grad_gates, float* grad_hidden_gates) {
  gru_backward_row<float>(H, gates, candidate, hidden_prev, grad_output, grad_hidden, grad_gates, grad_hidden_gates);
}

inline void gru_forward_row_any(int64_t H, float* g, const float* hg, const float* bi, const float* bh, float* h,
                                float* out, float* cand) {
  gru_forward_row_float(H, g, hg, bi, bh, h, out, cand);
}
inline void gru_forward_row_any(int64_t H, double* g, const double* hg, const double* bi, const double* bh, double* h,
                                double* out, double* cand) {
  gru_forward_row<double>(H, g, hg, bi, bh, h, out, cand);
}
inline void gru_backward_row_any(int64_t H, const float* g, const float* cand, const float* hp, const float* dout,
                                 float* dh, float* dg, float* dhg) {
  gru_backward_row_float(H, g, cand, hp, dout, dh, dg, dhg);
}
inline void gru_backward_row_any(int64_t H, const double* g, const double* cand, const double* hp,
                                 const double* dout, double* dh, double* dg, double* dhg) {
  gru_backward_row<double>(H, g, cand, hp, dout, dh, dg, dhg);
}

inline void forward_row_any(int64_t H, float* g, const float* b, float* c, float* h) {
  forward_row_float(H, g, b, c, h);
}
inline void forward_row_any(int64_t H, double* g, const double* b, double* c, double* h) {
  forward_row<double>(H, g, b, c, h);
}
inline void backward_row_any(int64_t H, const float* g, const float* cp, const float* dh, const float* dh2, float* dc,
                             float* dg) {
  backward_row_float(H, g, cp, dh, dh2, dc, dg);
}
inline void backward_row_any(int64_t H, const double* g, const double* cp, const double* dh, const double* dh2,
                             double* dc, double* dg) {
  backward_row<double>(H, g, cp, dh, dh2, dc, dg);
}

template <typename scalar_t>
void forward_typed(const LstmForwardPointwiseParams& p) {
  const int64_t H = p.hidden;
  auto* gates = static_cast<scalar_t*>(p.gates);
  const auto* bias = static_cast<const scalar_t*>(p.bias);
  auto* cell = static_cast<scalar_t*>(p.cell);
  auto* cell_prev_saved = static_cast<scalar_t*>(p.cell_prev_saved);
  auto* hidden_out = static_cast<scalar_t*>(p.hidden_out);
  auto* hidden_state = static_cast<scalar_t*>(p.hidden_state);
  at::parallel_for(0, p.rows, rows_per_task(H), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      if (cell_prev_saved) std::memcpy(cell_prev_saved + row * H, cell + row * H, H * sizeof(scalar_t));
      forward_row_any(H, gates + row * 4 * H, bias, cell + row * H, hidden_out + row * H);
      if (hidden_state) std::memcpy(hidden_state + row * H, hidden_out + row * H, H * sizeof(scalar_t));
    }
  });
}

template <typename scalar_t>
void backward_typed(const LstmBackwardPointwiseParams& p) {
  const int64_t H = p.hidden;
  const auto* gates = static_cast<const scalar_t*>(p.gates);
  const auto* cell_prev = static_cast<const scalar_t*>(p.cell_prev);
  const auto* grad_hidden = static_cast<const scalar_t*>(p.grad_hidden);
  const auto* grad_hidden_2 = static_cast<const scalar_t*>(p.grad_hidden_2);
  auto* grad_cell = static_cast<scalar_t*>(p.grad_cell);
  auto* grad_gates = static_cast<scalar_t*>(p.grad_gates);
  at::parallel_for(0, p.rows, rows_per_task(H), [&](int64_t begin, int64_t end) {
    // Without a second gradient term, add zeros: one loop body keeps the inner loop branch-free.
    std::vector<scalar_t> zeros(grad_hidden_2 ? 0 : H, scalar_t(0));
    for (int64_t row = begin; row < end; ++row) {
      const scalar_t* second = grad_hidden_2 ? grad_hidden_2 + row * H : zeros.data();
      backward_row_any(H, gates + row * 4 * H, cell_prev + row * H, grad_hidden + row * H, second,
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
      gru_forward_row_any(H, gates + row * 3 * H, hidden_gates + row * 3 * H, bias_ih, bias_hh,
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
      gru_backward_row_any(H, gates + row * 3 * H, candidate + row * H, hidden_prev + row * H,
                           grad_output + row * H, grad_hidden + row * H, grad_gates + row * 3 * H,
                           grad_hidden_gates + row * 3 * H);
    }
  });
}

}  // namespace

void forward_pointwise(const LstmForwardPointwiseParams& params, at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return forward_typed<float>(params);
    case at::kDouble: return forward_typed<double>(params);
    default: TORCH_CHECK(false, "fused_lstm: the CPU kernels support float32 and float64, got ", dtype);
  }
}

void backward_pointwise(const LstmBackwardPointwiseParams& params, at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return backward_typed<float>(params);
    case at::kDouble: return backward_typed<double>(params);
    default: TORCH_CHECK(false, "fused_lstm: the CPU kernels support float32 and float64, got ", dtype);
  }
}

void gru_forward_pointwise(const GruForwardPointwiseParams& params, at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return gru_forward_typed<float>(params);
    case at::kDouble: return gru_forward_typed<double>(params);
    default: TORCH_CHECK(false, "fused_lstm: the CPU kernels support float32 and float64, got ", dtype);
  }
}

void gru_backward_pointwise(const GruBackwardPointwiseParams& params, at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return gru_backward_typed<float>(params);
    case at::kDouble: return gru_backward_typed<double>(params);
    default: TORCH_CHECK(false, "fused_lstm: the CPU kernels support float32 and float64, got ", dtype);
  }
}

}  // namespace cpu
}  // namespace fused_lstm
