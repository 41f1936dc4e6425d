"""The fused ops from Python: fake kernels (shapes for torch.compile, torch.export and meta tensors), autograd
(the backward ops; double backward through the reference), vmap rules (the vmapped dimension folded into the
batch), forward-mode derivatives (the reference's), and the differentiable functions the modules call:
lstm_layer, gru_layer, lstm_cell and gru_cell.

Two forms of the same autograd, one chosen per call (_functorch_form):
- the ops' own, registered with torch.library: what eager code, torch.compile, torch.export and TorchScript
  run, with the least overhead per call;
- autograd.Function subclasses, under torch.func transforms (grad, jacrev, jvp, vmap, ...) or forward-mode AD,
  which the ops' own autograd cannot serve (functorch needs setup_context; forward mode a jvp). Their vmap
  rule is generated from the ops' vmap rules.
Both share the context set-up and the backward of each op."""

import contextlib
import functools
from dataclasses import dataclass

import torch

from . import _C  # loading the library registers torch.ops.fused_lstm.*; it holds the ops' eager autograd
from . import onnx_export, reference

OPS = torch.ops.fused_lstm


def _accumulation_dtype(dtype):
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _functorch_form():
    """Whether the differentiable functions must run as autograd.Function subclasses: under torch.func
    transforms or forward-mode AD. torch.compile traces the ops' own autograd (dynamo cannot trace a custom jvp)."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._are_functorch_transforms_active() or torch.autograd.forward_ad._current_level >= 0


def _save_for_backward(*tensors):
    """Forward saves what backward needs only when a gradient can flow: inference saves nothing. A trace records
    the flag as a constant, so there it follows requires_grad alone (torch.jit.trace checks its trace by tracing
    again without gradients, and a traced model may run either way)."""
    if not torch.jit.is_tracing() and not torch.is_grad_enabled():
        return False
    return any(t is not None and t.requires_grad for t in tensors)


# ---------------------------------------------------------------------------------------------------
# Fake kernels.


def _check_fake_devices(op_name, input, batch_sizes, **tensors):
    """The fake kernels serve meta tensors and torch.compile; a meta tensor among CPU arguments also lands
    here (Meta wins dispatch), so check devices as the real kernels do instead of returning garbage.
    batch_sizes lives on the CPU whatever the device of the data (or on meta with meta data)."""
    if batch_sizes is not None:
        torch._check(batch_sizes.device.type == "cpu" or batch_sizes.device == input.device,
                     lambda: f"fused_lstm.{op_name}: batch_sizes must be a CPU tensor (as in PackedSequence), got "
                             f"{batch_sizes.device}")
    for name, tensor in tensors.items():
        if tensor is not None:
            torch._check(tensor.device == input.device,
                         lambda: f"fused_lstm.{op_name}: {name} is on {tensor.device} but input is on {input.device}; "
                                 "all tensors except batch_sizes must be on one device")


def _empty_like_or_none(tensor, wanted, like=None):
    return torch.empty_like(like if like is not None else tensor) if wanted else tensor.new_empty(0)


@torch.library.register_fake("fused_lstm::lstm_layer_forward")
def _lstm_layer_forward_fake(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias, weight_hr, reverse,
                             save_for_backward):
    onnx_export.refuse_fused_op_in_export("lstm_layer_forward")
    _check_fake_devices("lstm_layer_forward", input, batch_sizes, h0=h0, c0=c0, weight_ih=weight_ih,
                        weight_hh=weight_hh, bias=bias, weight_hr=weight_hr)
    rows, hidden = input.shape[0], weight_ih.shape[0] // 4
    batch, output_size = h0.shape
    output = input.new_empty(rows, output_size)
    h_n = input.new_empty(batch, output_size)
    c_n = input.new_empty(batch, hidden)
    if not save_for_backward:
        return output, h_n, c_n, input.new_empty(0), input.new_empty(0), input.new_empty(0)
    gates = input.new_empty(rows, 4 * hidden)
    cell_prev = input.new_empty(rows, hidden, dtype=_accumulation_dtype(input.dtype))
    proj_input = input.new_empty(rows, hidden) if weight_hr is not None else input.new_empty(0)
    return output, h_n, c_n, gates, cell_prev, proj_input


@torch.library.register_fake("fused_lstm::lstm_layer_backward")
def _lstm_layer_backward_fake(grad_output, grad_h_n, grad_c_n, input, batch_sizes, h0, weight_ih, weight_hh,
                              weight_hr, output, gates, cell_prev, proj_input, reverse, has_bias,
                              compute_grad_input=True, compute_grad_weights=True):
    _check_fake_devices("lstm_layer_backward", input, batch_sizes, grad_output=grad_output, grad_h_n=grad_h_n,
                        grad_c_n=grad_c_n, h0=h0, weight_ih=weight_ih, weight_hh=weight_hh, weight_hr=weight_hr,
                        output=output, gates=gates, cell_prev=cell_prev, proj_input=proj_input)
    hidden = weight_ih.shape[0] // 4
    weights = compute_grad_weights
    return (_empty_like_or_none(input, compute_grad_input), torch.empty_like(h0), input.new_empty(grad_c_n.shape),
            _empty_like_or_none(input, weights, weight_ih), _empty_like_or_none(input, weights, weight_hh),
            input.new_empty(4 * hidden) if weights and has_bias else input.new_empty(0),
            _empty_like_or_none(input, weights and weight_hr is not None, weight_hr))


@torch.library.register_fake("fused_lstm::gru_layer_forward")
def _gru_layer_forward_fake(input, batch_sizes, h0, weight_ih, weight_hh, bias_ih, bias_hh, reverse,
                            save_for_backward):
    onnx_export.refuse_fused_op_in_export("gru_layer_forward")
    _check_fake_devices("gru_layer_forward", input, batch_sizes, h0=h0, weight_ih=weight_ih, weight_hh=weight_hh,
                        bias_ih=bias_ih, bias_hh=bias_hh)
    rows, hidden = input.shape[0], weight_ih.shape[0] // 3
    output = input.new_empty(rows, hidden)
    h_n = input.new_empty(h0.shape)
    if not save_for_backward:
        return output, h_n, input.new_empty(0), input.new_empty(0)
    return output, h_n, input.new_empty(rows, 3 * hidden), input.new_empty(rows, hidden)


@torch.library.register_fake("fused_lstm::gru_layer_backward")
def _gru_layer_backward_fake(grad_output, grad_h_n, input, batch_sizes, h0, weight_ih, weight_hh, output, gates,
                             candidate_hidden, reverse, has_bias, compute_grad_input=True, compute_grad_weights=True):
    _check_fake_devices("gru_layer_backward", input, batch_sizes, grad_output=grad_output, grad_h_n=grad_h_n, h0=h0,
                        weight_ih=weight_ih, weight_hh=weight_hh, output=output, gates=gates,
                        candidate_hidden=candidate_hidden)
    bias_shape = (weight_ih.shape[0],) if has_bias and compute_grad_weights else (0,)
    return (_empty_like_or_none(input, compute_grad_input), torch.empty_like(h0),
            _empty_like_or_none(input, compute_grad_weights, weight_ih),
            _empty_like_or_none(input, compute_grad_weights, weight_hh), input.new_empty(bias_shape),
            input.new_empty(bias_shape))


@torch.library.register_fake("fused_lstm::lstm_cell_forward")
def _lstm_cell_forward_fake(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, save_for_backward):
    _check_fake_devices("lstm_cell_forward", input, None, h0=h0, c0=c0, weight_ih=weight_ih, weight_hh=weight_hh,
                        bias_ih=bias_ih, bias_hh=bias_hh)
    gates = input.new_empty(input.shape[0], weight_ih.shape[0]) if save_for_backward else input.new_empty(0)
    return input.new_empty(h0.shape), input.new_empty(c0.shape), gates


@torch.library.register_fake("fused_lstm::lstm_cell_backward")
def _lstm_cell_backward_fake(grad_h1, grad_c1, input, h0, c0, weight_ih, weight_hh, gates, has_bias,
                             compute_grad_input=True, compute_grad_weights=True):
    _check_fake_devices("lstm_cell_backward", input, None, grad_h1=grad_h1, grad_c1=grad_c1, h0=h0, c0=c0,
                        weight_ih=weight_ih, weight_hh=weight_hh, gates=gates)
    weights = compute_grad_weights
    return (_empty_like_or_none(input, compute_grad_input), torch.empty_like(h0), torch.empty_like(c0),
            _empty_like_or_none(input, weights, weight_ih), _empty_like_or_none(input, weights, weight_hh),
            input.new_empty(weight_ih.shape[0]) if weights and has_bias else input.new_empty(0))


@torch.library.register_fake("fused_lstm::gru_cell_forward")
def _gru_cell_forward_fake(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, save_for_backward):
    _check_fake_devices("gru_cell_forward", input, None, h0=h0, weight_ih=weight_ih, weight_hh=weight_hh,
                        bias_ih=bias_ih, bias_hh=bias_hh)
    if not save_for_backward:
        return input.new_empty(h0.shape), input.new_empty(0), input.new_empty(0)
    return input.new_empty(h0.shape), input.new_empty(input.shape[0], weight_ih.shape[0]), input.new_empty(h0.shape)


@torch.library.register_fake("fused_lstm::gru_cell_backward")
def _gru_cell_backward_fake(grad_h1, input, h0, weight_ih, weight_hh, gates, candidate_hidden, has_bias,
                            compute_grad_input=True, compute_grad_weights=True):
    _check_fake_devices("gru_cell_backward", input, None, grad_h1=grad_h1, h0=h0, weight_ih=weight_ih,
                        weight_hh=weight_hh, gates=gates, candidate_hidden=candidate_hidden)
    bias_shape = (weight_ih.shape[0],) if has_bias and compute_grad_weights else (0,)
    return (_empty_like_or_none(input, compute_grad_input), torch.empty_like(h0),
            _empty_like_or_none(input, compute_grad_weights, weight_ih),
            _empty_like_or_none(input, compute_grad_weights, weight_hh), input.new_empty(bias_shape),
            input.new_empty(bias_shape))


# ---------------------------------------------------------------------------------------------------
# Autograd, one description per forward op (_Spec): which arguments take gradients, what the backward op
# reads, and the reference for what no kernel computes (higher derivatives, forward mode).
#
# First derivatives run the backward op. When the backward itself must be differentiable (create_graph=True,
# or any torch.func transform, which always differentiates with create_graph), it runs as an autograd.Function
# (_BackwardFunction) whose forward is the same backward op and whose own backward is the reference's second
# derivative, taken with torch.func.vjp so that it composes with every transform (vmap included).


def _zeros_if_none(grad, like):
    return torch.zeros_like(like) if grad is None else grad


_OP_NAMES = ("lstm_layer_forward", "lstm_layer_backward", "gru_layer_forward", "gru_layer_backward",
             "lstm_cell_forward", "lstm_cell_backward", "gru_cell_forward", "gru_cell_backward")
# The ops' argument and return names, read once from their schemas.
_SCHEMA_ARGUMENTS = {name: [argument.name for argument in getattr(OPS, name).default._schema.arguments]
                     for name in _OP_NAMES}
_SCHEMA_RETURNS = {name: [ret.name for ret in getattr(OPS, name).default._schema.returns] for name in _OP_NAMES}


@dataclass(frozen=True)
class _Spec:
    op: str                      # the forward op
    differentiable: tuple        # its arguments that take gradients, in schema order
    weights: tuple               # those whose gradients need compute_grad_weights (the rest but input/states)
    outputs: tuple               # its differentiable outputs, the leading ones
    saved_outputs: tuple         # its other outputs the backward op reads
    backward: object             # (values: dict, cotangents: tuple, input_needed, weights_needed) -> dict of grads
    reference: object            # (values: dict) -> the differentiable outputs (reference.py)
    jvp: object                  # (values: dict, tangents: dict) -> tangents of the differentiable outputs

    @property
    def arguments(self):
        return _SCHEMA_ARGUMENTS[self.op]

    @property
    def returns(self):
        return _SCHEMA_RETURNS[self.op]


def _lstm_layer_backward(v, cotangents, input_needed, weights_needed):
    grads = OPS.lstm_layer_backward(*cotangents, v["input"], v["batch_sizes"], v["h0"], v["weight_ih"], v["weight_hh"],
                                    v["weight_hr"], v["output"], v["gates"], v["cell_prev"], v["proj_input"],
                                    v["reverse"], v["bias"] is not None, input_needed, weights_needed)
    return dict(zip(("input", "h0", "c0", "weight_ih", "weight_hh", "bias", "weight_hr"), grads))


def _gru_layer_backward(v, cotangents, input_needed, weights_needed):
    grads = OPS.gru_layer_backward(*cotangents, v["input"], v["batch_sizes"], v["h0"], v["weight_ih"], v["weight_hh"],
                                   v["output"], v["gates"], v["candidate_hidden"], v["reverse"], v["bias_ih"] is not None,
                                   input_needed, weights_needed)
    return dict(zip(("input", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"), grads))


def _lstm_cell_backward(v, cotangents, input_needed, weights_needed):
    grads = OPS.lstm_cell_backward(*cotangents, v["input"], v["h0"], v["c0"], v["weight_ih"], v["weight_hh"], v["gates"],
                                   v["bias_ih"] is not None, input_needed, weights_needed)
    # b_ih and b_hh enter the gates alike: one gradient serves both.
    return dict(zip(("input", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"), (*grads, grads[-1])))


def _gru_cell_backward(v, cotangents, input_needed, weights_needed):
    grads = OPS.gru_cell_backward(*cotangents, v["input"], v["h0"], v["weight_ih"], v["weight_hh"], v["gates"],
                                  v["candidate_hidden"], v["bias_ih"] is not None, input_needed, weights_needed)
    return dict(zip(("input", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"), grads))


def _tangents(spec, tangents):
    return [tangents.get(name) for name in spec.differentiable]


_SPECS = {spec.op: spec for spec in (
    _Spec("lstm_layer_forward", ("input", "h0", "c0", "weight_ih", "weight_hh", "bias", "weight_hr"),
          ("weight_ih", "weight_hh", "bias", "weight_hr"), ("output", "h_n", "c_n"),
          ("gates", "cell_prev", "proj_input"), _lstm_layer_backward,
          lambda v: reference.lstm_layer(v["input"], v["batch_sizes"], v["h0"], v["c0"], v["weight_ih"], v["weight_hh"],
                                         v["bias"], v["weight_hr"], v["reverse"]),
          lambda v, d: reference.lstm_layer_jvp(v["input"], v["batch_sizes"], v["h0"], v["c0"], v["weight_ih"],
                                                v["weight_hh"], v["bias"], v["weight_hr"], v["reverse"],
                                                *_tangents(_SPECS["lstm_layer_forward"], d))[3:]),
    _Spec("gru_layer_forward", ("input", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"),
          ("weight_ih", "weight_hh", "bias_ih", "bias_hh"), ("output", "h_n"), ("gates", "candidate_hidden"),
          _gru_layer_backward,
          lambda v: reference.gru_layer(v["input"], v["batch_sizes"], v["h0"], v["weight_ih"], v["weight_hh"],
                                        v["bias_ih"], v["bias_hh"], v["reverse"]),
          lambda v, d: reference.gru_layer_jvp(v["input"], v["batch_sizes"], v["h0"], v["weight_ih"], v["weight_hh"],
                                               v["bias_ih"], v["bias_hh"], v["reverse"],
                                               *_tangents(_SPECS["gru_layer_forward"], d))[2:]),
    _Spec("lstm_cell_forward", ("input", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"),
          ("weight_ih", "weight_hh", "bias_ih", "bias_hh"), ("h1", "c1"), ("gates",), _lstm_cell_backward,
          lambda v: reference.lstm_cell(v["input"], v["h0"], v["c0"], v["weight_ih"], v["weight_hh"], v["bias_ih"],
                                        v["bias_hh"]),
          lambda v, d: reference.lstm_cell_jvp(v["input"], v["h0"], v["c0"], v["weight_ih"], v["weight_hh"],
                                               v["bias_ih"], v["bias_hh"],
                                               *_tangents(_SPECS["lstm_cell_forward"], d))[2:]),
    _Spec("gru_cell_forward", ("input", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"),
          ("weight_ih", "weight_hh", "bias_ih", "bias_hh"), ("h1",), ("gates", "candidate_hidden"), _gru_cell_backward,
          lambda v: (reference.gru_cell(v["input"], v["h0"], v["weight_ih"], v["weight_hh"], v["bias_ih"],
                                        v["bias_hh"]),),
          lambda v, d: reference.gru_cell_jvp(v["input"], v["h0"], v["weight_ih"], v["weight_hh"], v["bias_ih"],
                                              v["bias_hh"], *_tangents(_SPECS["gru_cell_forward"], d))[1:]),
)}


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
    tensors = {name: value for name, value in arguments.items() if value is None or torch.is_tensor(value)}
    tensors.update({name: outputs[name] for name in (*spec.outputs[:1], *spec.saved_outputs)})
    ctx.tensor_names = list(tensors)
    ctx.plain_values = {name: value for name, value in arguments.items() if name not in tensors}
    ctx.save_for_backward(*tensors.values())


def _backward(spec, ctx, *grads):
    values = _saved_values(ctx)
    if not values["save_for_backward"]:
        raise RuntimeError("fused_lstm: the forward op was called with save_for_backward=False, so it saved nothing "
                           "to differentiate; call it with save_for_backward=True")
    return _backward_from_values(spec, ctx.tensor_names, ctx.plain_values, values, ctx.needs_input_grad, grads)


def _backward_from_values(spec, tensor_names, plain_values, values, needs_input_grad, grads):
    """The backward of `spec`'s op from its saved values (by name: the tensors named by tensor_names, then the
    plain values), which arguments need gradients, and the gradients of its outputs."""
    needed = dict(zip(spec.arguments, needs_input_grad))
    # The first outputs' shapes: output/h1 like their row source, states like theirs.
    cotangents = tuple(_zeros_if_none(grad, values[_COTANGENT_LIKE[name]] if name in _COTANGENT_LIKE else values[name])
                       for grad, name in zip(grads, spec.outputs))
    input_needed = needed["input"]
    weights_needed = any(needed[name] for name in spec.weights)
    if torch.is_grad_enabled():
        # The gradient must itself be differentiable (create_graph=True, torch.func): every tensor goes in as an
        # argument of its own, so that autograd and functorch see it.
        static = _BackwardStatic(tuple(tensor_names), plain_values, input_needed, weights_needed)
        grads = _BACKWARD_FUNCTIONS[spec.op].apply(static, *cotangents, *(values[name] for name in tensor_names))
        grads_by_name = dict(zip(spec.differentiable, grads))
    else:
        grads_by_name = spec.backward(values, cotangents, input_needed, weights_needed)
    return tuple(grads_by_name.get(name) if needed[name] else None for name in spec.arguments)


# The tensors a zero cotangent is shaped like, where the output itself is not saved.
_COTANGENT_LIKE = {"h_n": "h0", "c_n": "c0", "h1": "h0", "c1": "c0"}


class _BackwardStatic:
    """What a differentiable backward needs besides tensors, as one opaque argument (functorch flattens lists and
    dicts among an autograd.Function's arguments): the names of the saved tensors, the forward's other arguments,
    and which gradients to compute."""

    def __init__(self, names, plain_values, input_needed, weights_needed):
        self.names, self.plain_values = names, plain_values
        self.input_needed, self.weights_needed = input_needed, weights_needed


def _reference_first_derivative(spec, values, present):
    """(*primals, *cotangents) -> the reference's gradients of the `present` differentiable arguments: the
    function whose derivatives are the fused backward's derivatives."""

    def first_derivative(*flat):
        def outputs(*primal_values):
            return spec.reference({**values, **dict(zip(present, primal_values))})

        _, vjp = torch.func.vjp(outputs, *flat[:len(present)])
        return vjp(tuple(flat[len(present):]))

    return first_derivative


def _backward_function(spec):
    """The backward op as a differentiable function: forward(static, *cotangents, *tensors) (tensors: the saved
    values named by static.names) returns the gradient of each differentiable argument (an empty tensor where
    not computed); its derivatives, reverse (backward) and forward (jvp), are the reference's, through
    torch.func so that they compose with every transform."""
    count = len(spec.outputs)

    def forward(static, *tensors):
        values = {**dict(zip(static.names, tensors[count:])), **static.plain_values}
        grads = spec.backward(values, tensors[:count], static.input_needed, static.weights_needed)
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
        values = {**dict(zip(ctx.static.names, tensors[count:])), **ctx.static.plain_values}
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
        return (None, *grads[len(present):], *(grad_by_name.get(name) for name in ctx.static.names))

    def jvp(ctx, _static_tangent, *tangents):
        values, cotangents, present, primals = unpack(ctx)
        tangent_by_name = dict(zip(ctx.static.names, tangents[count:]))
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
        arguments = dict(zip(spec.arguments, inputs))
        ctx.forward_names = [name for name, value in arguments.items() if value is None or torch.is_tensor(value)]
        ctx.save_for_forward(*(arguments[name] for name in ctx.forward_names))

    def jvp(ctx, *tangents):
        values = {**dict(zip(ctx.forward_names, ctx.saved_tensors)), **ctx.plain_values}
        output_tangents = spec.jvp(values, dict(zip(spec.arguments, tangents)))
        return (*output_tangents, *(None for _ in spec.returns[len(spec.outputs):]))

    return type(f"{spec.op}_function", (torch.autograd.Function,), {
        "generate_vmap_rule": True, "forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
        "backward": staticmethod(lambda ctx, *grads: _backward(spec, ctx, *grads)), "jvp": staticmethod(jvp)})


_BACKWARD_FUNCTIONS = {name: _backward_function(spec) for name, spec in _SPECS.items()}
_FORWARD_FUNCTIONS = {name: _forward_function(spec) for name, spec in _SPECS.items()}
for _name, _spec in _SPECS.items():
    torch.library.register_autograd(f"fused_lstm::{_name}", functools.partial(_backward, _spec),
                                    setup_context=functools.partial(_setup_context, _spec))


# The ops' eager autograd in C++ (csrc/eager_autograd.h): the arguments but save_for_backward.
_EAGER_AUTOGRAD = {name: getattr(_C, f"{name}_autograd") for name in _SPECS}
# The tensor arguments of each op (what the C++ autograd gives needs_input_grad of), and what it saves, in order:
# those, then the outputs, as _setup_context names them.
_TENSOR_ARGUMENTS = {name: [argument.name for argument in getattr(OPS, name).default._schema.arguments
                            if argument.type.isSubtypeOf(torch._C.OptionalType.ofTensor())] for name in _SPECS}
_SAVED_NAMES = {name: _TENSOR_ARGUMENTS[name] + list(spec.outputs[:1]) + list(spec.saved_outputs)
                for name, spec in _SPECS.items()}


def _differentiable_backward(name, saved, needed, grads, reverse):
    """The C++ autograd's backward when it must itself be differentiable (create_graph=True): the ops' own."""
    spec = _SPECS[name]
    plain_values = {"save_for_backward": True, **({"reverse": reverse} if "reverse" in spec.arguments else {})}
    values = {**dict(zip(_SAVED_NAMES[name], saved)), **plain_values}
    needed_by_name = dict(zip(_TENSOR_ARGUMENTS[name], needed))
    needs_input_grad = [needed_by_name.get(argument, False) for argument in spec.arguments]
    grads_by_argument = dict(zip(spec.arguments, _backward_from_values(spec, _SAVED_NAMES[name], plain_values, values,
                                                                       needs_input_grad, grads)))
    return [grads_by_argument[argument] for argument in _TENSOR_ARGUMENTS[name]]


_C.set_differentiable_backward(_differentiable_backward)


def _call(name, *args):
    """The forward op with autograd: under torch.func transforms its autograd.Function; traced or compiled, the op
    itself (its registered autograd is what a graph records); in eager calls, below autograd when nothing is
    differentiated (the last argument, save_for_backward, is False), else its C++ eager autograd."""
    if _functorch_form():
        return _FORWARD_FUNCTIONS[name].apply(*args)
    op = getattr(OPS, name)
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return op(*args)
    if not args[-1]:
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)
    return _EAGER_AUTOGRAD[name](*args[:-1])


