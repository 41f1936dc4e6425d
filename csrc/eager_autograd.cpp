#include "eager_autograd.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>  // the Tensor casters; not torch/extension.h, which doubles the compile time

#include <algorithm>
#include <optional>
#include <string>
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

// One op's description (op_descriptions.h) resolved against its registered schemas once per process: every name
// becomes an index here, so that a call finds its saved tensors, cotangents and gradients without comparing names.
struct OpPlan {
  // Where each argument of the backward op comes from.
  struct BackwardArgument {
    enum Kind { kCotangent, kHasBias, kComputeGradInput, kComputeGradWeights, kSaved, kPlain } kind;
    size_t index = 0;  // kCotangent: the output; kSaved: the saved value; kPlain: the forward argument
    size_t like = 0;   // kCotangent: the saved value a missing cotangent's zeros are shaped like
  };

  const OpDescription* description;
  c10::OperatorHandle forward, backward;
  std::vector<std::string> arguments;          // the forward's, but save_for_backward
  std::vector<bool> is_tensor;                 // per argument: a Tensor or Tensor?
  std::vector<size_t> tensor_arguments;        // their indices; the saved values begin with them, in this order
  std::vector<std::string> saved;              // what the forward saves: its tensor arguments, then outputs
  std::vector<std::pair<bool, size_t>> saved_from;  // per saved value: (an argument?, its place there or in results)
  size_t input = 0;                            // the argument `input`
  std::vector<size_t> weights;                 // the arguments compute_grad_weights asks for
  std::vector<BackwardArgument> backward_arguments;
  std::vector<std::vector<size_t>> gradient_targets;  // per result of the backward op: the arguments it is for

