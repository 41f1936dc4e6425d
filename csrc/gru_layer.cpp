#include "gru_layer.h"

#include <string>

#include "checks.h"
#include "gemm.h"
#include "sequence.h"

namespace fused_lstm {
namespace {

constexpr int64_t kGruGates = 3;

struct GruShape {
  SequenceLayout layout;
  int64_t H;
};

GruShape check_gru_arguments(const char* op, const at::Tensor& input, const at::Tensor& batch_sizes,
                             const at::Tensor& h0, const at::Tensor& weight_ih, const at::Tensor& weight_hh) {
  GruShape shape;
  shape.layout = check_sequence(op, input, batch_sizes, h0);
  const LayerSizes sizes = check_weights(op, input, h0, weight_ih, weight_hh, kGruGates);
  shape.H = sizes.hidden_size;
  TORCH_CHECK(sizes.state_size == shape.H, op, ": h0 must have hidden_size (", shape.H, ") columns, got ",
              sizes.state_size);
  return shape;
}

// A checked bias (check_biases), or zeros without biases.
at::Tensor bias_or_zeros(const at::Tensor& input, const std::optional<at::Tensor>& bias, int64_t size) {
  return bias.has_value() ? bias->contiguous() : at::zeros({size}, input.options());
}

// The one place that chooses a GRU layer's forward path: the backend's fused cell for one step, else per step.
bool runs_fused_cell(const SequenceLayout& layout, int64_t C, int64_t H, at::ScalarType dtype,
                     const GruBackend& backend) {
  return layout.steps == 1 && backend.cell_forward_supported != nullptr &&
         backend.cell_forward_supported(layout.batch, C, H, dtype);
}

}  // namespace

std::tuple<std::string, std::string> gru_layer_paths(const at::Tensor& input, const at::Tensor& batch_sizes,
                                                     const at::Tensor& h0, const at::Tensor& weight_ih,
                                                     const at::Tensor& weight_hh, const GruBackend& backend) {
  const char* op = "fused_lstm.layer_paths";
  const GruShape shape = check_gru_arguments(op, input, batch_sizes, h0, weight_ih, weight_hh);
  return {runs_fused_cell(shape.layout, input.size(1), shape.H, input.scalar_type(), backend) ? "fused cell"
                                                                                               : "per step",
          "per step"};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_layer_forward(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
    bool reverse, bool save_for_backward, const GruBackend& backend) {
  const char* op = "fused_lstm.gru_layer_forward";
  const GruShape shape = check_gru_arguments(op, input, batch_sizes, h0, weight_ih, weight_hh);
  const SequenceLayout& layout = shape.layout;
  const int64_t B = layout.batch, N = layout.rows, H = shape.H;
  check_biases(op, input, bias_ih, bias_hh, kGruGates * H);
  const auto bias_input = bias_or_zeros(input, bias_ih, kGruGates * H);
  const auto bias_hidden = bias_or_zeros(input, bias_hh, kGruGates * H);

  // One step (a decoder's call): the backend's fused cell, when it has one. output and h_n are h1; h_n a copy
  // (outputs of an op must not alias one another).
  if (runs_fused_cell(layout, input.size(1), H, input.scalar_type(), backend)) {
    auto [h1, gates, candidate] =
        gru_cell_forward(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, save_for_backward, backend);
    return {h1, h1.clone(), gates, candidate};
  }

  auto gates = gemm(input, weight_ih.t());  // the input projection of every step at once
  auto hidden_state = h0.contiguous().clone();
  auto hidden_gates = at::empty({B, kGruGates * H}, input.options());
  auto output = at::empty({N, H}, input.options());
  auto candidate_hidden = save_for_backward ? at::empty({N, H}, input.options()) : at::Tensor();
  const at::Tensor weight_hh_t = weight_hh.t();

  for (const int64_t t : layout.step_order(reverse)) {
    const int64_t rows = layout.step_rows[t], offset = layout.step_offset[t];
    if (rows == 0) continue;
    auto step_hidden_gates = hidden_gates.narrow(0, 0, rows);
    gemm_into(step_hidden_gates, hidden_state.narrow(0, 0, rows), weight_hh_t, 0.0f);

    GruForwardPointwiseParams params;
    params.rows = rows;
    params.hidden = H;
    params.gates = row_address(gates, offset);
    params.hidden_gates = step_hidden_gates.data_ptr();
    params.bias_ih = bias_input.data_ptr();
    params.bias_hh = bias_hidden.data_ptr();
    params.hidden_state = hidden_state.data_ptr();
    params.hidden_out = row_address(output, offset);
    params.candidate_hidden_saved = save_for_backward ? row_address(candidate_hidden, offset) : nullptr;
    backend.forward(params, input.scalar_type());
  }
  // Absent outputs are distinct empty tensors: outputs of an op must not alias one another.
  if (!save_for_backward) {
    return {output, hidden_state, at::empty({0}, input.options()), at::empty({0}, input.options())};
  }
  return {output, hidden_state, gates, candidate_hidden};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_layer_backward(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& input, const at::Tensor& batch_sizes,
    const at::Tensor& h0, const at::Tensor& weight_ih, const at::Tensor& weight_hh, const at::Tensor& output,
    const at::Tensor& gates, const at::Tensor& candidate_hidden, bool reverse, bool has_bias,
    bool compute_grad_input, bool compute_grad_weights, const GruBackend& backend) {
  const char* op = "fused_lstm.gru_layer_backward";
  const GruShape shape = check_gru_arguments(op, input, batch_sizes, h0, weight_ih, weight_hh);
  const SequenceLayout& layout = shape.layout;
  const int64_t B = layout.batch, N = layout.rows, H = shape.H;
  for (const NamedTensor& argument : {NamedTensor{"grad_output", &grad_output}, NamedTensor{"grad_h_n", &grad_h_n},
                                      NamedTensor{"output", &output}, NamedTensor{"gates", &gates},
                                      NamedTensor{"candidate_hidden", &candidate_hidden}}) {
    check_dtype_like_input(op, *argument.tensor, argument.name, input);
  }
  check_shape(op, grad_output, "grad_output", {N, H});
  check_shape(op, grad_h_n, "grad_h_n", {B, H});
  check_shape(op, output, "output", {N, H});
  check_shape(op, gates, "gates", {N, kGruGates * H});
  check_shape(op, candidate_hidden, "candidate_hidden", {N, H});

  const auto gates_c = gates.contiguous();
  const auto candidate_c = candidate_hidden.contiguous();
  const auto grad_output_c = grad_output.contiguous();
  const auto hidden_prev = previous_hidden(layout, output, h0, reverse);
  auto grad_gates = at::empty({N, kGruGates * H}, input.options());
  auto grad_hidden_gates = at::empty({N, kGruGates * H}, input.options());
  auto grad_hidden_state = grad_h_n.contiguous().clone();

  auto order = layout.step_order(reverse);
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const int64_t t = *it;
    const int64_t rows = layout.step_rows[t], offset = layout.step_offset[t];
    if (rows == 0) continue;
    GruBackwardPointwiseParams params;
    params.rows = rows;
    params.hidden = H;
    params.gates = row_address(gates_c, offset);
    params.candidate_hidden = row_address(candidate_c, offset);
    params.hidden_prev = row_address(hidden_prev, offset);
    params.grad_output = row_address(grad_output_c, offset);
    params.grad_hidden = grad_hidden_state.data_ptr();
    params.grad_gates = row_address(grad_gates, offset);
    params.grad_hidden_gates = row_address(grad_hidden_gates, offset);
    backend.backward(params, input.scalar_type());
    gemm_into(grad_hidden_state.narrow(0, 0, rows), grad_hidden_gates.narrow(0, offset, rows), weight_hh, 1.0f);
  }

  // Everything that does not feed the recurrence is one large GEMM or reduction over all rows, each
  // only when something needs it (as for the LSTM).
  const auto empty = [&] { return at::empty({0}, input.options()); };
  auto grad_input = compute_grad_input ? gemm(grad_gates, weight_ih) : empty();
  if (!compute_grad_weights) return {grad_input, grad_hidden_state, empty(), empty(), empty(), empty()};
  auto grad_weight_ih = gemm(grad_gates.t(), input);
  auto grad_weight_hh = gemm(grad_hidden_gates.t(), hidden_prev);
  auto grad_bias_ih = has_bias ? grad_gates.sum(0) : empty();
  auto grad_bias_hh = has_bias ? grad_hidden_gates.sum(0) : empty();
  return {grad_input, grad_hidden_state, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh};
}

}  // namespace fused_lstm

namespace fused_lstm {

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_cell_forward(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh, bool save_for_backward,
    const GruBackend& backend) {
  const char* op = "fused_lstm.gru_cell_forward";
  const CellSizes sizes = check_cell(op, input, h0, weight_ih, weight_hh, bias_ih, bias_hh, kGruGates);
  const int64_t B = sizes.batch, H = sizes.hidden;
  const auto dtype = input.scalar_type();
  const auto empty = [&] { return at::empty({0}, input.options()); };
  auto h1 = at::empty({B, H}, input.options());

  if (backend.cell_forward_supported != nullptr &&
      backend.cell_forward_supported(B, sizes.input_size, H, dtype)) {
    const auto input_c = input.contiguous(), h0_c = h0.contiguous();
    const auto weight_ih_c = weight_ih.contiguous(), weight_hh_c = weight_hh.contiguous();
    const auto bias_ih_c = bias_ih.has_value() ? bias_ih->contiguous() : at::Tensor();
    const auto bias_hh_c = bias_hh.has_value() ? bias_hh->contiguous() : at::Tensor();
    auto gates = save_for_backward ? at::empty({B, kGruGates * H}, input.options()) : empty();
    auto candidate = save_for_backward ? at::empty({B, H}, input.options()) : empty();
    GruCellForwardParams params;
    params.batch = B;
    params.input_size = sizes.input_size;
    params.hidden = H;
    params.input = input_c.data_ptr();
    params.h0 = h0_c.data_ptr();
    params.weight_ih = weight_ih_c.data_ptr();
    params.weight_hh = weight_hh_c.data_ptr();
    params.bias_ih = bias_ih_c.defined() ? bias_ih_c.data_ptr() : nullptr;
    params.bias_hh = bias_hh_c.defined() ? bias_hh_c.data_ptr() : nullptr;
    params.h1 = h1.data_ptr();
    params.gates = save_for_backward ? gates.data_ptr() : nullptr;
    params.candidate_hidden = save_for_backward ? candidate.data_ptr() : nullptr;
    backend.cell_forward(params, dtype);
    return {h1, gates, candidate};
  }

  auto gates = gemm(input, weight_ih.t());
  auto hidden_gates = gemm(h0, weight_hh.t());
  const auto bias_input = bias_or_zeros(input, bias_ih, kGruGates * H);
  const auto bias_hidden = bias_or_zeros(input, bias_hh, kGruGates * H);
  auto hidden_state = h0.contiguous().clone();  // h0 in, h1 out (the pass writes h1 to hidden_out as well)
  auto candidate = save_for_backward ? at::empty({B, H}, input.options()) : empty();
  GruForwardPointwiseParams params;
  params.rows = B;
  params.hidden = H;
  params.gates = gates.data_ptr();
  params.hidden_gates = hidden_gates.data_ptr();
  params.bias_ih = bias_input.data_ptr();
  params.bias_hh = bias_hidden.data_ptr();
  params.hidden_state = hidden_state.data_ptr();
  params.hidden_out = h1.data_ptr();
  params.candidate_hidden_saved = save_for_backward ? candidate.data_ptr() : nullptr;
  backend.forward(params, dtype);
  return {h1, save_for_backward ? gates : empty(), candidate};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_cell_backward(
    const at::Tensor& grad_h1, const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const at::Tensor& gates, const at::Tensor& candidate_hidden, bool has_bias,
    bool compute_grad_input, bool compute_grad_weights, const GruBackend& backend) {
  const char* op = "fused_lstm.gru_cell_backward";
  const CellSizes sizes = check_cell(op, input, h0, weight_ih, weight_hh, std::nullopt, std::nullopt, kGruGates);
  const int64_t B = sizes.batch, H = sizes.hidden;
  for (const NamedTensor& argument : {NamedTensor{"grad_h1", &grad_h1}, NamedTensor{"gates", &gates},
                                      NamedTensor{"candidate_hidden", &candidate_hidden}}) {
    check_dtype_like_input(op, *argument.tensor, argument.name, input);
  }
  check_shape(op, grad_h1, "grad_h1", {B, H});
  check_shape(op, gates, "gates", {B, kGruGates * H});
  check_shape(op, candidate_hidden, "candidate_hidden", {B, H});
  const auto gates_c = gates.contiguous(), candidate_c = candidate_hidden.contiguous();
  const auto h0_c = h0.contiguous(), grad_h1_c = grad_h1.contiguous();
  // The pass adds dL/dh1 from the output and from the recurrence: here all of it comes as the output's, and
  // the recurrence's zeros come back as the direct part of dL/dh0, z·dL/dh1.
  auto grad_h0 = at::zeros({B, H}, input.options());
  auto grad_gates = at::empty({B, kGruGates * H}, input.options());
  auto grad_hidden_gates = at::empty({B, kGruGates * H}, input.options());
  GruBackwardPointwiseParams params;
  params.rows = B;
  params.hidden = H;
  params.gates = gates_c.data_ptr();
  params.candidate_hidden = candidate_c.data_ptr();
  params.hidden_prev = h0_c.data_ptr();
  params.grad_output = grad_h1_c.data_ptr();
  params.grad_hidden = grad_h0.data_ptr();
  params.grad_gates = grad_gates.data_ptr();
  params.grad_hidden_gates = grad_hidden_gates.data_ptr();
  backend.backward(params, input.scalar_type());
  gemm_into(grad_h0, grad_hidden_gates, weight_hh, 1.0f);

  const auto empty = [&] { return at::empty({0}, input.options()); };
  auto grad_input = compute_grad_input ? gemm(grad_gates, weight_ih) : empty();
  if (!compute_grad_weights) return {grad_input, grad_h0, empty(), empty(), empty(), empty()};
  return {grad_input, grad_h0, weight_gradient_gemm(grad_gates.t(), input),
          weight_gradient_gemm(grad_hidden_gates.t(), h0),
          has_bias ? grad_gates.sum(0) : empty(), has_bias ? grad_hidden_gates.sum(0) : empty()};
}

}  // namespace fused_lstm