# ---------------------------------------------------------------------------------------------------
# vmap rules: the vmapped dimension V is folded into the batch, so one call serves every vmapped
# sample: per-sequence tensors [V, B, X] become [B·V, X] (sample v of sequence b is row b·V + v), and
# time-major packed rows [V, N, X] become [N·V, X] with every batch size times V, which keeps each step's
# rows together. Where weights are vmapped too (or per-sample weight gradients are asked for), the op runs
# once per sample instead.

ROWS, BATCH, SHARED, PLAIN = "rows", "batch", "shared", "plain"  # how each argument and output folds


def _fold(tensor, kind, in_dim, size):
    if kind in (PLAIN, SHARED) or tensor is None or (tensor.numel() == 0 and in_dim is None):
        return tensor
    if in_dim is None:
        tensor = tensor.unsqueeze(0).expand(size, *tensor.shape)
    else:
        tensor = tensor.movedim(in_dim, 0)
    if tensor.shape[1:].numel() == 0:  # an empty placeholder (nothing saved, no projection)
        return tensor.new_empty(0)
    return tensor.transpose(0, 1).reshape(-1, *tensor.shape[2:])


def _unfold(tensor, size):
    if tensor.numel() == 0:
        return tensor, None
    return tensor.view(-1, size, *tensor.shape[1:]), 1


