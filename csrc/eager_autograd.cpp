#include "eager_autograd.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/utils/pybind.h>  // the Tensor casters; not torch/extension.h, which doubles the compile time

#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace fused_lstm {
namespace {

namespace py = pybind11;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptionalTensor = std::optional<at::Tensor>;
using Tensors3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Tensors4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Tensors6 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Tensors7 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// ops._differentiable_backward (eager_autograd.h). Set once at import; never destroyed (the interpreter may be
// gone at exit).
py::object& differentiable_backward() {
  static auto* function = new py::object();
  return *function;
}

// The op fused_lstm::<name> with the signature Fn, looked up once per call site.
template <typename Fn>
c10::TypedOperatorHandle<Fn> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>();
}

at::Tensor value_or_undefined(const OptionalTensor& tensor) { return tensor.value_or(at::Tensor()); }

at::Tensor zeros_if_undefined(const at::Tensor& grad, const at::Tensor& like) {
  return grad.defined() ? grad : at::zeros_like(like);
}

OptionalTensor optional_if_defined(const at::Tensor& tensor) {
  return tensor.defined() ? OptionalTensor(tensor) : std::nullopt;
}

// Each gradient where its argument needs one, else undefined.
variable_list where_needed(const std::vector<bool>& needed, variable_list grads) {
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!needed[i]) grads[i] = at::Tensor();
  }
  return grads;
}

// The autograd of one forward op, described by Op:
//   kName                the op as ops.py's specs name it;
//   kArguments           its tensor arguments, in schema order: the saved values begin with them;
//   kPlainArguments      its other arguments (reverse), after them, but save_for_backward;
//   kOutputs             its differentiable outputs, the leading ones (the rest are saved for backward);
//   run(arguments...)    -> (outputs, saved values, reverse);
//   backward(saved, grads, needed, reverse) -> a gradient for each tensor argument (undefined where not needed).
template <typename Op>
struct OpAutograd : torch::autograd::Function<OpAutograd<Op>> {
  template <typename... Arguments>
  static variable_list forward(AutogradContext* ctx, const Arguments&... arguments) {
    auto [outputs, saved, reverse] = Op::run(arguments...);
    ctx->set_materialize_grads(false);  // as ops.py: the backward makes the zeros it needs
    ctx->mark_non_differentiable(variable_list(outputs.begin() + Op::kOutputs, outputs.end()));
    ctx->save_for_backward(saved);
    ctx->saved_data["reverse"] = reverse;
    return outputs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const bool reverse = ctx->saved_data["reverse"].toBool();
    // needs_input_grad counts edges, which only the defined tensor arguments have.
    std::vector<bool> needed;
    size_t edge = 0;
    for (size_t i = 0; i < Op::kArguments; ++i) needed.push_back(saved[i].defined() && ctx->needs_input_grad(edge++));
    grads.resize(Op::kOutputs);
    variable_list result;
    if (at::GradMode::is_enabled()) {
      py::gil_scoped_acquire gil;
      TORCH_CHECK(differentiable_backward(), "fused_lstm: the differentiable backward was never set");
      std::vector<OptionalTensor> saved_values, grad_values;
      for (const auto& tensor : saved) saved_values.push_back(optional_if_defined(tensor));
      for (const auto& grad : grads) grad_values.push_back(optional_if_defined(grad));
      const auto computed = differentiable_backward()(Op::kName, saved_values, needed, grad_values, reverse)
                                .template cast<std::vector<OptionalTensor>>();
      for (size_t i = 0; i < Op::kArguments; ++i) result.push_back(value_or_undefined(computed.at(i)));
    } else {
      result = where_needed(needed, Op::backward(saved, grads, needed, reverse));
    }
    result.resize(Op::kArguments + Op::kPlainArguments);  // none for reverse
    return result;
  }
};

bool any_of(const std::vector<bool>& needed, std::initializer_list<size_t> indices) {
  for (size_t i : indices) {
    if (needed[i]) return true;
  }
  return false;
}

struct LstmLayer {
  static constexpr const char* kName = "lstm_layer_forward";
  // Saved: input, batch_sizes, h0, c0, weight_ih, weight_hh, bias, weight_hr, then output, gates, cell_prev,
  // proj_input.
  static constexpr size_t kArguments = 8, kPlainArguments = 1, kOutputs = 3;

