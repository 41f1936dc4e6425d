"""The fused ops' autograd, from their descriptions (descriptions.py): first derivatives run the backward op;
higher derivatives and forward mode are the reference's (reference.py).

Three forms of one autograd, each where the others cannot serve (call() picks one per call):
- the ops' own, registered with torch.library: what torch.compile, torch.export and TorchScript record;
- autograd.Function subclasses, under torch.func transforms (grad, jacrev, jvp, vmap, ...) or forward-mode AD,
  which a registered autograd cannot serve (functorch needs setup_context; forward mode a jvp); their vmap rule
  is generated from the ops' vmap rules (vmap_rules.py);
- the C++ eager autograd (csrc/eager_autograd.cpp) for eager calls, where a Python autograd.Function costs more
  per step than a small cell's kernels.
All three save the same tensors under the same names and run the same backward op; a backward that must itself
be differentiable (create_graph=True, torch.func) runs as an autograd.Function whose derivatives are the
reference's, taken with torch.func.vjp so that they compose with every transform (vmap included)."""

import functools
import inspect
from dataclasses import dataclass

import torch

from . import _C, reference
from .descriptions import DESCRIPTIONS, OPS, OpDescription


def _zeros_if_none(grad, like):
    return torch.zeros_like(like) if grad is None else grad


@dataclass(frozen=True)
class _Spec(OpDescription):
    """A description with what Python adds: the reference functions of the same contract."""

    def reference_outputs(self, values):
        """The reference's differentiable outputs for the forward's values by name."""
        function = getattr(reference, self.kind)
        outputs = function(**{name: values[name] for name in inspect.signature(function).parameters})
        return outputs if isinstance(outputs, tuple) else (outputs,)

    def reference_jvp(self, values, tangents):
        """The reference's tangents of the differentiable outputs, for tangents of the arguments by name."""
        function = getattr(reference, f"{self.kind}_jvp")
        arguments = {name: values[name] if not name.startswith("d_") else tangents.get(name[len("d_"):])
                     for name in inspect.signature(function).parameters}
        return function(**arguments)[len(self.outputs):]

    def run_backward_op(self, values, cotangents, input_needed, weights_needed):
        """The backward op on the saved values (by name) and the outputs' cotangents -> gradients by argument."""
        cotangent = dict(zip(self.outputs, cotangents))
        flags = {"has_bias": values[self.bias] is not None, "compute_grad_input": input_needed,
                 "compute_grad_weights": weights_needed}
        arguments = [cotangent[name[len("grad_"):]] if name.startswith("grad_") else
                     flags[name] if name in flags else values[name] for name in self.backward_arguments]
        results = getattr(OPS, self.backward_op)(*arguments)
        return {target: grad for name, grad in zip(self.backward_returns, results)
                for target in self.gradient_targets(name)}


SPECS = {name: _Spec(**vars(description)) for name, description in DESCRIPTIONS.items()}


def _saved_values(ctx):
    """The forward's arguments and saved outputs by name, as setup_context stored them."""
    values = dict(zip(ctx.tensor_names, ctx.saved_tensors))
    values.update(ctx.plain_values)
    return values


def _setup_context(spec, ctx, inputs, output):
    arguments = dict(zip(spec.arguments, inputs))
    outputs = dict(zip(spec.returns, output))
    ctx.mark_non_differentiable(*(outputs[name] for name in spec.returns if name not in spec.outputs))
    # Unused outputs get None, not zero-filled gradients: filling [N, 4H] zeros for the saved gates every
    # backward cost as much as a tenth of the whole backward. The backward makes the zeros it needs.
    ctx.set_materialize_grads(False)
    values = {**arguments, **outputs}
    ctx.tensor_names = spec.saved
    ctx.plain_values = {name: value for name, value in arguments.items() if name not in spec.tensor_arguments}
    ctx.save_for_backward(*(values[name] for name in spec.saved))


def _backward(spec, ctx, *grads):
    values = _saved_values(ctx)
    if not values["save_for_backward"]:
        raise RuntimeError("fused_lstm: the forward op was called with save_for_backward=False, so it saved nothing "
                           "to differentiate; call it with save_for_backward=True")
    return _backward_from_values(spec, ctx.plain_values, values, ctx.needs_input_grad, grads)