def _loop(op, size, in_dims, args):
    results = []
    for sample in range(size):
        results.append(op(*[arg if dim is None else arg.select(dim, sample) for arg, dim in zip(args, in_dims)]))
    outputs = tuple(torch.stack(outputs) for outputs in zip(*results))
    return outputs, (0,) * len(outputs)


def _register_vmap(name, argument_kinds, folds=lambda arguments: True):
    """`argument_kinds`: ROWS, BATCH, SHARED or PLAIN per argument in schema order (batch_sizes is PLAIN and
    scaled by V). `folds(arguments)`: whether this call may fold (e.g. not when per-sample weight gradients are
    wanted), from the arguments by name."""
    op = getattr(OPS, name)
    schema_arguments = op.default._schema.arguments

    def rule(info, in_dims, *args):
        size = info.batch_size
        # The dispatcher leaves out trailing arguments that equal their defaults.
        arguments = {argument.name: argument.default_value for argument in schema_arguments[len(args):]}
        arguments.update(zip(_SCHEMA_ARGUMENTS[name], args))
        shared_batched = any(dim is not None for dim, kind in zip(in_dims, argument_kinds) if kind in (SHARED, PLAIN))
        if shared_batched or not folds(arguments):
            return _loop(op, size, in_dims, args)
        folded = [_fold(arg, kind, dim, size) for arg, kind, dim in zip(args, argument_kinds, in_dims)]
        if "batch_sizes" in _SCHEMA_ARGUMENTS[name]:
            index = _SCHEMA_ARGUMENTS[name].index("batch_sizes")
            folded[index] = folded[index] * size
        outputs, out_dims = zip(*(_unfold(output, size) for output in op(*folded)))
        return tuple(outputs), tuple(out_dims)

    torch.library.register_vmap(f"fused_lstm::{name}", rule)




