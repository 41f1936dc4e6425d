#include "eager_autograd.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>  // the Tensor casters; not torch/extension.h, which doubles the compile time

#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "op_descriptions.h"

namespace fused_lstm {
namespace {

namespace py = pybind11;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ops' differentiable backward (eager_autograd.h). Set once at import; never destroyed (the interpreter may be
// gone at exit).
py::object& differentiable_backward() {
  static auto* function = new py::object();
  return *function;
}

bool starts_with(const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; }

// One op's description (op_descriptions.h) resolved against its registered schemas, once per process.
struct OpPlan {
  const OpDescription* description;
  c10::OperatorHandle forward, backward;
  std::vector<std::string> arguments;           // the forward's, but save_for_backward
  std::vector<bool> is_tensor;                  // per argument: a Tensor or Tensor?
  std::vector<std::string> saved;               // what the forward saves: its tensor arguments, then outputs
  std::unordered_map<std::string, size_t> saved_at;  // name -> place in `saved`
  std::vector<std::pair<bool, size_t>> saved_from;   // per saved value: (an argument?, its place there or in results)
  std::string bias;                             // the argument whose presence is has_bias

  explicit OpPlan(const OpDescription& d)
      : description(&d),
        forward(find_op(d.kind, "_forward")),
        backward(find_op(d.kind, "_backward")) {
    for (const auto& argument : forward.schema().arguments()) {
      if (argument.name() == "save_for_backward") continue;
      const auto kind = argument.type()->kind();
      arguments.push_back(argument.name());
      is_tensor.push_back(kind == c10::TypeKind::TensorType || kind == c10::TypeKind::OptionalType);
      if (is_tensor.back()) saved.push_back(argument.name());
      if (bias.empty() && starts_with(argument.name(), "bias")) bias = argument.name();
    }
    for (size_t i = 0; i < saved.size(); ++i) saved_from.emplace_back(true, argument_index(saved[i]));
    saved.push_back(d.outputs.front());  // the first output: the backward reads it (and shapes zeros like it)
    for (const char* name : d.saved_outputs) saved.push_back(name);
    const auto& returns = forward.schema().returns();
    for (size_t i = saved_from.size(); i < saved.size(); ++i) {
      size_t r = 0;
      while (r < returns.size() && returns[r].name() != saved[i]) ++r;
      TORCH_CHECK(r < returns.size(), "fused_lstm: ", d.kind, "_forward has no result ", saved[i]);
      saved_from.emplace_back(false, r);
    }
    for (size_t i = 0; i < saved.size(); ++i) saved_at[saved[i]] = i;
  }

  static c10::OperatorHandle find_op(const char* kind, const char* suffix) {
    return c10::Dispatcher::singleton().findSchemaOrThrow((std::string("fused_lstm::") + kind + suffix).c_str(), "");
  }

  std::string forward_name() const { return std::string(description->kind) + "_forward"; }

  static const OpPlan& get(size_t index) {
    static const std::vector<OpPlan> plans = [] {
      std::vector<OpPlan> p;
      for (const auto& d : op_descriptions()) p.emplace_back(d);
      return p;
    }();
    return plans.at(index);
  }

  size_t argument_index(const std::string& name) const {
    for (size_t i = 0; i < arguments.size(); ++i) {
      if (arguments[i] == name) return i;
    }
    TORCH_CHECK(false, "fused_lstm: ", description->kind, "_forward has no argument ", name);
  }