  explicit OpPlan(const OpDescription& d)
      : description(&d), forward(find_op(d.kind, "_forward")), backward(find_op(d.kind, "_backward")) {
    for (const auto& argument : forward.schema().arguments()) {
      if (argument.name() == "save_for_backward") continue;
      const auto kind = argument.type()->kind();
      is_tensor.push_back(kind == c10::TypeKind::TensorType || kind == c10::TypeKind::OptionalType);
      if (is_tensor.back()) {
        tensor_arguments.push_back(arguments.size());
        saved.push_back(argument.name());
        saved_from.emplace_back(true, arguments.size());
      }
      arguments.push_back(argument.name());
    }
    saved.push_back(d.outputs.front());  // the first output: the backward reads it (and shapes zeros like it)
    for (const char* name : d.saved_outputs) saved.push_back(name);
    const auto& returns = forward.schema().returns();
    for (size_t i = saved_from.size(); i < saved.size(); ++i) {
      size_t r = 0;
      while (r < returns.size() && returns[r].name() != saved[i]) ++r;
      TORCH_CHECK(r < returns.size(), "fused_lstm: ", d.kind, "_forward has no result ", saved[i]);
      saved_from.emplace_back(false, r);
    }
    input = argument_index("input");
    for (const char* weight : d.weights) weights.push_back(argument_index(weight));
    size_t bias = saved.size();
    for (size_t i = 0; i < saved.size() && bias == saved.size(); ++i) {
      if (saved[i].rfind("bias", 0) == 0) bias = i;
    }
    for (const auto& argument : backward.schema().arguments()) {
      const std::string& name = argument.name();
      if (name.rfind("grad_", 0) == 0) {  // an output's cotangent
        const std::string output = name.substr(5);
        std::string like = output;
        for (const auto& [from, to] : d.cotangent_like) {
          if (output == from) like = to;
        }
        backward_arguments.push_back({BackwardArgument::kCotangent, output_index(output), saved_index(like)});
      } else if (name == "has_bias") {
        TORCH_CHECK(bias < saved.size(), "fused_lstm: ", d.kind, "_forward has no bias argument");
        backward_arguments.push_back({BackwardArgument::kHasBias, bias});
      } else if (name == "compute_grad_input") {
        backward_arguments.push_back({BackwardArgument::kComputeGradInput});
      } else if (name == "compute_grad_weights") {
        backward_arguments.push_back({BackwardArgument::kComputeGradWeights});
      } else if (std::find(saved.begin(), saved.end(), name) != saved.end()) {
        backward_arguments.push_back({BackwardArgument::kSaved, saved_index(name)});
      } else {
        backward_arguments.push_back({BackwardArgument::kPlain, argument_index(name)});
      }
    }
    for (const auto& result : backward.schema().returns()) {
      std::vector<size_t> targets;
      for (const auto& [from, to] : d.gradient_aliases) {
        if (result.name() == from) targets.push_back(argument_index(to));
      }
      if (targets.empty()) targets.push_back(argument_index(result.name().substr(5)));  // grad_<argument>
      gradient_targets.push_back(targets);
    }
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

  static size_t index_in(const std::vector<std::string>& names, const std::string& name, const char* what,
                         const char* kind) {
    const auto found = std::find(names.begin(), names.end(), name);
    TORCH_CHECK(found != names.end(), "fused_lstm: ", kind, "_forward has no ", what, " ", name);
    return static_cast<size_t>(found - names.begin());
  }
  size_t argument_index(const std::string& name) const { return index_in(arguments, name, "argument", description->kind); }
  size_t saved_index(const std::string& name) const { return index_in(saved, name, "saved value", description->kind); }
  size_t output_index(const std::string& name) const {
    const std::vector<std::string> outputs(description->outputs.begin(), description->outputs.end());
    return index_in(outputs, name, "differentiable output", description->kind);
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
    // needs_input_grad counts edges, which only the defined tensor arguments have (the saved values begin with
    // the tensor arguments, in order).
    std::vector<bool> needed(plan.arguments.size(), false);
    std::vector<size_t> defined_arguments;
    for (size_t t = 0, edge = 0; t < plan.tensor_arguments.size(); ++t) {
      if (!saved[t].defined()) continue;
      defined_arguments.push_back(plan.tensor_arguments[t]);
      needed[plan.tensor_arguments[t]] = ctx->needs_input_grad(edge++);
    }
    std::vector<at::Tensor> gradients(plan.arguments.size());  // by argument
    if (at::GradMode::is_enabled()) {
      // The gradient must itself be differentiable (create_graph=True): the Python autograd's backward.
      py::gil_scoped_acquire gil;
      TORCH_CHECK(differentiable_backward(), "fused_lstm: the differentiable backward was never set");
      py::dict saved_values, needed_values, output_grads, plain_values;
      for (size_t i = 0; i < plan.saved.size(); ++i) saved_values[plan.saved[i].c_str()] = to_python(saved[i]);
      for (size_t a : defined_arguments) needed_values[plan.arguments[a].c_str()] = static_cast<bool>(needed[a]);
      for (size_t i = 0; i < d.outputs.size() && i < grads.size(); ++i) output_grads[d.outputs[i]] = to_python(grads[i]);
      for (size_t i = 0; i < plan.arguments.size(); ++i) {
        if (!plan.is_tensor[i]) plain_values[plan.arguments[i].c_str()] = ctx->saved_data[plan.arguments[i]].toBool();
      }
      const py::dict computed = differentiable_backward()(plan.forward_name(), saved_values, needed_values, output_grads,
                                                          plain_values);
      for (const auto& [name, grad] : computed) {
        if (!grad.is_none()) gradients[plan.argument_index(name.cast<std::string>())] = grad.cast<at::Tensor>();
      }
    } else {
      bool weights_needed = false;
      for (size_t weight : plan.weights) weights_needed = weights_needed || needed[weight];
      torch::jit::Stack stack;
      for (const auto& source : plan.backward_arguments) {
        switch (source.kind) {
          case OpPlan::BackwardArgument::kCotangent:
            if (source.index < grads.size() && grads[source.index].defined()) {
              stack.emplace_back(grads[source.index]);
            } else {
              stack.emplace_back(at::zeros_like(saved[source.like]));
            }
            break;
          case OpPlan::BackwardArgument::kHasBias: stack.emplace_back(saved[source.index].defined()); break;
          case OpPlan::BackwardArgument::kComputeGradInput: stack.emplace_back(static_cast<bool>(needed[plan.input])); break;
          case OpPlan::BackwardArgument::kComputeGradWeights: stack.emplace_back(weights_needed); break;
          case OpPlan::BackwardArgument::kSaved: stack.push_back(optional_tensor(saved[source.index])); break;
          case OpPlan::BackwardArgument::kPlain:  // a plain argument of the forward (reverse)
            stack.push_back(ctx->saved_data.at(plan.arguments[source.index]));
            break;
        }
      }
      {
        at::AutoDispatchBelowAutograd below_autograd;  // the backward op has no autograd of its own
        plan.backward.callBoxed(stack);
      }
      for (size_t r = 0; r < plan.gradient_targets.size(); ++r) {
        for (size_t argument : plan.gradient_targets[r]) gradients[argument] = stack[r].toTensor();
      }
    }
    variable_list result = {at::Tensor(), at::Tensor()};  // none for the op index and the arguments
    for (size_t a : defined_arguments) result.push_back(needed[a] ? gradients[a] : at::Tensor());
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