def _kinds(name, rows=(), batch=(), shared=()):
    kinds = []
    for argument in _SCHEMA_ARGUMENTS[name]:
        kinds.append(ROWS if argument in rows else BATCH if argument in batch else SHARED if argument in shared
                     else PLAIN)
    return kinds


_LAYER_SHARED = ("weight_ih", "weight_hh", "bias", "weight_hr", "bias_ih", "bias_hh")


def _no_weight_gradients(arguments):
    return not arguments["compute_grad_weights"]


_register_vmap("lstm_layer_forward", _kinds("lstm_layer_forward", rows=("input",), batch=("h0", "c0"),
                                            shared=_LAYER_SHARED))
_register_vmap("lstm_layer_backward", _kinds("lstm_layer_backward",
                                             rows=("grad_output", "input", "output", "gates", "cell_prev",
                                                   "proj_input"),
                                             batch=("grad_h_n", "grad_c_n", "h0"), shared=_LAYER_SHARED),
               _no_weight_gradients)
_register_vmap("gru_layer_forward", _kinds("gru_layer_forward", rows=("input",), batch=("h0",), shared=_LAYER_SHARED))
_register_vmap("gru_layer_backward", _kinds("gru_layer_backward",
                                            rows=("grad_output", "input", "output", "gates", "candidate_hidden"),
                                            batch=("grad_h_n", "h0"), shared=_LAYER_SHARED), _no_weight_gradients)
