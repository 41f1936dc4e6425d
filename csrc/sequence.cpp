#include "sequence.h"

#include "checks.h"
#include "gemm.h"

namespace fused_lstm {

at::ScalarType accumulation_dtype(at::ScalarType dtype) {
  return (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;
}

std::vector<int64_t> SequenceLayout::step_order(bool reverse) const {
  std::vector<int64_t> order(steps);
  for (int64_t k = 0; k < steps; ++k) order[k] = reverse ? steps - 1 - k : k;
  return order;
}

SequenceLayout check_sequence(const char* op, const at::Tensor& input, const at::Tensor& batch_sizes,
                              const at::Tensor& h0) {
  check_dim(op, input, "input", 2);
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": input must be float32, float64, float16 or bfloat16, got ", dtype);
  check_dim(op, batch_sizes, "batch_sizes", 1);
  check_dtype(op, batch_sizes, "batch_sizes", at::kLong);
  TORCH_CHECK(batch_sizes.numel() >= 1, op, ": the sequence must have at least one step, got 0");
  check_dim(op, h0, "h0", 2);
  check_dtype_like_input(op, h0, "h0", input);

  SequenceLayout layout;
  layout.rows = input.size(0);
  layout.batch = h0.size(0);
  const auto sizes = batch_sizes.contiguous();
  const int64_t* size_data = sizes.data_ptr<int64_t>();
  layout.steps = sizes.numel();
  layout.step_rows.assign(size_data, size_data + layout.steps);
  layout.step_offset.resize(layout.steps);
  TORCH_CHECK(layout.step_rows[0] == layout.batch, op, ": batch_sizes[0] (", layout.step_rows[0],
              ") must equal the batch size of h0 (", layout.batch, ")");
  int64_t offset = 0;
  for (int64_t t = 0; t < layout.steps; ++t) {
    const int64_t rows = layout.step_rows[t];
    // batch_sizes[0] equals h0's batch size, so it is non-negative; later steps must not grow.
    if (t > 0) {
      TORCH_CHECK(rows >= 0 && rows <= layout.step_rows[t - 1], op,
                  ": batch_sizes must be non-negative and non-increasing, got batch_sizes[", t, "] = ", rows,
                  " after ", layout.step_rows[t - 1]);
    }
    // Compared before adding, so that huge batch sizes cannot overflow the running sum.
    TORCH_CHECK(rows <= layout.rows - offset, op, ": batch_sizes sum to more than the ", layout.rows,
                " rows of input (exceeded at step ", t, ")");
    layout.uniform_batch = layout.uniform_batch && rows == layout.batch;
    layout.step_offset[t] = offset;
    offset += rows;
  }
  TORCH_CHECK(offset == layout.rows, op, ": input has ", layout.rows, " rows but batch_sizes sum to ", offset);
  return layout;
}

LayerSizes check_weights(const char* op, const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_ih,
                         const at::Tensor& weight_hh, int64_t gate_count) {
  check_dim(op, weight_ih, "weight_ih", 2);
  check_dim(op, weight_hh, "weight_hh", 2);
  check_dtype_like_input(op, weight_ih, "weight_ih", input);
  check_dtype_like_input(op, weight_hh, "weight_hh", input);
  TORCH_CHECK(weight_ih.size(0) % gate_count == 0 && weight_ih.size(0) > 0, op, ": weight_ih must have ",
              gate_count, "·hidden_size rows, got ", weight_ih.size(0));
  LayerSizes sizes;
  sizes.input_size = input.size(1);
  sizes.hidden_size = weight_ih.size(0) / gate_count;
  sizes.state_size = h0.size(1);
  check_shape(op, weight_ih, "weight_ih", {gate_count * sizes.hidden_size, sizes.input_size});
  check_shape(op, weight_hh, "weight_hh", {gate_count * sizes.hidden_size, sizes.state_size});
  return sizes;
}

CellSizes check_cell(const char* op, const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_ih,
                     const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
                     const std::optional<at::Tensor>& bias_hh, int64_t gate_count) {
  check_dim(op, input, "input", 2);
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": input must be float32, float64, float16 or bfloat16, got ", dtype);
  check_dim(op, h0, "h0", 2);
  check_dtype_like_input(op, h0, "h0", input);
  TORCH_CHECK(h0.size(0) == input.size(0), op, ": h0 must have as many rows as input (", input.size(0), "), got ",
              h0.size(0));
  const LayerSizes sizes = check_weights(op, input, h0, weight_ih, weight_hh, gate_count);
  TORCH_CHECK(sizes.state_size == sizes.hidden_size, op, ": h0 must have hidden_size (", sizes.hidden_size,
              ") columns, got ", sizes.state_size);
  check_biases(op, input, bias_ih, bias_hh, gate_count * sizes.hidden_size);
  return {input.size(0), sizes.input_size, sizes.hidden_size};
}

void check_biases(const char* op, const at::Tensor& input, const std::optional<at::Tensor>& bias_ih,
                  const std::optional<at::Tensor>& bias_hh, int64_t size) {
  TORCH_CHECK(bias_ih.has_value() == bias_hh.has_value(), op, ": give both biases or neither");
  for (const auto& [bias, name] : {std::pair{&bias_ih, "bias_ih"}, std::pair{&bias_hh, "bias_hh"}}) {
    if (!bias->has_value()) continue;
    check_dtype_like_input(op, **bias, name, input);
    check_shape(op, **bias, name, {size});
  }
}

