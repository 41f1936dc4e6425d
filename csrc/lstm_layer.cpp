#include "lstm_layer.h"

#include <algorithm>
#include <string>
#include <vector>

#include <ATen/Parallel.h>

#include "checks.h"
#include "gemm.h"
#include "sequence.h"

namespace fused_lstm {
namespace {

// Sizes of one LSTM layer after every argument was checked.
struct LstmShape {
  SequenceLayout layout;
  int64_t H;  // hidden size
  int64_t P;  // output (state) size: proj_size, or H
};

// c0 (forward) and grad_c_n (backward) share the [B, H] check; `cell_name` is the caller's argument name.
LstmShape check_lstm_arguments(const char* op, const at::Tensor& input, const at::Tensor& batch_sizes,
                               const at::Tensor& h0, const at::Tensor& cell, const char* cell_name,
                               const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                               const std::optional<at::Tensor>& weight_hr) {
  LstmShape shape;
  shape.layout = check_sequence(op, input, batch_sizes, h0);
  const LayerSizes sizes = check_weights(op, input, h0, weight_ih, weight_hh, kLstmGates);
  shape.H = sizes.hidden_size;
  shape.P = sizes.state_size;
  check_dim(op, cell, cell_name, 2);
  check_dtype_like_input(op, cell, cell_name, input);
  check_shape(op, cell, cell_name, {shape.layout.batch, shape.H});
  if (weight_hr.has_value()) {
    check_dtype_like_input(op, *weight_hr, "weight_hr", input);
    check_shape(op, *weight_hr, "weight_hr", {shape.P, shape.H});
    TORCH_CHECK(shape.P < shape.H, op, ": the projection size (", shape.P, ") must be smaller than hidden_size (",
                shape.H, ")");
  } else {
    TORCH_CHECK(shape.P == shape.H, op, ": without a projection, h0 must have hidden_size (", shape.H,
                ") columns, got ", shape.P);
  }
  return shape;
}


using LstmBackwardOutputs =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// What the backward paths below share: the checked arguments, made contiguous, and the gradients flowing back
// through the recurrence.
struct BackwardState {
  const SequenceLayout& layout;
  int64_t H, P;
  bool reverse, has_bias, compute_grad_input, compute_grad_weights;
  const at::Tensor& input;                    // [N, C]
  const at::Tensor& h0;                       // [B, P]
  const at::Tensor& weight_ih;                // [4H, C]
  const at::Tensor& weight_hh;                // [4H, P]
  const std::optional<at::Tensor>& weight_hr; // [P, H]
  const at::Tensor& output;                   // [N, P]
  const at::Tensor& proj_input;               // [N, H] with a projection
  at::Tensor grad_output;                     // [N, P] contiguous
  at::Tensor gates;                           // [N, 4H] contiguous
  at::Tensor cell_prev;                       // [N, H] acc, contiguous
  at::Tensor grad_hidden_state;               // [B, P] in: dL/dh_n; out: dL/dh0
  at::Tensor grad_cell_state;                 // [B, H] acc; in: dL/dc_n; out: dL/dc0
};

// The backward of a backend that runs the whole recurrence (padded input, no projection) goes through the
// sequence in blocks of steps, in the backward's order: the backend writes one block's dL/d(pre-activations)
// into a buffer reused block after block, and the input and weight gradients of the block are taken from it
// right away, while it is still in the last-level cache. So the backward never holds [N, 4H], and the buffer
// is not fresh memory faulted in page by page for every block. Bytes of that buffer:
constexpr int64_t kGradGatesBlockBytes = int64_t(8) << 20;

LstmBackwardOutputs backward_whole_recurrence(BackwardState& state, const RecurrenceKernel& kernel,
                                              const LstmBackend& backend) {
  const SequenceLayout& layout = state.layout;
  const int64_t H = state.H;
  const bool reverse = state.reverse, has_bias = state.has_bias;
  const bool compute_grad_input = state.compute_grad_input, compute_grad_weights = state.compute_grad_weights;
  const at::Tensor &input = state.input, &h0 = state.h0, &weight_ih = state.weight_ih, &weight_hh = state.weight_hh;
  const at::Tensor &output = state.output, &gates = state.gates, &cell_prev = state.cell_prev;
  const at::Tensor &grad_output = state.grad_output, &grad_hidden_state = state.grad_hidden_state;
  const at::Tensor& grad_cell_state = state.grad_cell_state;
  const int64_t T = layout.steps, B = layout.batch, N = layout.rows, C = input.size(1);
  const auto dtype = input.scalar_type();
  const auto options = input.options();
  const auto empty = [&] { return at::empty({0}, options); };
  const int64_t step_bytes = std::max<int64_t>(1, B * 4 * H * input.element_size());
  const int64_t block_steps = std::clamp<int64_t>(kGradGatesBlockBytes / step_bytes, 1, T);
  auto grad_gates = at::empty({block_steps * B, 4 * H}, options);
  auto grad_input = compute_grad_input ? at::empty({N, C}, options) : empty();
  auto grad_weight_ih = compute_grad_weights ? at::empty({4 * H, C}, options) : empty();
  auto grad_weight_hh = compute_grad_weights ? at::empty({4 * H, H}, options) : empty();
  auto grad_bias = compute_grad_weights && has_bias ? at::zeros({4 * H}, options) : empty();
  const at::Tensor weight_hh_prepared = backend.recurrence_backward_prepare_weight(weight_hh, kernel);

  LstmRecurrenceBackwardParams params;
  params.batch = B;
  params.hidden = H;
  params.reverse = reverse;
  params.weight_hh_prepared = weight_hh_prepared.data_ptr();
  params.grad_hidden_n = grad_hidden_state.data_ptr();
  params.grad_cell = grad_cell_state.data_ptr();
  params.grad_gates = grad_gates.data_ptr();
  const int64_t blocks = at::divup(T, block_steps);
  for (int64_t block = 0; block < blocks; ++block) {
    // The forward visited the steps upwards (downwards in reverse); the backward starts at its end.
    const int64_t first_step = reverse ? block * block_steps : std::max<int64_t>(0, T - (block + 1) * block_steps);
    const int64_t end_step = reverse ? std::min(T, first_step + block_steps) : T - block * block_steps;
    const int64_t first_row = first_step * B, rows = (end_step - first_step) * B;
    params.steps = end_step - first_step;
    params.gates = row_address(gates, first_row);
    params.cell_prev = row_address(cell_prev, first_row);
    params.grad_output = row_address(grad_output, first_row);
    backend.recurrence_backward(params, dtype, kernel);
    const at::Tensor block_grad_gates = grad_gates.narrow(0, 0, rows);
    // dL/dh into the next block (dL/dh0 after the last) = dL/d(pre-activations of the block's first
    // visited step)·W_hh; the backend read the previous value already.
    const int64_t entry_step = reverse ? end_step - 1 : first_step;
    gemm_into(grad_hidden_state, block_grad_gates.narrow(0, (entry_step - first_step) * B, B), weight_hh, 0.0f);
    if (compute_grad_input) gemm_into(grad_input.narrow(0, first_row, rows), block_grad_gates, weight_ih, 0.0f);
    if (!compute_grad_weights) continue;
    const float beta = block == 0 ? 0.0f : 1.0f;
    gemm_into(grad_weight_ih, block_grad_gates.t(), input.narrow(0, first_row, rows), beta);
    add_recurrent_weight_gradient(grad_weight_hh, layout, first_step, end_step, block_grad_gates, output, h0, reverse,
                                  beta);
    if (has_bias) grad_bias.add_(block_grad_gates.sum(0));
  }
  return {grad_input, grad_hidden_state, grad_cell_state.to(dtype), grad_weight_ih, grad_weight_hh, grad_bias,
          empty()};
}

// lstm_layer_forward's results for a one-step layer without projection (N = B rows) from the backend's fused
// cell: output and h_n are h1, c_n is c1, and what backward needs (the activations, c_{t-1} = c0) when saving.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> one_step_with_fused_cell(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const at::Tensor& combined_bias, bool has_bias, bool save_for_backward,
    const LstmBackend& backend) {
  const auto dtype = input.scalar_type();
  const auto empty = [&] { return at::empty({0}, input.options()); };
  auto step = run_fused_lstm_cell(input, h0, c0, weight_ih, weight_hh,
                                  has_bias ? combined_bias : at::Tensor(), at::Tensor(), save_for_backward, backend);
  // Outputs of an op must not alias one another: h_n is a copy of the step's output.
  if (!save_for_backward) return {step.h1, step.h1.clone(), step.c1.to(dtype), empty(), empty(), empty()};
  return {step.h1, step.h1.clone(), step.c1.to(dtype), step.gates, step.c0.clone(), empty()};
}

// The one place that chooses a layer's path. Forward: the backend's fused cell for one unprojected step, its
// whole-recurrence kernel, or the per-step loop (GEMM + the backend's pointwise pass per step).
enum class Path { kFusedCell, kWholeRecurrence, kPerStep };

struct ChosenPath {
  Path path;
  RecurrenceKernel kernel;  // the whole-recurrence kernel, handed down to the backend that runs it
};

ChosenPath choose_forward(const SequenceLayout& layout, int64_t C, int64_t H, bool projected, at::ScalarType dtype,
                          const LstmBackend& backend) {
  if (layout.steps == 1 && !projected && backend.cell_forward_supported != nullptr &&
      backend.cell_forward_supported(layout.batch, C, H, dtype)) {
    return {Path::kFusedCell, {}};
  }
  const LstmRecurrenceShape shape{layout.steps, layout.batch, H, layout.uniform_batch, projected};
  const RecurrenceKernel kernel =
      backend.recurrence_forward_kernel ? backend.recurrence_forward_kernel(shape, dtype) : RecurrenceKernel{};
  return {kernel.name ? Path::kWholeRecurrence : Path::kPerStep, kernel};
}

ChosenPath choose_backward(const SequenceLayout& layout, int64_t H, bool projected, at::ScalarType dtype,
                           const LstmBackend& backend) {
  const LstmRecurrenceShape shape{layout.steps, layout.batch, H, layout.uniform_batch, projected};
  const RecurrenceKernel kernel =
      backend.recurrence_backward_kernel ? backend.recurrence_backward_kernel(shape, dtype) : RecurrenceKernel{};
  return {kernel.name ? Path::kWholeRecurrence : Path::kPerStep, kernel};
}

std::string path_name(const ChosenPath& chosen) {
  switch (chosen.path) {
    case Path::kFusedCell: return "fused cell";
    case Path::kWholeRecurrence: return std::string("whole recurrence (") + chosen.kernel.name + ")";
    default: return "per step";
  }
}

// What the forward paths below share: the checked sizes and the tensors they fill. gates holds x·W_ihᵀ of
// every row on entry unless the whole-recurrence kernel projects the input itself.
struct ForwardState {
  const SequenceLayout& layout;
  int64_t H, P;
  bool reverse, save_for_backward;
  at::Tensor combined_bias;    // [4H] b_ih + b_hh, or zeros
  at::Tensor gates;            // [N, 4H], or empty when the kernel projects the input and nothing is saved
  at::Tensor hidden_state;     // [B, P] in: h0, out: h_n
  at::Tensor cell_state;       // [B, H] acc; in: c0, out: c_n
  at::Tensor output;           // [N, P]
  at::Tensor cell_prev_saved;  // [N, H] acc when saving
  at::Tensor proj_input;       // [N or B, H] o·tanh(c) with a projection
};

// The whole recurrence in one backend call; it writes exactly what forward_per_step writes (gates, c_{t-1},
// output rows, the cell state), and h_n is the output rows of the last visited step. The input and W_ih are
// read only by a kernel that projects the input itself.
void forward_whole_recurrence(ForwardState& state, const at::Tensor& input, const at::Tensor& weight_ih,
                              const at::Tensor& weight_hh, bool projects_input, const RecurrenceKernel& kernel,
                              const LstmBackend& backend) {
  const SequenceLayout& layout = state.layout;
  const at::Tensor input_c = projects_input ? input.contiguous() : at::Tensor();
  const at::Tensor weight_ih_c = projects_input ? weight_ih.contiguous() : at::Tensor();
  const at::Tensor weight_hh_c = weight_hh.contiguous();
  LstmRecurrenceForwardParams params;
  params.steps = layout.steps;
  params.batch = layout.batch;
  params.hidden = state.H;
  params.input_size = input.size(1);
  params.reverse = state.reverse;
  params.save_for_backward = state.save_for_backward;
  params.project_input = projects_input;
  params.input = projects_input ? input_c.data_ptr() : nullptr;
  params.weight_ih = projects_input ? weight_ih_c.data_ptr() : nullptr;
  params.weight_hh = weight_hh_c.data_ptr();
  params.bias = state.combined_bias.data_ptr();
  params.h0 = state.hidden_state.data_ptr();
  params.gates = state.gates.data_ptr();
  params.cell = state.cell_state.data_ptr();
  params.cell_prev_saved = state.save_for_backward ? state.cell_prev_saved.data_ptr() : nullptr;
  params.output = state.output.data_ptr();
  backend.recurrence_forward(params, input.scalar_type(), kernel);
  const int64_t last_step = state.reverse ? 0 : layout.steps - 1;
  state.hidden_state.copy_(state.output.narrow(0, layout.step_offset[last_step], layout.batch));
}

// Per step: h_{t-1}·W_hhᵀ added to the step's gates by a GEMM, the backend's pointwise pass, and with a
// projection h_t = (o·tanh c_t)·W_hrᵀ.
void forward_per_step(ForwardState& state, const at::Tensor& weight_hh, const std::optional<at::Tensor>& weight_hr,
                      at::ScalarType dtype, const LstmBackend& backend) {
  const bool projected = weight_hr.has_value();
  const at::Tensor weight_hh_t = weight_hh.t();
  const at::Tensor weight_hr_t = projected ? weight_hr->t() : at::Tensor();
  for (const int64_t t : state.layout.step_order(state.reverse)) {
    const int64_t rows = state.layout.step_rows[t], offset = state.layout.step_offset[t];
    if (rows == 0) continue;
    auto step_gates = state.gates.narrow(0, offset, rows);
    auto step_hidden = state.hidden_state.narrow(0, 0, rows);
    gemm_into(step_gates, step_hidden, weight_hh_t, 1.0f);

    LstmForwardPointwiseParams params;
    params.rows = rows;
    params.hidden = state.H;
    params.gates = step_gates.data_ptr();
    params.bias = state.combined_bias.data_ptr();
    params.cell = state.cell_state.data_ptr();
    params.cell_prev_saved = state.save_for_backward ? row_address(state.cell_prev_saved, offset) : nullptr;
    if (projected) {
      params.hidden_out = row_address(state.proj_input, state.save_for_backward ? offset : 0);
      params.hidden_state = nullptr;
    } else {
      params.hidden_out = row_address(state.output, offset);
      params.hidden_state = state.hidden_state.data_ptr();
    }
    backend.forward(params, dtype);

    if (projected) {
      auto step_proj_input = state.proj_input.narrow(0, state.save_for_backward ? offset : 0, rows);
      gemm_into(step_hidden, step_proj_input, weight_hr_t, 0.0f);
      state.output.narrow(0, offset, rows).copy_(step_hidden);
    }
  }
}

// Per step, last visited first: the backend's pointwise backward and dL/dh_{t-1} = dL/d(gates)·W_hh by a GEMM
// (through W_hr first with a projection); then everything that does not feed the recurrence as one large GEMM
// or reduction over all rows, each only when something needs it (the input of a first layer over data, frozen
// weights).
LstmBackwardOutputs backward_per_step(BackwardState& state, const LstmBackend& backend) {
  const SequenceLayout& layout = state.layout;
  const int64_t B = layout.batch, N = layout.rows, H = state.H, P = state.P;
  const at::Tensor& input = state.input;
  const auto dtype = input.scalar_type();
  const bool projected = state.weight_hr.has_value();
  // With a projection: the total dL/dh of every row (for dW_hr) and one step's dL/d(o·tanh c).
  at::Tensor grad_hidden_total = projected ? at::empty({N, P}, input.options()) : at::Tensor();
  at::Tensor grad_proj_input = projected ? at::empty({B, H}, input.options()) : at::Tensor();
  auto grad_gates = at::empty({N, 4 * H}, input.options());
  auto order = layout.step_order(state.reverse);
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const int64_t t = *it;
    const int64_t rows = layout.step_rows[t], offset = layout.step_offset[t];
    if (rows == 0) continue;
    auto step_grad_hidden = state.grad_hidden_state.narrow(0, 0, rows);
    auto step_grad_gates = grad_gates.narrow(0, offset, rows);

    LstmBackwardPointwiseParams params;
    params.rows = rows;
    params.hidden = H;
    params.gates = row_address(state.gates, offset);
    params.cell_prev = row_address(state.cell_prev, offset);
    params.grad_cell = state.grad_cell_state.data_ptr();
    params.grad_gates = step_grad_gates.data_ptr();
    if (projected) {
      auto step_total = grad_hidden_total.narrow(0, offset, rows);
      at::add_out(step_total, state.grad_output.narrow(0, offset, rows), step_grad_hidden);
      auto step_grad_proj_input = grad_proj_input.narrow(0, 0, rows);
      gemm_into(step_grad_proj_input, step_total, *state.weight_hr, 0.0f);
      params.grad_hidden = step_grad_proj_input.data_ptr();
      params.grad_hidden_2 = nullptr;
    } else {
      params.grad_hidden = row_address(state.grad_output, offset);
      params.grad_hidden_2 = step_grad_hidden.data_ptr();
    }
    backend.backward(params, dtype);
    gemm_into(step_grad_hidden, step_grad_gates, state.weight_hh, 0.0f);
  }

