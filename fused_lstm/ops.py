"""Python side of the fused ops: the wrapper the modules call, fake kernels (shapes for
torch.compile / meta tensors) and autograd (the backward op, and double backward through the
reference)."""

import torch

from . import _C  # noqa: F401  (loading the library registers torch.ops.fused_lstm.*)
from . import onnx_export, reference


def _accumulation_dtype(dtype):
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _check_fake_devices(op_name, input, batch_sizes, **tensors):
    """The fake kernels serve meta tensors and torch.compile; a meta tensor among CPU arguments also lands
    here (Meta wins dispatch), so check devices as the real kernels do instead of returning garbage.
    batch_sizes lives on the CPU whatever the device of the data (or on meta with meta data)."""
    torch._check(batch_sizes.device.type == "cpu" or batch_sizes.device == input.device,
                 lambda: f"fused_lstm.{op_name}: batch_sizes must be a CPU tensor (as in PackedSequence), got "
                         f"{batch_sizes.device}")
    for name, tensor in tensors.items():
        if tensor is not None:
            torch._check(tensor.device == input.device,
                         lambda: f"fused_lstm.{op_name}: {name} is on {tensor.device} but input is on {input.device}; "
                                 "all tensors except batch_sizes must be on one device")


def lstm_layer(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias=None, weight_hr=None, reverse=False):
    """One LSTM layer in one direction on the fused kernels, differentiable.

    Same arguments and results as ``reference.lstm_layer``: input [N, C] packed rows, batch_sizes [T]
    int64 on the CPU, h0 [B, P], c0 [B, H], weight_ih [4H, C], weight_hh [4H, P], bias [4H] (b_ih + b_hh)
    or None, weight_hr [P, H] or None. Returns (output [N, P], h_n [B, P], c_n [B, H]).
    """
    tensors = (input, h0, c0, weight_ih, weight_hh, bias, weight_hr)
    save_for_backward = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    output, h_n, c_n, _, _, _ = torch.ops.fused_lstm.lstm_layer_forward(
        input, batch_sizes, h0, c0, weight_ih, weight_hh, bias, weight_hr, reverse, save_for_backward)
    return output, h_n, c_n


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

    def weight_like(weight):
        return torch.empty_like(weight) if compute_grad_weights and weight is not None else input.new_empty(0)

    return (
        torch.empty_like(input) if compute_grad_input else input.new_empty(0),
        torch.empty_like(h0),
        input.new_empty(grad_c_n.shape),
        weight_like(weight_ih),
        weight_like(weight_hh),
        input.new_empty(4 * hidden) if compute_grad_weights and has_bias else input.new_empty(0),
        weight_like(weight_hr),
    )


def _setup_context(ctx, inputs, output):
    input, batch_sizes, h0, c0, weight_ih, weight_hh, bias, weight_hr, reverse, save_for_backward = inputs
    out, _, _, gates, cell_prev, proj_input = output
    ctx.reverse = reverse
    ctx.has_bias = bias is not None
    ctx.saved_for_backward = save_for_backward
    ctx.mark_non_differentiable(gates, cell_prev, proj_input)
    # Unused outputs get None, not zero-filled gradients: filling [N, 4H] zeros for the saved gates every
    # backward cost as much as a tenth of the whole backward. _backward makes the zeros it does need.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias, weight_hr, out, gates, cell_prev,
                          proj_input)


def _zeros_if_none(grad, like):
    return torch.zeros_like(like) if grad is None else grad


def _check_saved(ctx):
    if not ctx.saved_for_backward:
        raise RuntimeError("fused_lstm: the forward op was called with save_for_backward=False, so it saved "
                           "nothing to differentiate; call it with save_for_backward=True")


def _reference_gradients(recompute, grad_outputs, differentiable, needed):
    """Double backward: gradients of the reference's recomputed graph with create_graph=True, so that
    they are differentiable themselves. Returns one entry per `differentiable` tensor (None where not needed)."""
    wanted = [t for t, need in zip(differentiable, needed) if need and t is not None]
    with torch.enable_grad():
        outputs = recompute()
        grads = torch.autograd.grad(outputs, wanted, grad_outputs, create_graph=True, allow_unused=True)
    by_tensor = dict(zip(map(id, wanted), grads))
    return [by_tensor.get(id(t)) if t is not None else None for t in differentiable]


