#include "cell_autograd.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/extension.h>

#include <optional>
#include <tuple>
#include <vector>

namespace fused_lstm {
namespace {

namespace py = pybind11;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptionalTensor = std::optional<at::Tensor>;

// ops._differentiable_backward(op name, saved tensors, needs_input_grad by argument, grads): the backward under
// create_graph=True. Set once at import; never destroyed (the interpreter may be gone at exit).
py::object& differentiable_backward() {
  static auto* function = new py::object();
  return *function;
}

// needs_input_grad of each tensor argument: an absent optional argument has no edge, so edges count only the
// defined ones.
std::vector<bool> needed_by_argument(AutogradContext* ctx, const variable_list& arguments) {
  std::vector<bool> needed;
  size_t edge = 0;
  for (const auto& argument : arguments) needed.push_back(argument.defined() && ctx->needs_input_grad(edge++));
  return needed;
}

variable_list call_differentiable_backward(const char* op, const variable_list& saved, const std::vector<bool>& needed,
                                           const variable_list& grads) {
  py::gil_scoped_acquire gil;
  TORCH_CHECK(differentiable_backward(), "fused_lstm: the differentiable backward was never set (import fused_lstm)");
  std::vector<OptionalTensor> saved_values(saved.begin(), saved.end()), grad_values;
  for (const auto& grad : grads) grad_values.push_back(grad.defined() ? OptionalTensor(grad) : std::nullopt);
  auto result = differentiable_backward()(op, saved_values, needed, grad_values).cast<std::vector<OptionalTensor>>();
  variable_list out;
  for (size_t i = 0; i < needed.size(); ++i) out.push_back(result.at(i).value_or(at::Tensor()));
  return out;
}

at::Tensor zeros_if_undefined(const at::Tensor& grad, const at::Tensor& like) {
  return grad.defined() ? grad : at::zeros_like(like);
}

at::Tensor if_needed(bool needed, const at::Tensor& grad) { return needed ? grad : at::Tensor(); }

struct LstmCellFunction : torch::autograd::Function<LstmCellFunction> {
  // Saved: the arguments in schema order (input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh), h1, gates.
  static constexpr size_t kArguments = 7;

  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& h0,
                               const at::Tensor& c0, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                               const OptionalTensor& bias_ih, const OptionalTensor& bias_hh) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("fused_lstm::lstm_cell_forward", "")
                               .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                                   const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const at::Tensor&, const OptionalTensor&, const OptionalTensor&, bool)>();
    auto [h1, c1, gates] = op.call(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, true);
    ctx->set_materialize_grads(false);  // as ops.py: the backward makes the zeros it needs
    ctx->mark_non_differentiable({gates});
    ctx->save_for_backward({input, h0, c0, weight_ih, weight_hh, bias_ih.value_or(at::Tensor()),
                            bias_hh.value_or(at::Tensor()), h1, gates});
    return {h1, c1, gates};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const variable_list arguments(saved.begin(), saved.begin() + kArguments);
    const std::vector<bool> needed = needed_by_argument(ctx, arguments);
    if (at::GradMode::is_enabled()) {
      return call_differentiable_backward("lstm_cell_forward", saved, needed, {grads[0], grads[1]});
    }
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("fused_lstm::lstm_cell_backward", "")
                               .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                                 at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                             const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                             const at::Tensor&, const at::Tensor&, bool, bool, bool)>();
    const at::Tensor &input = saved[0], &h0 = saved[1], &c0 = saved[2], &gates = saved[8];
    const bool weights_needed = needed[3] || needed[4] || needed[5] || needed[6];
    auto [grad_input, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias] =
        op.call(zeros_if_undefined(grads[0], h0), zeros_if_undefined(grads[1], c0), input, h0, c0, saved[3],
                saved[4], gates, saved[5].defined(), needed[0], weights_needed);
    // b_ih and b_hh enter the gates alike: one gradient serves both.
    return {if_needed(needed[0], grad_input),     if_needed(needed[1], grad_h0),
            if_needed(needed[2], grad_c0),        if_needed(needed[3], grad_weight_ih),
            if_needed(needed[4], grad_weight_hh), if_needed(needed[5], grad_bias),
            if_needed(needed[6], grad_bias)};
  }
};

struct GruCellFunction : torch::autograd::Function<GruCellFunction> {
  // Saved: the arguments in schema order (input, h0, weight_ih, weight_hh, bias_ih, bias_hh), h1, gates,
  // candidate_hidden.
  static constexpr size_t kArguments = 6;

  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& h0,
                               const at::Tensor& weight_ih, const at::Tensor& weight_hh, const OptionalTensor& bias_ih,
                               const OptionalTensor& bias_hh) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("fused_lstm::gru_cell_forward", "")
                               .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                                   const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const OptionalTensor&, const OptionalTensor&, bool)>();
    auto [h1, gates, candidate_hidden] = op.call(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, true);
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({gates, candidate_hidden});
    ctx->save_for_backward({input, h0, weight_ih, weight_hh, bias_ih.value_or(at::Tensor()),
                            bias_hh.value_or(at::Tensor()), h1, gates, candidate_hidden});
    return {h1, gates, candidate_hidden};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const variable_list arguments(saved.begin(), saved.begin() + kArguments);
    const std::vector<bool> needed = needed_by_argument(ctx, arguments);
    if (at::GradMode::is_enabled()) {
      return call_differentiable_backward("gru_cell_forward", saved, needed, {grads[0]});
    }
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("fused_lstm::gru_cell_backward", "")
                               .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                                 at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                             const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                             const at::Tensor&, bool, bool, bool)>();
    const at::Tensor &input = saved[0], &h0 = saved[1];
    const bool weights_needed = needed[2] || needed[3] || needed[4] || needed[5];
    auto [grad_input, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh] =
        op.call(zeros_if_undefined(grads[0], h0), input, h0, saved[2], saved[3], saved[7], saved[8],
                saved[4].defined(), needed[0], weights_needed);
    return {if_needed(needed[0], grad_input),     if_needed(needed[1], grad_h0),
            if_needed(needed[2], grad_weight_ih), if_needed(needed[3], grad_weight_hh),
            if_needed(needed[4], grad_bias_ih),   if_needed(needed[5], grad_bias_hh)};
  }
};

}  // namespace

void bind_cell_autograd(py::module_& module) {
  module.def("lstm_cell_autograd",
             [](const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_ih,
                const at::Tensor& weight_hh, const OptionalTensor& bias_ih, const OptionalTensor& bias_hh) {
               return LstmCellFunction::apply(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh);
             });
  module.def("gru_cell_autograd",
             [](const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_ih,
                const at::Tensor& weight_hh, const OptionalTensor& bias_ih, const OptionalTensor& bias_hh) {
               return GruCellFunction::apply(input, h0, weight_ih, weight_hh, bias_ih, bias_hh);
             });
  module.def("set_differentiable_backward", [](py::object function) { differentiable_backward() = function; });
}

}  // namespace fused_lstm