  // The forward argument(s) a result of the backward op is the gradient of.
  std::vector<std::string> gradient_targets(const std::string& result) const {
    std::vector<std::string> targets;
    for (const auto& [from, to] : description->gradient_aliases) {
      if (result == from) targets.push_back(to);
    }
    if (targets.empty()) targets.push_back(result.substr(5));  // grad_<argument>
    return targets;
  }
};

c10::IValue optional_tensor(const at::Tensor& tensor) { return tensor.defined() ? c10::IValue(tensor) : c10::IValue(); }

py::object to_python(const at::Tensor& tensor) { return tensor.defined() ? py::cast(tensor) : py::none(); }

// The autograd of every forward op, by its description: forward(op index, the op's arguments but
// save_for_backward, its defined tensor arguments again, for autograd to see) -> its results.
struct OpAutograd : torch::autograd::Function<OpAutograd> {
  static variable_list forward(AutogradContext* ctx, int64_t op_index, const std::vector<c10::IValue>& arguments,
                               at::TensorList /*defined tensor arguments*/) {
    const OpPlan& plan = OpPlan::get(op_index);
    torch::jit::Stack stack(arguments.begin(), arguments.end());
    stack.emplace_back(true);  // save_for_backward
    {
      // This is the op's autograd: straight to its kernel, not through the autograd torch.library registered
      // (autograd.py), which would only redispatch below itself (a Python call per op).
      at::AutoDispatchBelowAutograd below_autograd;
      plan.forward.callBoxed(stack);
    }
    variable_list results;
    for (const auto& value : stack) results.push_back(value.toTensor());
    const size_t differentiable = plan.description->outputs.size();
    ctx->set_materialize_grads(false);  // as in Python: the backward makes the zeros it needs
    ctx->mark_non_differentiable(variable_list(results.begin() + differentiable, results.end()));
    variable_list saved;
    for (const auto& [is_argument, i] : plan.saved_from) {
      saved.push_back(!is_argument ? results[i] : arguments[i].isNone() ? at::Tensor() : arguments[i].toTensor());
    }
    ctx->save_for_backward(saved);
    ctx->saved_data["op"] = op_index;
    for (size_t i = 0; i < plan.arguments.size(); ++i) {
      if (!plan.is_tensor[i]) ctx->saved_data[plan.arguments[i]] = arguments[i];
    }
    return results;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const OpPlan& plan = OpPlan::get(ctx->saved_data["op"].toInt());
    const OpDescription& d = *plan.description;
    const variable_list saved = ctx->get_saved_variables();
    auto value = [&](const std::string& name) -> const at::Tensor& { return saved.at(plan.saved_at.at(name)); };
    // needs_input_grad counts edges, which only the defined tensor arguments have.
    std::unordered_map<std::string, bool> needed;
    std::vector<std::string> defined_arguments;
    size_t edge = 0;
    for (size_t i = 0; i < plan.arguments.size(); ++i) {
      if (!plan.is_tensor[i] || !value(plan.arguments[i]).defined()) continue;
      defined_arguments.push_back(plan.arguments[i]);
      needed[plan.arguments[i]] = ctx->needs_input_grad(edge++);
    }
    auto is_needed = [&](const std::string& name) { return needed.count(name) && needed.at(name); };
    std::unordered_map<std::string, at::Tensor> gradients;
    if (at::GradMode::is_enabled()) {
      // The gradient must itself be differentiable (create_graph=True): the Python autograd's backward.
      py::gil_scoped_acquire gil;
      TORCH_CHECK(differentiable_backward(), "fused_lstm: the differentiable backward was never set");
      py::dict saved_values, needed_values, output_grads, plain_values;
      for (const auto& name : plan.saved) saved_values[name.c_str()] = to_python(value(name));
      for (const auto& name : defined_arguments) needed_values[name.c_str()] = needed.at(name);
      for (size_t i = 0; i < d.outputs.size() && i < grads.size(); ++i) output_grads[d.outputs[i]] = to_python(grads[i]);
      for (size_t i = 0; i < plan.arguments.size(); ++i) {
        if (!plan.is_tensor[i]) plain_values[plan.arguments[i].c_str()] = ctx->saved_data[plan.arguments[i]].toBool();
      }
      const py::dict computed = differentiable_backward()(plan.forward_name(), saved_values, needed_values, output_grads,
                                                          plain_values);
      for (const auto& [name, grad] : computed) {
        if (!grad.is_none()) gradients[name.cast<std::string>()] = grad.cast<at::Tensor>();
      }
    } else {
      bool weights_needed = false;
      for (const char* weight : d.weights) weights_needed = weights_needed || is_needed(weight);
      torch::jit::Stack stack;
      for (const auto& argument : plan.backward.schema().arguments()) {
        const std::string& name = argument.name();
        if (starts_with(name, "grad_")) {  // an output's cotangent
          const std::string output = name.substr(5);
          size_t i = 0;
          while (d.outputs.at(i) != output) ++i;
          if (i < grads.size() && grads[i].defined()) {
            stack.emplace_back(grads[i]);
          } else {
            std::string like = output;
            for (const auto& [from, to] : d.cotangent_like) {
              if (output == from) like = to;
            }
            stack.emplace_back(at::zeros_like(value(like)));
          }
        } else if (name == "has_bias") {
          stack.emplace_back(value(plan.bias).defined());
        } else if (name == "compute_grad_input") {
          stack.emplace_back(is_needed("input"));
        } else if (name == "compute_grad_weights") {
          stack.emplace_back(weights_needed);
        } else if (plan.saved_at.count(name)) {
          stack.push_back(optional_tensor(value(name)));
        } else {
          stack.push_back(ctx->saved_data.at(name));  // a plain argument of the forward (reverse)
        }
      }
      {
        at::AutoDispatchBelowAutograd below_autograd;  // the backward op has no autograd of its own
        plan.backward.callBoxed(stack);
      }
      const auto& returns = plan.backward.schema().returns();
      for (size_t r = 0; r < returns.size(); ++r) {
        for (const auto& target : plan.gradient_targets(returns[r].name())) gradients[target] = stack[r].toTensor();
      }
    }
    variable_list result = {at::Tensor(), at::Tensor()};  // none for the op index and the arguments
    for (const auto& name : defined_arguments) {
      result.push_back(is_needed(name) && gradients.count(name) ? gradients.at(name) : at::Tensor());
    }
    return result;
  }
};

// A Python argument as the schema's type wants it: None, a Tensor or a bool; anything else is refused.
c10::IValue argument_value(const OpPlan& plan, size_t i, py::handle object) {
  const auto& type = plan.forward.schema().arguments()[i].type();
  const char* name = plan.arguments[i].c_str();
  if (object.is_none()) {
    TORCH_CHECK_TYPE(type->kind() == c10::TypeKind::OptionalType, "fused_lstm.", plan.forward_name(), ": ", name,
                     " must be a Tensor, got None");
    return c10::IValue();
  }
  if (THPVariable_Check(object.ptr())) {
    TORCH_CHECK_TYPE(plan.is_tensor[i], "fused_lstm.", plan.forward_name(), ": ", name,
                     " must be a bool, got a Tensor");
    return THPVariable_Unpack(object.ptr());
  }
  TORCH_CHECK_TYPE(!plan.is_tensor[i] && PyBool_Check(object.ptr()), "fused_lstm.", plan.forward_name(), ": ",
                   name, " must be ", plan.is_tensor[i] ? "a Tensor" : "a bool", ", got ", py::str(py::type::of(object)).cast<std::string>());
  return c10::IValue(object.ptr() == Py_True);
}

}  // namespace

void bind_eager_autograd(py::module_& module) {
  const auto& descriptions = op_descriptions();
  for (size_t index = 0; index < descriptions.size(); ++index) {
    module.def((std::string(descriptions[index].kind) + "_forward_autograd").c_str(), [index](const py::args& args) {
      const OpPlan& plan = OpPlan::get(index);
      TORCH_CHECK_TYPE(args.size() == plan.arguments.size(), "fused_lstm.", plan.forward_name(), "_autograd takes ",
                       plan.arguments.size(), " arguments (all but save_for_backward), got ", args.size());
      std::vector<c10::IValue> arguments;
      std::vector<at::Tensor> defined;
      for (size_t i = 0; i < args.size(); ++i) {
        arguments.push_back(argument_value(plan, i, args[i]));
        if (arguments.back().isTensor()) defined.push_back(arguments.back().toTensor());
      }
      return OpAutograd::apply(static_cast<int64_t>(index), arguments, at::TensorList(defined));
    });
  }
  module.def("set_differentiable_backward", [](py::object function) { differentiable_backward() = function; });
  // The descriptions for Python (fused_lstm/descriptions.py), each as a dict of its fields.
  module.def("op_descriptions", [] {
    py::list list;
    auto names = [](const std::vector<const char*>& values) {
      py::tuple tuple(values.size());
      for (size_t i = 0; i < values.size(); ++i) tuple[i] = values[i];
      return tuple;
    };
    auto pairs = [](const std::vector<std::pair<const char*, const char*>>& values) {
      py::list l;
      for (const auto& [a, b] : values) l.append(py::make_tuple(a, b));
      return l;
    };
    for (const auto& d : op_descriptions()) {
      py::dict entry;
      entry["kind"] = d.kind;
      entry["differentiable"] = names(d.differentiable);
      entry["weights"] = names(d.weights);
      entry["outputs"] = names(d.outputs);
      entry["saved_outputs"] = names(d.saved_outputs);
      entry["cotangent_like"] = pairs(d.cotangent_like);
      entry["gradient_aliases"] = pairs(d.gradient_aliases);
      list.append(entry);
    }
    return list;
  });
}

}  // namespace fused_lstm
