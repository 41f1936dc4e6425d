"""The fused ops as differentiable functions, which the modules call: lstm_layer, gru_layer, lstm_cell and
gru_cell (contracts as in reference.py). Importing this module registers everything the ops need from Python:
fake kernels (fake_kernels.py), autograd (autograd.py, from the ops' descriptions in csrc/op_descriptions.h)
and vmap rules (vmap_rules.py)."""

from . import fake_kernels, vmap_rules  # noqa: F401  (registered on import)
from .autograd import call, save_for_backward
from .settings import one_step, record_path


def lstm_layer(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, weight_hr=None,
               reverse=False):
    """One LSTM layer in one direction on the fused kernels, differentiable.

    Same arguments and results as ``reference.lstm_layer``: input [N, C] packed rows, batch_sizes [T]
    int64 on the CPU, h0 [B, P], c0 [B, H], weight_ih [4H, C], weight_hh [4H, P], bias_ih and bias_hh [4H]
    (both or neither), weight_hr [P, H] or None. Returns (output [N, P], h_n [B, P], c_n [B, H]).
    """
    record_path("lstm_layer", input, batch_sizes, h0, weight_ih, weight_hh, weight_hr)
    save = save_for_backward(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)
    output, h_n, c_n, _, _, _ = call("lstm_layer_forward", input, batch_sizes, h0, c0, weight_ih, weight_hh, bias_ih,
                                     bias_hh, weight_hr, reverse, save)
    return output, h_n, c_n


def gru_layer(input, batch_sizes, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, reverse=False):
    """One GRU layer in one direction on the fused kernels, differentiable. Same arguments and results as
    ``reference.gru_layer``: input [N, C], batch_sizes [T], h0 [B, H], weight_ih [3H, C], weight_hh [3H, H],
    biases [3H] or None. Returns (output [N, H], h_n [B, H])."""
    record_path("gru_layer", input, batch_sizes, h0, weight_ih, weight_hh)
    save = save_for_backward(input, h0, weight_ih, weight_hh, bias_ih, bias_hh)
    output, h_n, _, _ = call("gru_layer_forward", input, batch_sizes, h0, weight_ih, weight_hh, bias_ih, bias_hh,
                             reverse, save)
    return output, h_n


def lstm_cell(input, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One LSTM step on the fused kernels, differentiable: ``reference.lstm_cell``'s contract."""
    record_path("lstm_cell", input, one_step(input), h0, weight_ih, weight_hh)
    save = save_for_backward(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    h1, c1, _ = call("lstm_cell_forward", input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, save)
    return h1, c1


def gru_cell(input, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One GRU step on the fused kernels, differentiable: ``reference.gru_cell``'s contract."""
    record_path("gru_cell", input, one_step(input), h0, weight_ih, weight_hh)
    save = save_for_backward(input, h0, weight_ih, weight_hh, bias_ih, bias_hh)
    h1, _, _ = call("gru_cell_forward", input, h0, weight_ih, weight_hh, bias_ih, bias_hh, save)
    return h1