_register_vmap("lstm_cell_forward", _kinds("lstm_cell_forward", batch=("input", "h0", "c0"), shared=_LAYER_SHARED))
_register_vmap("lstm_cell_backward", _kinds("lstm_cell_backward",
                                            batch=("grad_h1", "grad_c1", "input", "h0", "c0", "gates"),
                                            shared=_LAYER_SHARED), _no_weight_gradients)
_register_vmap("gru_cell_forward", _kinds("gru_cell_forward", batch=("input", "h0"), shared=_LAYER_SHARED))
_register_vmap("gru_cell_backward", _kinds("gru_cell_backward",
                                           batch=("grad_h1", "input", "h0", "gates", "candidate_hidden"),
                                           shared=_LAYER_SHARED), _no_weight_gradients)


# ---------------------------------------------------------------------------------------------------
# The options that choose code paths (csrc/options.h has the table) and the paths calls take.


def get_option(name):
    """The value of option `name` (cpu_isa, cpu_gemm, cuda_persistent), as a string."""
    return OPS.get_option(name)


def set_option(name, value):
    """Sets option `name` for this process (True/False for cuda_persistent); raises on an unknown name or value."""
    OPS.set_option(name, str(int(value)) if isinstance(value, bool) else str(value))


def empty_cache():
    """Frees the memory fused_lstm keeps for reuse: CPU blocks that cells' weight gradients used and let go (at
    most eight of 1 to 32 MiB, kept because glibc would otherwise return them to the system and fault them in
    at every step). Memory in use is never kept, so this frees only blocks no tensor holds."""
    OPS.empty_cache()