def _backward_from_values(spec, plain_values, values, needs_input_grad, grads):
    """The backward of `spec`'s op from its saved values by name (spec.saved, then the plain values), which
    arguments need gradients (in schema order), and the gradients of its outputs."""
    needed = dict(zip(spec.arguments, needs_input_grad))
    cotangents = tuple(_zeros_if_none(grad, values[spec.cotangent_like.get(name, name)])
                       for grad, name in zip(grads, spec.outputs))
    input_needed = needed["input"]
    weights_needed = any(needed[name] for name in spec.weights)
    if torch.is_grad_enabled():
        # The gradient must itself be differentiable (create_graph=True, torch.func): every tensor goes in as an
        # argument of its own, so that autograd and functorch see it.
        static = _BackwardStatic(plain_values, input_needed, weights_needed)
        grads = _BACKWARD_FUNCTIONS[spec.op].apply(static, *cotangents, *(values[name] for name in spec.saved))
        grads_by_name = dict(zip(spec.differentiable, grads))
    else:
        grads_by_name = spec.run_backward_op(values, cotangents, input_needed, weights_needed)
    return tuple(grads_by_name.get(name) if needed[name] else None for name in spec.arguments)


class _BackwardStatic:
    """What a differentiable backward needs besides tensors, as one opaque argument (functorch flattens lists and
    dicts among an autograd.Function's arguments): the forward's plain arguments and which gradients to compute."""

    def __init__(self, plain_values, input_needed, weights_needed):
        self.plain_values = plain_values
        self.input_needed, self.weights_needed = input_needed, weights_needed


def _reference_first_derivative(spec, values, present):
    """(*primals, *cotangents) -> the reference's gradients of the `present` differentiable arguments: the
    function whose derivatives are the fused backward's derivatives."""

    def first_derivative(*flat):
        def outputs(*primal_values):
            return spec.reference_outputs({**values, **dict(zip(present, primal_values))})

        _, vjp = torch.func.vjp(outputs, *flat[:len(present)])
        return vjp(tuple(flat[len(present):]))

    return first_derivative


