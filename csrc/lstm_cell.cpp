// The LSTMCell ops (one step): the backend's fused cell where it serves the sizes, else two GEMMs and the per-step
// path's pointwise pass; and the one place that fills the fused cell's params, which a one-step layer uses too.
#include "lstm_layer.h"

#include "checks.h"
#include "gemm.h"
#include "sequence.h"

namespace fused_lstm {

FusedCellStep run_fused_lstm_cell(const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
                                  const at::Tensor& weight_ih, const at::Tensor& weight_hh, const at::Tensor& bias_ih,
                                  const at::Tensor& bias_hh, bool save_for_backward, const LstmBackend& backend) {
  const int64_t B = input.size(0), H = c0.size(1);
  const auto dtype = input.scalar_type();
  const auto acc_dtype = accumulation_dtype(dtype);
  FusedCellStep step;
  const auto input_c = input.contiguous(), h0_c = h0.contiguous();
  step.c0 = c0.to(acc_dtype).contiguous();
  const auto weight_ih_c = weight_ih.contiguous(), weight_hh_c = weight_hh.contiguous();
  const auto bias_ih_c = bias_ih.defined() ? bias_ih.contiguous() : at::Tensor();
  const auto bias_hh_c = bias_hh.defined() ? bias_hh.contiguous() : at::Tensor();
  step.h1 = at::empty({B, H}, input.options());
  step.c1 = at::empty({B, H}, input.options().dtype(acc_dtype));
  step.gates = at::empty({save_for_backward ? B : 0, kLstmGates * H}, input.options());
  LstmCellForwardParams params;
  params.batch = B;
  params.input_size = input.size(1);
  params.hidden = H;
  params.input = input_c.data_ptr();
  params.h0 = h0_c.data_ptr();
  params.c0 = step.c0.data_ptr();
  params.weight_ih = weight_ih_c.data_ptr();
  params.weight_hh = weight_hh_c.data_ptr();
  params.bias_ih = bias_ih_c.defined() ? bias_ih_c.data_ptr() : nullptr;
  params.bias_hh = bias_hh_c.defined() ? bias_hh_c.data_ptr() : nullptr;
  params.h1 = step.h1.data_ptr();
  params.c1 = step.c1.data_ptr();
  params.gates = save_for_backward ? step.gates.data_ptr() : nullptr;
  backend.cell_forward(params, dtype);
  return step;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_cell_forward(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
    bool save_for_backward, const LstmBackend& backend) {
  const char* op = "fused_lstm.lstm_cell_forward";
  const CellSizes sizes = check_cell(op, input, h0, weight_ih, weight_hh, bias_ih, bias_hh, kLstmGates);
  const int64_t B = sizes.batch, H = sizes.hidden;
  check_dim(op, c0, "c0", 2);
  check_dtype_like_input(op, c0, "c0", input);
  check_shape(op, c0, "c0", {B, H});
  const auto dtype = input.scalar_type();
  const auto acc_dtype = accumulation_dtype(dtype);
  const auto empty = [&] { return at::empty({0}, input.options()); };

  if (backend.cell_forward_supported != nullptr &&
      backend.cell_forward_supported(B, sizes.input_size, H, dtype)) {
    auto step = run_fused_lstm_cell(input, h0, c0, weight_ih, weight_hh,
                                    bias_ih.has_value() ? *bias_ih : at::Tensor(),
                                    bias_hh.has_value() ? *bias_hh : at::Tensor(), save_for_backward, backend);
    return {step.h1, step.c1.to(dtype), save_for_backward ? step.gates : empty()};
  }

  // Two GEMMs into the gate matrix, then the pointwise pass of one step (the per-step path's).
  auto gates = gemm(input, weight_ih.t());
  gemm_into(gates, h0, weight_hh.t(), 1.0f);
  const auto bias = bias_ih.has_value() ? summed_bias(bias_ih, bias_hh) : at::zeros({kLstmGates * H}, input.options());
  auto cell = c0.to(acc_dtype).contiguous().clone();  // updated in place
  auto h1 = at::empty({B, H}, input.options());
  LstmForwardPointwiseParams params;
  params.rows = B;
  params.hidden = H;
  params.gates = gates.data_ptr();
  params.bias = bias.data_ptr();
  params.cell = cell.data_ptr();
  params.cell_prev_saved = nullptr;
  params.hidden_out = h1.data_ptr();
  params.hidden_state = nullptr;
  backend.forward(params, dtype);
  return {h1, cell.to(dtype), save_for_backward ? gates : empty()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_cell_backward(
    const at::Tensor& grad_h1, const at::Tensor& grad_c1, const at::Tensor& input, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& weight_ih, const at::Tensor& weight_hh, const at::Tensor& gates,
    bool has_bias, bool compute_grad_input, bool compute_grad_weights, const LstmBackend& backend) {
  const char* op = "fused_lstm.lstm_cell_backward";
  const CellSizes sizes = check_cell(op, input, h0, weight_ih, weight_hh, std::nullopt, std::nullopt, kLstmGates);
  const int64_t B = sizes.batch, H = sizes.hidden;
  for (const NamedTensor& argument : {NamedTensor{"grad_h1", &grad_h1}, NamedTensor{"grad_c1", &grad_c1},
                                      NamedTensor{"c0", &c0}, NamedTensor{"gates", &gates}}) {
    check_dtype_like_input(op, *argument.tensor, argument.name, input);
  }
  check_shape(op, grad_h1, "grad_h1", {B, H});
  check_shape(op, grad_c1, "grad_c1", {B, H});
  check_shape(op, c0, "c0", {B, H});
  check_shape(op, gates, "gates", {B, kLstmGates * H});
  const auto dtype = input.scalar_type();
  const auto acc_dtype = accumulation_dtype(dtype);
  const auto gates_c = gates.contiguous(), grad_h1_c = grad_h1.contiguous();
  const auto cell_prev = c0.to(acc_dtype).contiguous();
  auto grad_cell = grad_c1.to(acc_dtype).contiguous().clone();  // in: dL/dc1, out: dL/dc0
  auto grad_gates = at::empty({B, kLstmGates * H}, input.options());
  LstmBackwardPointwiseParams params;
  params.rows = B;
  params.hidden = H;
  params.gates = gates_c.data_ptr();
  params.cell_prev = cell_prev.data_ptr();
  params.grad_hidden = grad_h1_c.data_ptr();
  params.grad_hidden_2 = nullptr;
  params.grad_cell = grad_cell.data_ptr();
  params.grad_gates = grad_gates.data_ptr();
  backend.backward(params, dtype);

  const auto empty = [&] { return at::empty({0}, input.options()); };
  auto grad_h0 = gemm(grad_gates, weight_hh);
  auto grad_input = compute_grad_input ? gemm(grad_gates, weight_ih) : empty();
  if (!compute_grad_weights) return {grad_input, grad_h0, grad_cell.to(dtype), empty(), empty(), empty()};
  return {grad_input, grad_h0, grad_cell.to(dtype), weight_gradient_gemm(grad_gates.t(), input),
          weight_gradient_gemm(grad_gates.t(), h0),
          has_bias ? grad_gates.sum(0) : empty()};
}

}  // namespace fused_lstm