  const auto empty = [&] { return at::empty({0}, input.options()); };
  auto grad_input = state.compute_grad_input ? gemm(grad_gates, state.weight_ih) : empty();
  auto grad_cell_0 = state.grad_cell_state.to(dtype);
  if (!state.compute_grad_weights) {
    return {grad_input, state.grad_hidden_state, grad_cell_0, empty(), empty(), empty(), empty()};
  }
  auto grad_weight_ih = gemm(grad_gates.t(), input);
  auto grad_weight_hh = recurrent_weight_gradient(layout, grad_gates, state.output, state.h0, state.reverse);
  auto grad_bias = state.has_bias ? grad_gates.sum(0) : empty();
  auto grad_weight_hr = projected ? gemm(grad_hidden_total.t(), state.proj_input) : empty();
  return {grad_input, state.grad_hidden_state, grad_cell_0, grad_weight_ih, grad_weight_hh, grad_bias,
          grad_weight_hr};
}

}  // namespace

std::tuple<std::string, std::string> lstm_layer_paths(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const std::optional<at::Tensor>& weight_hr, const LstmBackend& backend) {
  const char* op = "fused_lstm.layer_paths";
  const SequenceLayout layout = check_sequence(op, input, batch_sizes, h0);
  const LayerSizes sizes = check_weights(op, input, h0, weight_ih, weight_hh, kLstmGates);
  const bool projected = weight_hr.has_value();
  const auto dtype = input.scalar_type();
  return {path_name(choose_forward(layout, sizes.input_size, sizes.hidden_size, projected, dtype, backend)),
          path_name(choose_backward(layout, sizes.hidden_size, projected, dtype, backend))};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_forward(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& weight_ih, const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
    const std::optional<at::Tensor>& bias_hh, const std::optional<at::Tensor>& weight_hr, bool reverse,
    bool save_for_backward, const LstmBackend& backend) {
  const char* op = "fused_lstm.lstm_layer_forward";
  const LstmShape shape = check_lstm_arguments(op, input, batch_sizes, h0, c0, "c0", weight_ih, weight_hh, weight_hr);
  const SequenceLayout& layout = shape.layout;
  const int64_t B = layout.batch, N = layout.rows, H = shape.H, P = shape.P;
  const bool projected = weight_hr.has_value();
  const auto dtype = input.scalar_type();
  const auto acc_options = input.options().dtype(accumulation_dtype(dtype));

  check_biases(op, input, bias_ih, bias_hh, kLstmGates * H);
  const bool has_bias = bias_ih.has_value();
  const at::Tensor combined_bias = has_bias ? summed_bias(bias_ih, bias_hh) : at::zeros({4 * H}, input.options());

  const ChosenPath chosen = choose_forward(layout, input.size(1), H, projected, dtype, backend);
  if (chosen.path == Path::kFusedCell) {
    return one_step_with_fused_cell(input, h0, c0, weight_ih, weight_hh, combined_bias, has_bias,
                                    save_for_backward, backend);
  }
  const LstmRecurrenceShape recurrence_shape{layout.steps, B, H, layout.uniform_batch, projected};
  const bool kernel_projects_input = chosen.path == Path::kWholeRecurrence &&
                                     backend.recurrence_forward_projects_input != nullptr &&
                                     backend.recurrence_forward_projects_input(recurrence_shape, dtype);
  // Absent outputs are distinct empty tensors: outputs of an op must not alias one another.
  const auto empty = [&] { return at::empty({0}, input.options()); };
  ForwardState state{layout, H, P, reverse, save_for_backward, combined_bias};
  // The input projection of every step at once; each step then adds its recurrent term in place. A kernel
  // that projects the input inside its steps needs the gate matrix only to save activations.
  if (!kernel_projects_input) {
    state.gates = gemm(input, weight_ih.t());
  } else {
    state.gates = save_for_backward ? at::empty({N, 4 * H}, input.options()) : empty();
  }
  state.hidden_state = h0.contiguous().clone();
  state.cell_state = c0.to(acc_options.dtype()).contiguous().clone();
  state.output = reusable_empty(N, P, input.options());
  state.cell_prev_saved = save_for_backward ? at::empty({N, H}, acc_options) : empty();
  // With a projection, o·tanh(c) is an intermediate: kept per row for backward, else one step's worth.
  state.proj_input = projected ? at::empty({save_for_backward ? N : B, H}, input.options()) : empty();

  if (chosen.path == Path::kWholeRecurrence) {
    forward_whole_recurrence(state, input, weight_ih, weight_hh, kernel_projects_input, chosen.kernel, backend);
  } else {
    forward_per_step(state, weight_hh, weight_hr, dtype, backend);
  }

  auto cell_n = state.cell_state.to(dtype);
  if (!save_for_backward) return {state.output, state.hidden_state, cell_n, empty(), empty(), empty()};
  return {state.output, state.hidden_state, cell_n, state.gates, state.cell_prev_saved,
          projected ? state.proj_input : empty()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
                    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
                    const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                    const std::optional<at::Tensor>& weight_hr, const at::Tensor& output, const at::Tensor& gates,
                    const at::Tensor& cell_prev, const at::Tensor& proj_input, bool reverse, bool has_bias,
                    bool compute_grad_input, bool compute_grad_weights, const LstmBackend& backend) {
  const char* op = "fused_lstm.lstm_layer_backward";
  const LstmShape shape = check_lstm_arguments(op, input, batch_sizes, h0, grad_c_n, "grad_c_n", weight_ih,
                                               weight_hh, weight_hr);
  const SequenceLayout& layout = shape.layout;
  const int64_t B = layout.batch, N = layout.rows, H = shape.H, P = shape.P;
  const bool projected = weight_hr.has_value();
  const auto dtype = input.scalar_type();
  const auto acc_dtype = accumulation_dtype(dtype);
  for (const NamedTensor& argument : {NamedTensor{"grad_output", &grad_output}, NamedTensor{"grad_h_n", &grad_h_n},
                                      NamedTensor{"output", &output}, NamedTensor{"gates", &gates}}) {
    check_dtype_like_input(op, *argument.tensor, argument.name, input);
  }
  check_device(op, cell_prev, "cell_prev", input.device());
  check_dtype(op, cell_prev, "cell_prev", acc_dtype);
  check_shape(op, grad_output, "grad_output", {N, P});
  check_shape(op, grad_h_n, "grad_h_n", {B, P});
  check_shape(op, output, "output", {N, P});
  check_shape(op, gates, "gates", {N, 4 * H});
  check_shape(op, cell_prev, "cell_prev", {N, H});
  if (projected) {
    check_dtype_like_input(op, proj_input, "proj_input", input);
    check_shape(op, proj_input, "proj_input", {N, H});
  }

  BackwardState state{layout, H, P, reverse, has_bias, compute_grad_input, compute_grad_weights, input, h0,
                      weight_ih, weight_hh, weight_hr, output, proj_input};
  state.grad_output = grad_output.contiguous();
  state.gates = gates.contiguous();
  state.cell_prev = cell_prev.contiguous();
  state.grad_hidden_state = grad_h_n.contiguous().clone();
  state.grad_cell_state = grad_c_n.to(acc_dtype).contiguous().clone();
  const ChosenPath chosen = choose_backward(layout, H, projected, dtype, backend);
  if (chosen.path == Path::kWholeRecurrence) {
    return backward_whole_recurrence(state, chosen.kernel, backend);
  }
  return backward_per_step(state, backend);
}

}  // namespace fused_lstm