at::Tensor summed_bias(const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh) {
  return bias_ih.has_value() ? (*bias_ih + *bias_hh).contiguous() : at::Tensor();
}

void* row_address(const at::Tensor& matrix, int64_t row) {
  return static_cast<char*>(matrix.data_ptr()) + row * matrix.stride(0) * matrix.element_size();
}

namespace {

// Padded input, steps [first_step, end_step): h_{t-1} is h0 for the first step the forward visits (when it is
// in the range) and, for every other step, the output rows of its neighbour one step earlier in the visit
// (t - 1 forward, t + 1 in reverse). In steps; rows are B per step.
struct PreviousRowsOfSteps {
  bool has_h0_step;       // the range holds the step whose h_{t-1} is h0 ...
  int64_t h0_step;        // ... this one
  int64_t carried_first;  // h_{t-1} of the steps [carried_first, carried_end) are the output rows ...
  int64_t carried_end;
  int64_t source_first;   // ... of the steps [source_first, source_first + carried_end - carried_first)
};

PreviousRowsOfSteps previous_rows_of_steps(const SequenceLayout& layout, int64_t first_step, int64_t end_step,
                                           bool reverse) {
  PreviousRowsOfSteps rows;
  rows.h0_step = reverse ? layout.steps - 1 : 0;
  rows.has_h0_step = first_step <= rows.h0_step && rows.h0_step < end_step;
  rows.carried_first = first_step;
  rows.carried_end = end_step;
  if (rows.has_h0_step) {
    if (reverse) {
      rows.carried_end = end_step - 1;
    } else {
      rows.carried_first = first_step + 1;
    }
  }
  rows.source_first = rows.carried_first + (reverse ? 1 : -1);
  return rows;
}

}  // namespace

at::Tensor previous_hidden(const SequenceLayout& layout, const at::Tensor& output, const at::Tensor& h0,
                           bool reverse) {
  const int64_t B = layout.batch;
  auto h_prev = at::empty_like(output, at::MemoryFormat::Contiguous);
  if (layout.uniform_batch) {
    const PreviousRowsOfSteps rows = previous_rows_of_steps(layout, 0, layout.steps, reverse);
    const int64_t carried = (rows.carried_end - rows.carried_first) * B;
    h_prev.narrow(0, rows.h0_step * B, B).copy_(h0);
    h_prev.narrow(0, rows.carried_first * B, carried).copy_(output.narrow(0, rows.source_first * B, carried));
    return h_prev;
  }
  for (int64_t t = 0; t < layout.steps; ++t) {
    const int64_t rows = layout.step_rows[t], offset = layout.step_offset[t];
    if (rows == 0) continue;
    auto destination = h_prev.narrow(0, offset, rows);
    const int64_t source_step = reverse ? t + 1 : t - 1;
    if (source_step < 0 || source_step >= layout.steps) {
      destination.copy_(h0.narrow(0, 0, rows));
      continue;
    }
    // The neighbouring step carries min(its rows, ours); the rest start from h0 (reverse direction only).
    const int64_t carried = std::min(rows, layout.step_rows[source_step]);
    destination.narrow(0, 0, carried).copy_(output.narrow(0, layout.step_offset[source_step], carried));
    if (carried < rows) destination.narrow(0, carried, rows - carried).copy_(h0.narrow(0, carried, rows - carried));
  }
  return h_prev;
}

void add_recurrent_weight_gradient(const at::Tensor& gradient, const SequenceLayout& layout, int64_t first_step,
                                   int64_t end_step, const at::Tensor& grad_gates, const at::Tensor& output,
                                   const at::Tensor& h0, bool reverse, float beta) {
  TORCH_CHECK(layout.uniform_batch && 0 <= first_step && first_step < end_step && end_step <= layout.steps &&
                  grad_gates.size(0) == (end_step - first_step) * layout.batch,
              "fused_lstm: add_recurrent_weight_gradient takes a range of steps of a padded sequence");
  const int64_t B = layout.batch;
  const PreviousRowsOfSteps rows = previous_rows_of_steps(layout, first_step, end_step, reverse);
  if (rows.has_h0_step) {
    gemm_into(gradient, grad_gates.narrow(0, (rows.h0_step - first_step) * B, B).t(), h0, beta);
    beta = 1.0f;
  }
  const int64_t carried = (rows.carried_end - rows.carried_first) * B;
  if (carried == 0) return;
  gemm_into(gradient, grad_gates.narrow(0, (rows.carried_first - first_step) * B, carried).t(),
            output.narrow(0, rows.source_first * B, carried), beta);
}

at::Tensor recurrent_weight_gradient(const SequenceLayout& layout, const at::Tensor& grad_gates,
                                     const at::Tensor& output, const at::Tensor& h0, bool reverse) {
  if (!layout.uniform_batch) return gemm(grad_gates.t(), previous_hidden(layout, output, h0, reverse));
  auto gradient = at::empty({grad_gates.size(1), h0.size(1)}, grad_gates.options());
  add_recurrent_weight_gradient(gradient, layout, 0, layout.steps, grad_gates, output, h0, reverse, 0.0f);
  return gradient;
}

}  // namespace fused_lstm