# cpu_isa's values from the least to the most: each implies the ones before it.
CPU_ISAS = ("none", "avx2", "avx512", "avx512_bf16", "amx")


def best_cpu_isa():
    """The best instruction set this CPU has for fused_lstm's CPU kernels (what cpu_isa="auto" uses)."""
    return OPS.best_cpu_isa()


@torch.compiler.assume_constant_result  # a compiled graph reads it once, at trace time
def cpu_computes_half_in_float32(dtype_name):
    """Whether the modules run a "bfloat16" or "float16" layer or cell on the CPU on the float32 kernels (inputs,
    states and weights converted at the call, results rounded to the dtype): where no kernel computes in that
    dtype at speed. bfloat16 has register tiles with AVX512-BF16 and AMX (cpu_isa avx512_bf16 or amx); below
    that, ATen's bfloat16 GEMMs run at a twentieth of float32's (2.8 against 62 GFLOP/s with oneDNN capped at
    AVX2 on a 2-core AMD EPYC). float16 has no CPU kernel of its own: always float32."""
    if dtype_name == "float16":
        return True
    option = get_option("cpu_isa")
    isa = best_cpu_isa() if option == "auto" else option
    return CPU_ISAS.index(isa) < CPU_ISAS.index("avx512_bf16")


def onednn_matmul_usable():
    """Whether float32 GEMMs can run on oneDNN's matmul here (cpu_gemm="onednn" can be set; "auto" uses it for
    large products): torch's entry point needs AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT as oneDNN sees the CPU."""
    return OPS.onednn_matmul_usable()


