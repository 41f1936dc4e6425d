"""A small, readable pure-PyTorch LSTM (and GRU): the reference the fused kernels are tested against, and the
differentiable path that double backward (``create_graph=True``) takes.

It computes exactly what the fused ops compute, one step at a time with plain tensor operations:

    gates = x_t·W_ihᵀ + h_{t-1}·W_hhᵀ + b          (four gates at once, order i, f, g, o)
    c_t   = σ(f)·c_{t-1} + σ(i)·tanh(g)
    h_t   = σ(o)·tanh(c_t)                          (then h_t·W_hrᵀ when there is a projection)

The GRU (gate order r, z, n, as PyTorch defines it):

    r = σ(x_t·W_irᵀ + b_ir + h_{t-1}·W_hrᵀ + b_hr),   z = σ(... same with W_iz, W_hz ...)
    n = tanh(x_t·W_inᵀ + b_in + r·(h_{t-1}·W_hnᵀ + b_hn)),   h_t = (1 − z)·n + z·h_{t-1}

Sequences are time-major packed rows, as in ``PackedSequence``: step t owns ``batch_sizes[t]`` rows,
and shorter sequences simply drop out of the batch (their state stops changing).
"""

import torch


def lstm_layer(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias=None, weight_hr=None, reverse=False):
    """One LSTM layer in one direction.

    input: [N, C] packed rows; batch_sizes: [T] int64 (CPU), non-increasing; h0: [B, P]; c0: [B, H];
    weight_ih: [4H, C]; weight_hh: [4H, P]; bias: [4H] (b_ih + b_hh) or None; weight_hr: [P, H] or None.
    Returns (output [N, P], h_n [B, P], c_n [B, H]).
    """
    rows_per_step = [int(n) for n in batch_sizes.tolist()]
    offsets = [0]
    for rows in rows_per_step[:-1]:
        offsets.append(offsets[-1] + rows)
    steps = range(len(rows_per_step) - 1, -1, -1) if reverse else range(len(rows_per_step))

    h, c = h0, c0
    outputs = [None] * len(rows_per_step)
    for t in steps:
        rows, offset = rows_per_step[t], offsets[t]
        x_t = input[offset:offset + rows]
        gates = x_t @ weight_ih.t() + h[:rows] @ weight_hh.t()
        if bias is not None:
            gates = gates + bias
        in_gate, forget_gate, candidate, out_gate = gates.chunk(4, dim=1)
        c_t = torch.sigmoid(forget_gate) * c[:rows] + torch.sigmoid(in_gate) * torch.tanh(candidate)
        h_t = torch.sigmoid(out_gate) * torch.tanh(c_t)
        if weight_hr is not None:
            h_t = h_t @ weight_hr.t()
        outputs[t] = h_t
        # Rows past `rows` belong to sequences that are not active at this step: they keep their state.
        h = torch.cat([h_t, h[rows:]])
        c = torch.cat([c_t, c[rows:]])
    return torch.cat(outputs), h, c


def gru_layer(input, batch_sizes, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, reverse=False):
    """One GRU layer in one direction. input: [N, C]; h0: [B, H]; weight_ih: [3H, C]; weight_hh: [3H, H];
    biases [3H] or None. Returns (output [N, H], h_n [B, H])."""
    rows_per_step = [int(n) for n in batch_sizes.tolist()]
    offsets = [0]
    for rows in rows_per_step[:-1]:
        offsets.append(offsets[-1] + rows)
    steps = range(len(rows_per_step) - 1, -1, -1) if reverse else range(len(rows_per_step))

    h = h0
    outputs = [None] * len(rows_per_step)
    for t in steps:
        rows, offset = rows_per_step[t], offsets[t]
        input_part = input[offset:offset + rows] @ weight_ih.t()
        hidden_part = h[:rows] @ weight_hh.t()
        if bias_ih is not None:
            input_part, hidden_part = input_part + bias_ih, hidden_part + bias_hh
        input_r, input_z, input_n = input_part.chunk(3, dim=1)
        hidden_r, hidden_z, hidden_n = hidden_part.chunk(3, dim=1)
        reset = torch.sigmoid(input_r + hidden_r)
        update = torch.sigmoid(input_z + hidden_z)
        candidate = torch.tanh(input_n + reset * hidden_n)
        h_t = (1 - update) * candidate + update * h[:rows]
        outputs[t] = h_t
        h = torch.cat([h_t, h[rows:]])
    return torch.cat(outputs), h


def lstm(module, input, hx=None):
    """Runs an LSTM module (``fused_lstm.LSTM`` or ``torch.nn.LSTM``: same parameters) with the
    reference layer above, through the same argument handling as ``fused_lstm.LSTM``."""
    from .modules import lstm_stack_forward

    return lstm_stack_forward(module, input, hx, lstm_layer)


def lstm_cell(module, input, hx=None):
    """Runs an LSTM cell module (``fused_lstm.LSTMCell`` or ``torch.nn.LSTMCell``) with the reference."""
    from .modules import lstm_cell_forward

    return lstm_cell_forward(module, input, hx, lstm_layer)


def gru(module, input, hx=None):
    """Runs a GRU module (``fused_lstm.GRU`` or ``torch.nn.GRU``) with the reference layer."""
    from .modules import gru_stack_forward

    return gru_stack_forward(module, input, hx, gru_layer)


def gru_cell(module, input, hx=None):
    """Runs a GRU cell module (``fused_lstm.GRUCell`` or ``torch.nn.GRUCell``) with the reference."""
    from .modules import gru_cell_forward

    return gru_cell_forward(module, input, hx, gru_layer)