def _backward(ctx, grad_output, grad_h_n, grad_c_n, *_non_differentiable):
    (input, batch_sizes, h0, c0, weight_ih, weight_hh, bias, weight_hr, out, gates, cell_prev,
     proj_input) = ctx.saved_tensors
    grad_output = _zeros_if_none(grad_output, out)
    grad_h_n = _zeros_if_none(grad_h_n, h0)
    grad_c_n = _zeros_if_none(grad_c_n, c0)
    differentiable = (input, h0, c0, weight_ih, weight_hh, bias, weight_hr)

    if torch.is_grad_enabled():
        # create_graph=True: the gradient itself must be differentiable. Recompute the layer with the
        # reference (same math, plain autograd ops) and differentiate that graph instead.
        needed = (ctx.needs_input_grad[0], *ctx.needs_input_grad[2:8])
        per_input = _reference_gradients(
            lambda: reference.lstm_layer(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias, weight_hr,
                                         ctx.reverse),
            (grad_output, grad_h_n, grad_c_n), differentiable, needed)
    else:
        _check_saved(ctx)
        # Skip dL/dx and the weight gradients (their large GEMMs) when nothing needs them.
        input_needed = ctx.needs_input_grad[0]
        weights_needed = any(ctx.needs_input_grad[4:8])
        (grad_input, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias,
         grad_weight_hr) = torch.ops.fused_lstm.lstm_layer_backward(
            grad_output, grad_h_n, grad_c_n, input, batch_sizes, h0, weight_ih, weight_hh, weight_hr, out, gates,
            cell_prev, proj_input, ctx.reverse, ctx.has_bias, input_needed, weights_needed)
        per_input = [grad_input if input_needed else None, grad_h0, grad_c0,
                     grad_weight_ih if weights_needed else None, grad_weight_hh if weights_needed else None,
                     grad_bias if weights_needed and ctx.has_bias else None,
                     grad_weight_hr if weights_needed and weight_hr is not None else None]

    grad_input, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias, grad_weight_hr = per_input
    return (grad_input, None, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias, grad_weight_hr, None,
            None)


torch.library.register_autograd("fused_lstm::lstm_layer_forward", _backward, setup_context=_setup_context)


def gru_layer(input, batch_sizes, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, reverse=False):
    """One GRU layer in one direction on the fused kernels, differentiable.

    Same arguments and results as ``reference.gru_layer``: input [N, C] packed rows, batch_sizes [T] int64
    on the CPU, h0 [B, H], weight_ih [3H, C], weight_hh [3H, H], biases [3H] or None.
    Returns (output [N, H], h_n [B, H]).
    """
    tensors = (input, h0, weight_ih, weight_hh, bias_ih, bias_hh)
    save_for_backward = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    output, h_n, _, _ = torch.ops.fused_lstm.gru_layer_forward(input, batch_sizes, h0, weight_ih, weight_hh, bias_ih,
                                                              bias_hh, reverse, save_for_backward)
    return output, h_n


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

    def weight_like(weight):
        return torch.empty_like(weight) if compute_grad_weights else input.new_empty(0)

    return (torch.empty_like(input) if compute_grad_input else input.new_empty(0), torch.empty_like(h0),
            weight_like(weight_ih), weight_like(weight_hh), input.new_empty(bias_shape), input.new_empty(bias_shape))


def _gru_setup_context(ctx, inputs, output):
    input, batch_sizes, h0, weight_ih, weight_hh, bias_ih, bias_hh, reverse, save_for_backward = inputs
    out, _, gates, candidate_hidden = output
    ctx.reverse = reverse
    ctx.has_bias = bias_ih is not None
    ctx.saved_for_backward = save_for_backward
    ctx.mark_non_differentiable(gates, candidate_hidden)
    ctx.set_materialize_grads(False)  # as for the LSTM: _gru_backward makes the zeros it needs
    ctx.save_for_backward(input, batch_sizes, h0, weight_ih, weight_hh, bias_ih, bias_hh, out, gates,
                          candidate_hidden)


def _gru_backward(ctx, grad_output, grad_h_n, *_non_differentiable):
    (input, batch_sizes, h0, weight_ih, weight_hh, bias_ih, bias_hh, out, gates,
     candidate_hidden) = ctx.saved_tensors
    grad_output = _zeros_if_none(grad_output, out)
    grad_h_n = _zeros_if_none(grad_h_n, h0)
    differentiable = (input, h0, weight_ih, weight_hh, bias_ih, bias_hh)
    if torch.is_grad_enabled():
        # create_graph=True: differentiate the reference's graph (see _backward).
        needed = (ctx.needs_input_grad[0], *ctx.needs_input_grad[2:7])
        per_input = _reference_gradients(
            lambda: reference.gru_layer(input, batch_sizes, h0, weight_ih, weight_hh, bias_ih, bias_hh, ctx.reverse),
            (grad_output, grad_h_n), differentiable, needed)
    else:
        _check_saved(ctx)
        input_needed = ctx.needs_input_grad[0]
        weights_needed = any(ctx.needs_input_grad[3:7])  # as for the LSTM: skip the GEMMs nothing needs
        (grad_input, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih,
         grad_bias_hh) = torch.ops.fused_lstm.gru_layer_backward(
            grad_output, grad_h_n, input, batch_sizes, h0, weight_ih, weight_hh, out, gates, candidate_hidden,
            ctx.reverse, ctx.has_bias, input_needed, weights_needed)
        weights = (grad_weight_ih, grad_weight_hh) if weights_needed else (None, None)
        biases = (grad_bias_ih, grad_bias_hh) if ctx.has_bias and weights_needed else (None, None)
        per_input = [grad_input if input_needed else None, grad_h0, *weights, *biases]
    grad_input, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh = per_input
    return grad_input, None, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh, None, None


torch.library.register_autograd("fused_lstm::gru_layer_forward", _gru_backward, setup_context=_gru_setup_context)