@contextlib.contextmanager
def options(**values):
    """Sets options for the block, e.g. ``with fused_lstm.options(cpu_isa="avx2"): ...``, then restores them."""
    old = {name: get_option(name) for name in values}
    try:
        for name, value in values.items():
            set_option(name, value)
        yield
    finally:
        for name, value in old.items():
            set_option(name, value)


# While fused_lstm.paths records: the paths of every fused call, in order.
_path_records = None


def _one_step(input):
    return torch.full([1], input.shape[0], dtype=torch.int64) if _path_records is not None else None


def _record_path(kind, input, batch_sizes, h0, weight_ih, weight_hh, weight_hr=None):
    if _path_records is not None:
        forward, backward = OPS.layer_paths(kind, input, batch_sizes, h0, weight_ih, weight_hh, weight_hr)
        _path_records.append({"op": kind, "dtype": str(input.dtype).split(".")[-1], "forward": forward,
                              "backward": backward})


@contextlib.contextmanager
def recording_paths():
    """Yields a list that receives, for each fused op called in the block, {"op", "dtype", "forward", "backward"}:
    the dtype the op runs in ("float32" for a bfloat16 module on a CPU without bfloat16 kernels: see
    cpu_computes_half_in_float32) and the paths its forward and its backward take ("fused cell", "whole
    recurrence (<kernel>)" or "per step")."""
    global _path_records
    _path_records = []
    try:
        yield _path_records
    finally:
        _path_records = None