  static std::tuple<variable_list, variable_list, bool> run(const at::Tensor& input, const at::Tensor& batch_sizes,
                                                           const at::Tensor& h0, const at::Tensor& c0,
                                                           const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                                           const OptionalTensor& bias, const OptionalTensor& weight_hr,
                                                           bool reverse) {
    static const auto op = typed_op<Tensors6(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const OptionalTensor&, const OptionalTensor&, bool, bool)>(
        "fused_lstm::lstm_layer_forward");
    auto [output, h_n, c_n, gates, cell_prev, proj_input] =
        op.call(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias, weight_hr, reverse, true);
    return {{output, h_n, c_n, gates, cell_prev, proj_input},
            {input, batch_sizes, h0, c0, weight_ih, weight_hh, value_or_undefined(bias), value_or_undefined(weight_hr),
             output, gates, cell_prev, proj_input},
            reverse};
  }

  static variable_list backward(const variable_list& s, const variable_list& grads, const std::vector<bool>& needed,
                                bool reverse) {
    static const auto op = typed_op<Tensors7(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
        const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptionalTensor&, const at::Tensor&,
        const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, bool, bool, bool)>(
        "fused_lstm::lstm_layer_backward");
    auto [input, h0, c0, weight_ih, weight_hh, bias, weight_hr] =
        op.call(zeros_if_undefined(grads[0], s[8]), zeros_if_undefined(grads[1], s[2]),
                zeros_if_undefined(grads[2], s[3]), s[0], s[1], s[2], s[4], s[5], optional_if_defined(s[7]), s[8],
                s[9], s[10], s[11], reverse, s[6].defined(), needed[0], any_of(needed, {4, 5, 6, 7}));
    return {input, at::Tensor(), h0, c0, weight_ih, weight_hh, bias, weight_hr};
  }
};

struct GruLayer {
  static constexpr const char* kName = "gru_layer_forward";
  // Saved: input, batch_sizes, h0, weight_ih, weight_hh, bias_ih, bias_hh, then output, gates, candidate_hidden.
  static constexpr size_t kArguments = 7, kPlainArguments = 1, kOutputs = 2;

  static std::tuple<variable_list, variable_list, bool> run(const at::Tensor& input, const at::Tensor& batch_sizes,
                                                           const at::Tensor& h0, const at::Tensor& weight_ih,
                                                           const at::Tensor& weight_hh, const OptionalTensor& bias_ih,
                                                           const OptionalTensor& bias_hh, bool reverse) {
    static const auto op = typed_op<Tensors4(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                                             const OptionalTensor&, bool, bool)>("fused_lstm::gru_layer_forward");
    auto [output, h_n, gates, candidate_hidden] =
        op.call(input, batch_sizes, h0, weight_ih, weight_hh, bias_ih, bias_hh, reverse, true);
    return {{output, h_n, gates, candidate_hidden},
            {input, batch_sizes, h0, weight_ih, weight_hh, value_or_undefined(bias_ih), value_or_undefined(bias_hh),
             output, gates, candidate_hidden},
            reverse};
  }

  static variable_list backward(const variable_list& s, const variable_list& grads, const std::vector<bool>& needed,
                                bool reverse) {
    static const auto op = typed_op<Tensors6(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const at::Tensor&, bool, bool, bool, bool)>(
        "fused_lstm::gru_layer_backward");
    auto [input, h0, weight_ih, weight_hh, bias_ih, bias_hh] =
        op.call(zeros_if_undefined(grads[0], s[7]), zeros_if_undefined(grads[1], s[2]), s[0], s[1], s[2], s[3],
                s[4], s[7], s[8], s[9], reverse, s[5].defined(), needed[0], any_of(needed, {3, 4, 5, 6}));
    return {input, at::Tensor(), h0, weight_ih, weight_hh, bias_ih, bias_hh};
  }
};

struct LstmCell {
  static constexpr const char* kName = "lstm_cell_forward";
  // Saved: input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, then h1, gates.
  static constexpr size_t kArguments = 7, kPlainArguments = 0, kOutputs = 2;

  static std::tuple<variable_list, variable_list, bool> run(const at::Tensor& input, const at::Tensor& h0,
                                                           const at::Tensor& c0, const at::Tensor& weight_ih,
                                                           const at::Tensor& weight_hh, const OptionalTensor& bias_ih,
                                                           const OptionalTensor& bias_hh) {
    static const auto op = typed_op<Tensors3(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                                             const OptionalTensor&, bool)>("fused_lstm::lstm_cell_forward");
    auto [h1, c1, gates] = op.call(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, true);
    return {{h1, c1, gates},
            {input, h0, c0, weight_ih, weight_hh, value_or_undefined(bias_ih), value_or_undefined(bias_hh), h1, gates},
            false};
  }

