// The pieces every recurrent layer (LSTM, GRU) shares: argument checks, the packed-sequence layout
// (per-step batch sizes), the order in which steps are visited, and rebuilding h_{t-1} for the
// weight-gradient GEMM. Letters: T steps, B batch, N packed rows, C input, G gates·H, P state size.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

namespace fused_lstm {

// fp16/bf16 compute and carry their cell state in float; float32/float64 in themselves.
at::ScalarType accumulation_dtype(at::ScalarType dtype);

// Where each step's rows lie in the packed [N, ...] tensors.
struct SequenceLayout {
  int64_t steps = 0;                 // T
  int64_t batch = 0;                 // B
  int64_t rows = 0;                  // N
  std::vector<int64_t> step_rows;    // b_t: rows active at step t (non-increasing)
  std::vector<int64_t> step_offset;  // first packed row of step t
  bool uniform_batch = true;         // every b_t == B (padded input): whole-sequence copies suffice

  // Steps in the order the recurrence visits them (backward visits them in the opposite order).
  std::vector<int64_t> step_order(bool reverse) const;
};

// Sizes of one layer, checked against each other.
struct LayerSizes {
  int64_t input_size;   // C
  int64_t hidden_size;  // H
  int64_t state_size;   // P: the recurrent state's width (proj_size for a projected LSTM, else H)
};

// Checks input [N, C], batch_sizes [T] (int64, CPU, non-increasing, summing to N, b_0 = B),
// h0 [B, P], weight_ih [gate_count·H, C], weight_hh [gate_count·H, P]: dtypes, devices and shapes.
// `op` names the caller in messages.
SequenceLayout check_sequence(const char* op, const at::Tensor& input, const at::Tensor& batch_sizes,
                              const at::Tensor& h0);
LayerSizes check_weights(const char* op, const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_ih,
                         const at::Tensor& weight_hh, int64_t gate_count);

// Sizes of one cell step (a cell op's arguments), checked against each other.
struct CellSizes {
  int64_t batch;       // B
  int64_t input_size;  // C
  int64_t hidden;      // H
};

// Checks input [B, C], h0 [B, H], weight_ih [gate_count·H, C], weight_hh [gate_count·H, H] and, when given,
// bias_ih and bias_hh [gate_count·H] (both or neither): dtypes (input's), devices (input's) and shapes.
CellSizes check_cell(const char* op, const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_ih,
                     const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
                     const std::optional<at::Tensor>& bias_hh, int64_t gate_count);

// The bias contract of every op: nn's bias_ih and bias_hh, both or neither, each [size] (gate_count·H) in the
// input's dtype and on its device. An LSTM adds them once per call (summed_bias: undefined without biases);
// the GRU keeps them apart (b_hn is inside r·(...)).
void check_biases(const char* op, const at::Tensor& input, const std::optional<at::Tensor>& bias_ih,
                  const std::optional<at::Tensor>& bias_hh, int64_t size);
at::Tensor summed_bias(const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh);

// Address of row `row` of a matrix whose rows are contiguous.
void* row_address(const at::Tensor& matrix, int64_t row);

// h_{t-1} for every packed row, as one [N, P] matrix (the GRU's backward reads it row by row),
// rebuilt from the layer's output [N, P] and h0 [B, P] instead of being saved by forward.
at::Tensor previous_hidden(const SequenceLayout& layout, const at::Tensor& output, const at::Tensor& h0,
                           bool reverse);

// dW_hh = grad_gatesᵀ · h_{t-1} over all rows ([G·H, P]) after the loop. For padded input a GEMM over the
// output rows plus a small one for h0, without building h_{t-1}; otherwise one GEMM over previous_hidden.
at::Tensor recurrent_weight_gradient(const SequenceLayout& layout, const at::Tensor& grad_gates,
                                     const at::Tensor& output, const at::Tensor& h0, bool reverse);

// The same for the steps [first_step, end_step) of a padded sequence (a backward that works in blocks of
// steps): gradient [G·H, P] = beta·gradient + grad_gatesᵀ · h_{t-1}, where grad_gates holds the rows of
// those steps only, [(end_step - first_step)·B, G·H]. beta is 0 or 1.
void add_recurrent_weight_gradient(const at::Tensor& gradient, const SequenceLayout& layout, int64_t first_step,
                                   int64_t end_step, const at::Tensor& grad_gates, const at::Tensor& output,
                                   const at::Tensor& h0, bool reverse, float beta);

}  // namespace fused_lstm
