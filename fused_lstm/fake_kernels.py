"""Fake kernels of the fused ops: their results' shapes and dtypes for torch.compile, torch.export and meta
tensors, with the real kernels' device checks."""

import torch

from . import onnx_export
from . import descriptions  # noqa: F401  (loads the extension, which defines the ops registered here)


def _accumulation_dtype(dtype):
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


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
def _lstm_layer_forward_fake(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, reverse,
                             save_for_backward):
    onnx_export.refuse_fused_op_in_export("lstm_layer_forward")
    _check_fake_devices("lstm_layer_forward", input, batch_sizes, h0=h0, c0=c0, weight_ih=weight_ih,
                        weight_hh=weight_hh, bias_ih=bias_ih, bias_hh=bias_hh, weight_hr=weight_hr)
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