  static variable_list backward(const variable_list& s, const variable_list& grads, const std::vector<bool>& needed,
                                bool) {
    static const auto op = typed_op<Tensors6(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const at::Tensor&, const at::Tensor&, bool, bool, bool)>(
        "fused_lstm::lstm_cell_backward");
    auto [input, h0, c0, weight_ih, weight_hh, bias] =
        op.call(zeros_if_undefined(grads[0], s[1]), zeros_if_undefined(grads[1], s[2]), s[0], s[1], s[2], s[3],
                s[4], s[8], s[5].defined(), needed[0], any_of(needed, {3, 4, 5, 6}));
    return {input, h0, c0, weight_ih, weight_hh, bias, bias};  // b_ih and b_hh enter the gates alike
  }
};

struct GruCell {
  static constexpr const char* kName = "gru_cell_forward";
  // Saved: input, h0, weight_ih, weight_hh, bias_ih, bias_hh, then h1, gates, candidate_hidden.
  static constexpr size_t kArguments = 6, kPlainArguments = 0, kOutputs = 1;

  static std::tuple<variable_list, variable_list, bool> run(const at::Tensor& input, const at::Tensor& h0,
                                                           const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                                           const OptionalTensor& bias_ih,
                                                           const OptionalTensor& bias_hh) {
    static const auto op = typed_op<Tensors3(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const at::Tensor&, const OptionalTensor&, const OptionalTensor&, bool)>(
        "fused_lstm::gru_cell_forward");
    auto [h1, gates, candidate_hidden] = op.call(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, true);
    return {{h1, gates, candidate_hidden},
            {input, h0, weight_ih, weight_hh, value_or_undefined(bias_ih), value_or_undefined(bias_hh), h1, gates,
             candidate_hidden},
            false};
  }

  static variable_list backward(const variable_list& s, const variable_list& grads, const std::vector<bool>& needed,
                                bool) {
    static const auto op = typed_op<Tensors6(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const at::Tensor&, bool, bool, bool)>("fused_lstm::gru_cell_backward");
    auto [input, h0, weight_ih, weight_hh, bias_ih, bias_hh] =
        op.call(zeros_if_undefined(grads[0], s[1]), s[0], s[1], s[2], s[3], s[7], s[8], s[4].defined(), needed[0],
                any_of(needed, {2, 3, 4, 5}));
    return {input, h0, weight_ih, weight_hh, bias_ih, bias_hh};
  }
};

}  // namespace

void bind_eager_autograd(py::module_& module) {
  module.def("lstm_layer_forward_autograd", [](const at::Tensor& input, const at::Tensor& batch_sizes,
                                               const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_ih,
                                               const at::Tensor& weight_hh, const OptionalTensor& bias,
                                               const OptionalTensor& weight_hr, bool reverse) {
    return OpAutograd<LstmLayer>::apply(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias, weight_hr, reverse);
  });
  module.def("gru_layer_forward_autograd", [](const at::Tensor& input, const at::Tensor& batch_sizes,
                                              const at::Tensor& h0, const at::Tensor& weight_ih,
                                              const at::Tensor& weight_hh, const OptionalTensor& bias_ih,
                                              const OptionalTensor& bias_hh, bool reverse) {
    return OpAutograd<GruLayer>::apply(input, batch_sizes, h0, weight_ih, weight_hh, bias_ih, bias_hh, reverse);
  });
  module.def("lstm_cell_forward_autograd", [](const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
                                              const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                              const OptionalTensor& bias_ih, const OptionalTensor& bias_hh) {
    return OpAutograd<LstmCell>::apply(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh);
  });
  module.def("gru_cell_forward_autograd", [](const at::Tensor& input, const at::Tensor& h0,
                                             const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                             const OptionalTensor& bias_ih, const OptionalTensor& bias_hh) {
    return OpAutograd<GruCell>::apply(input, h0, weight_ih, weight_hh, bias_ih, bias_hh);
  });
  module.def("set_differentiable_backward", [](py::object function) { differentiable_backward() = function; });
}

}  // namespace fused_lstm