# ---------------------------------------------------------------------------------------------------
# The differentiable functions the modules call (contracts as in reference.py).


def lstm_layer(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias=None, weight_hr=None, reverse=False):
    """One LSTM layer in one direction on the fused kernels, differentiable.

    Same arguments and results as ``reference.lstm_layer``: input [N, C] packed rows, batch_sizes [T]
    int64 on the CPU, h0 [B, P], c0 [B, H], weight_ih [4H, C], weight_hh [4H, P], bias [4H] (b_ih + b_hh)
    or None, weight_hr [P, H] or None. Returns (output [N, P], h_n [B, P], c_n [B, H]).
    """
    _record_path("lstm_layer", input, batch_sizes, h0, weight_ih, weight_hh, weight_hr)
    save = _save_for_backward(input, h0, c0, weight_ih, weight_hh, bias, weight_hr)
    output, h_n, c_n, _, _, _ = _call("lstm_layer_forward", input, batch_sizes, h0, c0, weight_ih, weight_hh, bias,
                                      weight_hr, reverse, save)
    return output, h_n, c_n


def gru_layer(input, batch_sizes, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, reverse=False):
    """One GRU layer in one direction on the fused kernels, differentiable. Same arguments and results as
    ``reference.gru_layer``: input [N, C], batch_sizes [T], h0 [B, H], weight_ih [3H, C], weight_hh [3H, H],
    biases [3H] or None. Returns (output [N, H], h_n [B, H])."""
    _record_path("gru_layer", input, batch_sizes, h0, weight_ih, weight_hh)
    save = _save_for_backward(input, h0, weight_ih, weight_hh, bias_ih, bias_hh)
    output, h_n, _, _ = _call("gru_layer_forward", input, batch_sizes, h0, weight_ih, weight_hh, bias_ih, bias_hh,
                              reverse, save)
    return output, h_n


def lstm_cell(input, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One LSTM step on the fused kernels, differentiable: ``reference.lstm_cell``'s contract."""
    _record_path("lstm_cell", input, _one_step(input), h0, weight_ih, weight_hh)
    save = _save_for_backward(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    h1, c1, _ = _call("lstm_cell_forward", input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, save)
    return h1, c1


def gru_cell(input, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One GRU step on the fused kernels, differentiable: ``reference.gru_cell``'s contract."""
    _record_path("gru_cell", input, _one_step(input), h0, weight_ih, weight_hh)
    save = _save_for_backward(input, h0, weight_ih, weight_hh, bias_ih, bias_hh)
    h1, _, _ = _call("gru_cell_forward", input, h0, weight_ih, weight_hh, bias_ih, bias_hh, save)
    return h1
