#include "lstm_layer.h"

#include <vector>

#include "checks.h"

namespace fused_lstm {
namespace {

at::ScalarType accumulation_dtype(at::ScalarType dtype) {
  return (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;
}

// Sizes shared by forward and backward, derived from the arguments after they were checked.
struct LayerShape {
  int64_t steps;        // T
  int64_t batch;        // B
  int64_t rows;         // N
  int64_t input_size;   // C
  int64_t hidden_size;  // H
  int64_t output_size;  // P
  std::vector<int64_t> step_rows;    // b_t
  std::vector<int64_t> step_offset;  // first packed row of step t
  bool uniform_batch;   // every b_t == B (padded input): lets whole-sequence copies replace per-step ones
};

// Checks every assumption the loops make about the arguments, and derives the shape.
LayerShape check_layer_arguments(const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
                                 const at::Tensor& c0_or_grad_c, const at::Tensor& weight_ih,
                                 const at::Tensor& weight_hh, const std::optional<at::Tensor>& weight_hr) {
  FL_CHECK_DIM(input, 2);
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
              "fused_lstm: input must be float32, float64, float16 or bfloat16, got ", dtype);
  FL_CHECK_DIM(batch_sizes, 1);
  TORCH_CHECK(batch_sizes.device().is_cpu(), "fused_lstm: batch_sizes must be a CPU tensor (as in PackedSequence), got ",
              batch_sizes.device());
  TORCH_CHECK(batch_sizes.scalar_type() == at::kLong, "fused_lstm: batch_sizes must be int64, got ",
              batch_sizes.scalar_type());
  TORCH_CHECK(batch_sizes.numel() >= 1, "fused_lstm: the sequence must have at least one step, got 0");
  FL_CHECK_DIM(h0, 2);
  FL_CHECK_DIM(c0_or_grad_c, 2);
  FL_CHECK_DIM(weight_ih, 2);
  FL_CHECK_DIM(weight_hh, 2);
  FL_CHECK_LIKE_INPUT(h0, input);
  FL_CHECK_LIKE_INPUT(weight_ih, input);
  FL_CHECK_LIKE_INPUT(weight_hh, input);

  LayerShape shape;
  shape.rows = input.size(0);
  shape.input_size = input.size(1);
  shape.batch = h0.size(0);
  shape.output_size = h0.size(1);
  TORCH_CHECK(weight_ih.size(0) % 4 == 0 && weight_ih.size(0) > 0,
              "fused_lstm: weight_ih must have 4·hidden_size rows, got ", weight_ih.size(0));
  shape.hidden_size = weight_ih.size(0) / 4;
  const int64_t H = shape.hidden_size, P = shape.output_size;
  FL_CHECK_SHAPE(weight_ih, 4 * H, shape.input_size);
  FL_CHECK_SHAPE(weight_hh, 4 * H, P);
  FL_CHECK_SHAPE(c0_or_grad_c, shape.batch, H);
  if (weight_hr.has_value()) {
    const auto& w_hr = *weight_hr;
    FL_CHECK_LIKE_INPUT(w_hr, input);
    FL_CHECK_SHAPE(w_hr, P, H);
    TORCH_CHECK(P < H, "fused_lstm: the projection size (", P, ") must be smaller than hidden_size (", H, ")");
  } else {
    TORCH_CHECK(P == H, "fused_lstm: without a projection, h0 must have hidden_size (", H, ") columns, got ", P);
  }

  const auto sizes = batch_sizes.contiguous();
  const int64_t* size_data = sizes.data_ptr<int64_t>();
  shape.steps = sizes.numel();
  shape.step_rows.assign(size_data, size_data + shape.steps);
  shape.step_offset.resize(shape.steps);
  int64_t offset = 0;
  shape.uniform_batch = true;
  TORCH_CHECK(shape.step_rows[0] == shape.batch, "fused_lstm: batch_sizes[0] (", shape.step_rows[0],
              ") must equal the batch size of h0 (", shape.batch, ")");
  for (int64_t t = 0; t < shape.steps; ++t) {
    const int64_t rows = shape.step_rows[t];
    TORCH_CHECK(rows >= 0 && (t == 0 || rows <= shape.step_rows[t - 1]),
                "fused_lstm: batch_sizes must be non-negative and non-increasing, got ", batch_sizes);
    shape.uniform_batch = shape.uniform_batch && rows == shape.batch;
    shape.step_offset[t] = offset;
    offset += rows;
  }
  TORCH_CHECK(offset == shape.rows, "fused_lstm: input has ", shape.rows, " rows but batch_sizes sum to ", offset);
  return shape;
}

// Steps in the order the recurrence visits them.
std::vector<int64_t> step_order(const LayerShape& shape, bool reverse) {
  std::vector<int64_t> order(shape.steps);
  for (int64_t k = 0; k < shape.steps; ++k) order[k] = reverse ? shape.steps - 1 - k : k;
  return order;
}

void* address_of_row(const at::Tensor& matrix, int64_t row) {
  return static_cast<char*>(matrix.data_ptr()) + row * matrix.stride(0) * matrix.element_size();
}

// h_{t-1} for every packed row, as one [N, P] matrix so that dW_hh is a single GEMM after the loop.
// It is rebuilt from the forward output and h0 instead of being saved.
at::Tensor previous_hidden(const LayerShape& shape, const at::Tensor& output, const at::Tensor& h0, bool reverse) {
  const int64_t B = shape.batch, N = shape.rows;
  auto h_prev = at::empty_like(output);
  if (shape.uniform_batch) {
    if (!reverse) {
      h_prev.narrow(0, 0, B).copy_(h0);
      h_prev.narrow(0, B, N - B).copy_(output.narrow(0, 0, N - B));
    } else {
      h_prev.narrow(0, N - B, B).copy_(h0);
      h_prev.narrow(0, 0, N - B).copy_(output.narrow(0, B, N - B));
    }
    return h_prev;
  }
  for (int64_t t = 0; t < shape.steps; ++t) {
    const int64_t rows = shape.step_rows[t], offset = shape.step_offset[t];
    if (rows == 0) continue;
    auto destination = h_prev.narrow(0, offset, rows);
    const int64_t source_step = reverse ? t + 1 : t - 1;
    if (source_step < 0 || source_step >= shape.steps) {
      destination.copy_(h0.narrow(0, 0, rows));
      continue;
    }
    // The neighbouring step carries min(its rows, ours); the rest start from h0 (reverse direction only).
    const int64_t carried = std::min(rows, shape.step_rows[source_step]);
    destination.narrow(0, 0, carried).copy_(output.narrow(0, shape.step_offset[source_step], carried));
    if (carried < rows) destination.narrow(0, carried, rows - carried).copy_(h0.narrow(0, carried, rows - carried));
  }
  return h_prev;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_forward(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& weight_ih, const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& weight_hr, bool reverse, bool save_for_backward,
    const PointwiseBackend& backend) {
  const LayerShape shape = check_layer_arguments(input, batch_sizes, h0, c0, weight_ih, weight_hh, weight_hr);
  FL_CHECK_LIKE_INPUT(c0, input);
  const int64_t B = shape.batch, N = shape.rows, H = shape.hidden_size, P = shape.output_size;
  const bool projected = weight_hr.has_value();
  const auto dtype = input.scalar_type();
  const auto acc_options = input.options().dtype(accumulation_dtype(dtype));

  at::Tensor combined_bias;
  if (bias.has_value()) {
    FL_CHECK_LIKE_INPUT(*bias, input);
    FL_CHECK_SHAPE(*bias, 4 * H);
    combined_bias = bias->contiguous();
  } else {
    combined_bias = at::zeros({4 * H}, input.options());
  }

  // The input projection of every step at once; each step then adds its recurrent term in place.
  auto gates = at::mm(input, weight_ih.t());
  auto hidden_state = h0.contiguous().clone();
  auto cell_state = c0.to(acc_options.dtype()).contiguous().clone();
  auto output = at::empty({N, P}, input.options());
  // Absent outputs are distinct empty tensors: outputs of an op must not alias one another.
  const auto empty = [&] { return at::empty({0}, input.options()); };
  auto cell_prev_saved = save_for_backward ? at::empty({N, H}, acc_options) : empty();
  // With a projection, o·tanh(c) is an intermediate: kept per row for backward, else one step's worth.
  at::Tensor proj_input = projected ? at::empty({save_for_backward ? N : B, H}, input.options()) : empty();
  const at::Tensor weight_hh_t = weight_hh.t();
  const at::Tensor weight_hr_t = projected ? weight_hr->t() : at::Tensor();

  for (const int64_t t : step_order(shape, reverse)) {
    const int64_t rows = shape.step_rows[t], offset = shape.step_offset[t];
    if (rows == 0) continue;
    auto step_gates = gates.narrow(0, offset, rows);
    auto step_hidden = hidden_state.narrow(0, 0, rows);
    step_gates.addmm_(step_hidden, weight_hh_t);

    LstmForwardPointwiseParams params;
    params.rows = rows;
    params.hidden = H;
    params.gates = step_gates.data_ptr();
    params.bias = combined_bias.data_ptr();
    params.cell = cell_state.data_ptr();
    params.cell_prev_saved = save_for_backward ? address_of_row(cell_prev_saved, offset) : nullptr;
    if (projected) {
      params.hidden_out = address_of_row(proj_input, save_for_backward ? offset : 0);
      params.hidden_state = nullptr;
    } else {
      params.hidden_out = address_of_row(output, offset);
      params.hidden_state = hidden_state.data_ptr();
    }
    backend.forward(params, dtype);

    if (projected) {
      auto step_proj_input = proj_input.narrow(0, save_for_backward ? offset : 0, rows);
      at::mm_out(step_hidden, step_proj_input, weight_hr_t);
      output.narrow(0, offset, rows).copy_(step_hidden);
    }
  }

  auto cell_n = cell_state.to(dtype);
  if (!save_for_backward) return {output, hidden_state, cell_n, empty(), empty(), empty()};
  return {output, hidden_state, cell_n, gates, cell_prev_saved, projected ? proj_input : empty()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
                    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
                    const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                    const std::optional<at::Tensor>& weight_hr, const at::Tensor& output, const at::Tensor& gates,
                    const at::Tensor& cell_prev, const at::Tensor& proj_input, bool reverse, bool has_bias,
                    const PointwiseBackend& backend) {
  const LayerShape shape = check_layer_arguments(input, batch_sizes, h0, grad_c_n, weight_ih, weight_hh, weight_hr);
  const int64_t B = shape.batch, N = shape.rows, H = shape.hidden_size, P = shape.output_size;
  const bool projected = weight_hr.has_value();
  const auto dtype = input.scalar_type();
  const auto acc_dtype = accumulation_dtype(dtype);
  FL_CHECK_LIKE_INPUT(grad_output, input);
  FL_CHECK_LIKE_INPUT(grad_h_n, input);
  FL_CHECK_LIKE_INPUT(grad_c_n, input);
  FL_CHECK_LIKE_INPUT(output, input);
  FL_CHECK_LIKE_INPUT(gates, input);
  FL_CHECK_DEVICE(cell_prev, input.device());
  FL_CHECK_DTYPE(cell_prev, acc_dtype);
  FL_CHECK_SHAPE(grad_output, N, P);
  FL_CHECK_SHAPE(grad_h_n, B, P);
  FL_CHECK_SHAPE(output, N, P);
  FL_CHECK_SHAPE(gates, N, 4 * H);
  FL_CHECK_SHAPE(cell_prev, N, H);
  if (projected) {
    FL_CHECK_LIKE_INPUT(proj_input, input);
    FL_CHECK_SHAPE(proj_input, N, H);
  }

  const auto gates_c = gates.contiguous();
  const auto cell_prev_c = cell_prev.contiguous();
  const auto grad_output_c = grad_output.contiguous();
  auto grad_gates = at::empty({N, 4 * H}, input.options());
  auto grad_hidden_state = grad_h_n.contiguous().clone();  // dL/dh flowing back through the recurrence
  auto grad_cell_state = grad_c_n.to(acc_dtype).contiguous().clone();
  // With a projection: the total dL/dh of every row (for dW_hr) and one step's dL/d(o·tanh c).
  at::Tensor grad_hidden_total = projected ? at::empty({N, P}, input.options()) : at::Tensor();
  at::Tensor grad_proj_input = projected ? at::empty({B, H}, input.options()) : at::Tensor();

  auto order = step_order(shape, reverse);
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const int64_t t = *it;
    const int64_t rows = shape.step_rows[t], offset = shape.step_offset[t];
    if (rows == 0) continue;
    auto step_grad_hidden = grad_hidden_state.narrow(0, 0, rows);
    auto step_grad_gates = grad_gates.narrow(0, offset, rows);

    LstmBackwardPointwiseParams params;
    params.rows = rows;
    params.hidden = H;
    params.gates = address_of_row(gates_c, offset);
    params.cell_prev = address_of_row(cell_prev_c, offset);
    params.grad_cell = grad_cell_state.data_ptr();
    params.grad_gates = step_grad_gates.data_ptr();
    if (projected) {
      auto step_total = grad_hidden_total.narrow(0, offset, rows);
      at::add_out(step_total, grad_output_c.narrow(0, offset, rows), step_grad_hidden);
      auto step_grad_proj_input = grad_proj_input.narrow(0, 0, rows);
      at::mm_out(step_grad_proj_input, step_total, *weight_hr);
      params.grad_hidden = step_grad_proj_input.data_ptr();
      params.grad_hidden_2 = nullptr;
    } else {
      params.grad_hidden = address_of_row(grad_output_c, offset);
      params.grad_hidden_2 = step_grad_hidden.data_ptr();
    }
    backend.backward(params, dtype);
    at::mm_out(step_grad_hidden, step_grad_gates, weight_hh);
  }

  // Everything that does not feed the recurrence is one large GEMM or reduction over all rows.
  auto grad_input = at::mm(grad_gates, weight_ih);
  auto grad_weight_ih = at::mm(grad_gates.t(), input);
  auto grad_weight_hh = at::mm(grad_gates.t(), previous_hidden(shape, output, h0, reverse));
  auto grad_bias = has_bias ? grad_gates.sum(0) : at::empty({0}, input.options());
  auto grad_weight_hr = projected ? at::mm(grad_hidden_total.t(), proj_input) : at::empty({0}, input.options());
  return {grad_input, grad_hidden_state, grad_cell_state.to(dtype), grad_weight_ih, grad_weight_hh, grad_bias,
          grad_weight_hr};
}

}  // namespace fused_lstm