def _backward_function(spec):
    """The backward op as a differentiable function: forward(static, *cotangents, *saved) (saved: spec.saved)
    returns the gradient of each differentiable argument (an empty tensor where not computed); its
    derivatives, reverse (backward) and forward (jvp), are the reference's, through torch.func so that they
    compose with every transform."""
    count = len(spec.outputs)

    def forward(static, *tensors):
        values = {**dict(zip(spec.saved, tensors[count:])), **static.plain_values}
        grads = spec.run_backward_op(values, tensors[:count], static.input_needed, static.weights_needed)
        return tuple(grads[name] if values[name] is not None else values["input"].new_empty(0)
                     for name in spec.differentiable)

    def setup_context(ctx, inputs, output):
        static, *tensors = inputs
        ctx.static = static
        ctx.present = [tensor is not None for tensor in tensors]
        ctx.save_for_backward(*(tensor for tensor in tensors if tensor is not None))
        ctx.save_for_forward(*(tensor for tensor in tensors if tensor is not None))

    def unpack(ctx):
        """(values by name, cotangents, names of the differentiable arguments given, their values)."""
        saved = iter(ctx.saved_tensors)
        tensors = [next(saved) if present else None for present in ctx.present]
        values = {**dict(zip(spec.saved, tensors[count:])), **ctx.static.plain_values}
        present = [name for name in spec.differentiable if values[name] is not None]
        return values, tensors[:count], present, [values[name] for name in present]

    def backward(ctx, *grad_grads):
        values, cotangents, present, primals = unpack(ctx)
        _, second = torch.func.vjp(_reference_first_derivative(spec, values, present), *primals, *cotangents)
        by_name = dict(zip(spec.differentiable, grad_grads))
        wanted = tuple(by_name[name] if by_name[name] is not None and by_name[name].numel() else torch.zeros_like(primal)
                       for name, primal in zip(present, primals))
        grads = second(wanted)
        grad_by_name = dict(zip(present, grads[:len(present)]))
        return (None, *grads[len(present):], *(grad_by_name.get(name) for name in spec.saved))

    def jvp(ctx, _static_tangent, *tangents):
        values, cotangents, present, primals = unpack(ctx)
        tangent_by_name = dict(zip(spec.saved, tangents[count:]))
        primal_tangents = [_zeros_if_none(tangent_by_name[name], value) for name, value in zip(present, primals)]
        cotangent_tangents = [_zeros_if_none(tangent, cotangent) for tangent, cotangent in zip(tangents[:count],
                                                                                               cotangents)]
        _, grad_tangents = torch.func.jvp(_reference_first_derivative(spec, values, present),
                                          (*primals, *cotangents), (*primal_tangents, *cotangent_tangents))
        by_name = dict(zip(present, grad_tangents))
        static = ctx.static

        def computed(name):  # as forward: the op returns an empty tensor for a gradient not asked for
            return name in by_name and (static.input_needed if name == "input" else
                                        static.weights_needed if name in spec.weights else True)

        return tuple(by_name[name] if computed(name) else values["input"].new_empty(0) for name in spec.differentiable)

    return type(f"{spec.op}_backward_function", (torch.autograd.Function,), {
        "generate_vmap_rule": True, "forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward), "jvp": staticmethod(jvp)})


def _forward_function(spec):
    """The forward op as an autograd.Function for torch.func and forward-mode AD: the same set-up and backward
    as the op's own autograd, a jvp from the reference, a vmap rule generated from the op's."""

    def forward(*args):
        return getattr(OPS, spec.op)(*args)

    def setup_context(ctx, inputs, output):
        _setup_context(spec, ctx, inputs, output)
        ctx.save_for_forward(*(value for name, value in zip(spec.arguments, inputs) if name in spec.tensor_arguments))

    def jvp(ctx, *tangents):
        values = {**dict(zip(spec.tensor_arguments, ctx.saved_tensors)), **ctx.plain_values}
        output_tangents = spec.reference_jvp(values, dict(zip(spec.arguments, tangents)))
        return (*output_tangents, *(None for _ in spec.returns[len(spec.outputs):]))

    return type(f"{spec.op}_function", (torch.autograd.Function,), {
        "generate_vmap_rule": True, "forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
        "backward": staticmethod(lambda ctx, *grads: _backward(spec, ctx, *grads)), "jvp": staticmethod(jvp)})


_BACKWARD_FUNCTIONS = {name: _backward_function(spec) for name, spec in SPECS.items()}
FORWARD_FUNCTIONS = {name: _forward_function(spec) for name, spec in SPECS.items()}
for _name, _spec in SPECS.items():
    torch.library.register_autograd(f"fused_lstm::{_name}", functools.partial(_backward, _spec),
                                    setup_context=functools.partial(_setup_context, _spec))


def _differentiable_backward(name, saved, needed, grads, plain):
    """The C++ eager autograd's backward when it must itself be differentiable (create_graph=True): this one.
    Everything by name (eager_autograd.h); returns the gradients by argument name."""
    spec = SPECS[name]
    plain_values = {"save_for_backward": True, **plain}
    needs_input_grad = [needed.get(argument, False) for argument in spec.arguments]
    result = _backward_from_values(spec, plain_values, {**saved, **plain_values}, needs_input_grad,
                                   tuple(grads.get(output) for output in spec.outputs))
    return {argument: grad for argument, grad in zip(spec.arguments, result) if grad is not None}


_C.set_differentiable_backward(_differentiable_backward)
# The C++ eager autograd of each forward op: its arguments but save_for_backward.
_EAGER_AUTOGRAD = {name: getattr(_C, f"{name}_autograd") for name in SPECS}


def functorch_form():
    """Whether the differentiable functions must run as autograd.Function subclasses: under torch.func
    transforms or forward-mode AD. torch.compile traces the ops' own autograd (dynamo cannot trace a custom jvp)."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._are_functorch_transforms_active() or torch.autograd.forward_ad._current_level >= 0


def save_for_backward(*tensors):
    """Forward saves what backward needs only when a gradient can flow: inference saves nothing. A trace records
    the flag as a constant, so there it follows requires_grad alone (torch.jit.trace checks its trace by tracing
    again without gradients, and a traced model may run either way)."""
    if not torch.jit.is_tracing() and not torch.is_grad_enabled():
        return False
    return any(t is not None and t.requires_grad for t in tensors)


def call(name, *args):
    """The forward op `name` with autograd: under torch.func transforms its autograd.Function; traced or compiled,
    the op itself (its registered autograd is what a graph records); in eager calls, below autograd when nothing
    is differentiated (the last argument, save_for_backward, is False), else its C++ eager autograd."""
    if functorch_form():
        return FORWARD_FUNCTIONS[name].apply(*args)
    op = getattr(OPS, name)
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return op(*args)
    if not args[-1]:
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)
    return _EAGER_AUTOGRAD[name](*args[:-1])
