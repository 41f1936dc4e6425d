"""A small, readable pure-PyTorch LSTM and GRU: the reference the fused kernels are tested against, the
differentiable path that double backward (``create_graph=True``) takes, and the forward-mode derivatives
(``*_jvp``) that ``torch.func.jvp`` and ``torch.autograd.forward_ad`` use. Self-contained: plain tensor
operations only (and written so that TorchScript compiles it).

One step of the LSTM (four gates at once, PyTorch's order i, f, g, o):

    gates = x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh
    c'    = σ(f)·c + σ(i)·tanh(g)
    h'    = σ(o)·tanh(c')                          (then h'·W_hrᵀ when there is a projection)

and of the GRU (gate order r, z, n, as PyTorch defines it):

    r = σ(x·W_irᵀ + b_ir + h·W_hrᵀ + b_hr),   z = σ(... same with W_iz, W_hz ...)
    n = tanh(x·W_inᵀ + b_in + r·(h·W_hnᵀ + b_hn)),   h' = (1 − z)·n + z·h

A layer runs the step over a sequence of time-major packed rows, as in ``PackedSequence``: step t owns
``batch_sizes[t]`` rows, and shorter sequences simply drop out of the batch (their state stops changing).
The ``*_jvp`` functions return (outputs, tangents of the outputs) for tangents of the inputs (None: zero).
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor


def _affine(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    out = x @ weight.t()
    return out if bias is None else out + bias


def lstm_cell(input: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
              bias_ih: Optional[Tensor] = None, bias_hh: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """One LSTM step: input [B, C], h0 [B, H], c0 [B, H], weight_ih [4H, C], weight_hh [4H, H], biases [4H]
    or None. Returns (h1 [B, H], c1 [B, H])."""
    gates = _affine(input, weight_ih, bias_ih) + _affine(h0, weight_hh, bias_hh)
    in_gate, forget_gate, candidate, out_gate = gates.chunk(4, dim=1)
    c1 = torch.sigmoid(forget_gate) * c0 + torch.sigmoid(in_gate) * torch.tanh(candidate)
    return torch.sigmoid(out_gate) * torch.tanh(c1), c1


def gru_cell(input: Tensor, h0: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Optional[Tensor] = None,
             bias_hh: Optional[Tensor] = None) -> Tensor:
    """One GRU step: input [B, C], h0 [B, H], weight_ih [3H, C], weight_hh [3H, H], biases [3H] or None.
    Returns h1 [B, H]."""
    input_r, input_z, input_n = _affine(input, weight_ih, bias_ih).chunk(3, dim=1)
    hidden_r, hidden_z, hidden_n = _affine(h0, weight_hh, bias_hh).chunk(3, dim=1)
    reset = torch.sigmoid(input_r + hidden_r)
    update = torch.sigmoid(input_z + hidden_z)
    candidate = torch.tanh(input_n + reset * hidden_n)
    return (1 - update) * candidate + update * h0


def _steps(batch_sizes: Tensor, reverse: bool) -> Tuple[List[int], List[int], List[int]]:
    """(rows of each step, first row of each step, the steps in the order the recurrence visits them)."""
    rows: List[int] = batch_sizes.tolist()
    offsets: List[int] = [0]
    for count in rows[:-1]:
        offsets.append(offsets[-1] + count)
    order = list(range(len(rows)))
    if reverse:
        order.reverse()
    return rows, offsets, order


def lstm_layer(input: Tensor, batch_sizes: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
               bias_ih: Optional[Tensor] = None, bias_hh: Optional[Tensor] = None,
               weight_hr: Optional[Tensor] = None, reverse: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer in one direction.

    input: [N, C] packed rows; batch_sizes: [T] int64 (CPU), non-increasing; h0: [B, P]; c0: [B, H];
    weight_ih: [4H, C]; weight_hh: [4H, P]; bias_ih, bias_hh: [4H] or None; weight_hr: [P, H] or None.
    Returns (output [N, P], h_n [B, P], c_n [B, H]).
    """
    rows, offsets, order = _steps(batch_sizes, reverse)
    h, c = h0, c0
    outputs: List[Tensor] = [h0] * len(rows)
    for t in order:
        count, offset = rows[t], offsets[t]
        h_t, c_t = lstm_cell(input[offset:offset + count], h[:count], c[:count], weight_ih, weight_hh, bias_ih,
                             bias_hh)
        if weight_hr is not None:
            h_t = h_t @ weight_hr.t()
        outputs[t] = h_t
        # Rows past `count` belong to sequences that are not active at this step: they keep their state.
        h = torch.cat([h_t, h[count:]])
        c = torch.cat([c_t, c[count:]])
    return torch.cat(outputs), h, c


def gru_layer(input: Tensor, batch_sizes: Tensor, h0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
              bias_ih: Optional[Tensor] = None, bias_hh: Optional[Tensor] = None,
              reverse: bool = False) -> Tuple[Tensor, Tensor]:
    """One GRU layer in one direction. input: [N, C]; h0: [B, H]; weight_ih: [3H, C]; weight_hh: [3H, H];
    biases [3H] or None. Returns (output [N, H], h_n [B, H])."""
    rows, offsets, order = _steps(batch_sizes, reverse)
    h = h0
    outputs: List[Tensor] = [h0] * len(rows)
    for t in order:
        count, offset = rows[t], offsets[t]
        h_t = gru_cell(input[offset:offset + count], h[:count], weight_ih, weight_hh, bias_ih, bias_hh)
        outputs[t] = h_t
        h = torch.cat([h_t, h[count:]])
    return torch.cat(outputs), h


# ---------------------------------------------------------------------------------------------------
# Forward mode: each step's tangent by the product and chain rules, alongside the step itself.


def _zero_if_none(tangent: Optional[Tensor], like: Tensor) -> Tensor:
    return torch.zeros_like(like) if tangent is None else tangent


def _affine_jvp(x: Tensor, dx: Tensor, weight: Tensor, dweight: Optional[Tensor], bias: Optional[Tensor],
                dbias: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """x·Wᵀ + b and its tangent dx·Wᵀ + x·dWᵀ + db."""
    out = _affine(x, weight, bias)
    tangent = dx @ weight.t()
    if dweight is not None:
        tangent = tangent + x @ dweight.t()
    if dbias is not None:
        tangent = tangent + dbias
    return out, tangent


def lstm_cell_jvp(input: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                  bias_ih: Optional[Tensor], bias_hh: Optional[Tensor], d_input: Optional[Tensor],
                  d_h0: Optional[Tensor], d_c0: Optional[Tensor], d_weight_ih: Optional[Tensor],
                  d_weight_hh: Optional[Tensor], d_bias_ih: Optional[Tensor],
                  d_bias_hh: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """lstm_cell and its tangent: returns (h1, c1, dh1, dc1)."""
    x_part, dx_part = _affine_jvp(input, _zero_if_none(d_input, input), weight_ih, d_weight_ih, bias_ih, d_bias_ih)
    h_part, dh_part = _affine_jvp(h0, _zero_if_none(d_h0, h0), weight_hh, d_weight_hh, bias_hh, d_bias_hh)
    i, f, g, o = (x_part + h_part).chunk(4, dim=1)
    di, df, dg, do = (dx_part + dh_part).chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    di, df, dg, do = di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)
    c1 = f * c0 + i * g
    dc1 = df * c0 + f * _zero_if_none(d_c0, c0) + di * g + i * dg
    tanh_c1 = torch.tanh(c1)
    return o * tanh_c1, c1, do * tanh_c1 + o * (1 - tanh_c1 * tanh_c1) * dc1, dc1


def gru_cell_jvp(input: Tensor, h0: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Optional[Tensor],
                 bias_hh: Optional[Tensor], d_input: Optional[Tensor], d_h0: Optional[Tensor],
                 d_weight_ih: Optional[Tensor], d_weight_hh: Optional[Tensor], d_bias_ih: Optional[Tensor],
                 d_bias_hh: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """gru_cell and its tangent: returns (h1, dh1)."""
    d_h0_ = _zero_if_none(d_h0, h0)
    x_part, dx_part = _affine_jvp(input, _zero_if_none(d_input, input), weight_ih, d_weight_ih, bias_ih, d_bias_ih)
    h_part, dh_part = _affine_jvp(h0, d_h0_, weight_hh, d_weight_hh, bias_hh, d_bias_hh)
    input_r, input_z, input_n = x_part.chunk(3, dim=1)
    d_input_r, d_input_z, d_input_n = dx_part.chunk(3, dim=1)
    hidden_r, hidden_z, hidden_n = h_part.chunk(3, dim=1)
    d_hidden_r, d_hidden_z, d_hidden_n = dh_part.chunk(3, dim=1)
    reset = torch.sigmoid(input_r + hidden_r)
    update = torch.sigmoid(input_z + hidden_z)
    d_reset = (d_input_r + d_hidden_r) * reset * (1 - reset)
    d_update = (d_input_z + d_hidden_z) * update * (1 - update)
    candidate = torch.tanh(input_n + reset * hidden_n)
    d_candidate = (d_input_n + d_reset * hidden_n + reset * d_hidden_n) * (1 - candidate * candidate)
    h1 = (1 - update) * candidate + update * h0
    return h1, (1 - update) * d_candidate + update * d_h0_ + d_update * (h0 - candidate)


def lstm_layer_jvp(input: Tensor, batch_sizes: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor,
                   weight_hh: Tensor, bias_ih: Optional[Tensor], bias_hh: Optional[Tensor],
                   weight_hr: Optional[Tensor], reverse: bool, d_input: Optional[Tensor], d_h0: Optional[Tensor],
                   d_c0: Optional[Tensor], d_weight_ih: Optional[Tensor], d_weight_hh: Optional[Tensor],
                   d_bias_ih: Optional[Tensor], d_bias_hh: Optional[Tensor], d_weight_hr: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """lstm_layer and its tangent: returns (output, h_n, c_n, d_output, d_h_n, d_c_n)."""
    rows, offsets, order = _steps(batch_sizes, reverse)
    d_input_ = _zero_if_none(d_input, input)
    h, c, dh, dc = h0, c0, _zero_if_none(d_h0, h0), _zero_if_none(d_c0, c0)
    outputs: List[Tensor] = [h0] * len(rows)
    tangents: List[Tensor] = [h0] * len(rows)
    for t in order:
        count, offset = rows[t], offsets[t]
        h_t, c_t, dh_t, dc_t = lstm_cell_jvp(input[offset:offset + count], h[:count], c[:count], weight_ih,
                                             weight_hh, bias_ih, bias_hh, d_input_[offset:offset + count],
                                             dh[:count], dc[:count], d_weight_ih, d_weight_hh, d_bias_ih, d_bias_hh)
        if weight_hr is not None:
            h_t, dh_t = _affine_jvp(h_t, dh_t, weight_hr, d_weight_hr, None, None)
        outputs[t], tangents[t] = h_t, dh_t
        h, dh = torch.cat([h_t, h[count:]]), torch.cat([dh_t, dh[count:]])
        c, dc = torch.cat([c_t, c[count:]]), torch.cat([dc_t, dc[count:]])
    return torch.cat(outputs), h, c, torch.cat(tangents), dh, dc


def gru_layer_jvp(input: Tensor, batch_sizes: Tensor, h0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                  bias_ih: Optional[Tensor], bias_hh: Optional[Tensor], reverse: bool, d_input: Optional[Tensor],
                  d_h0: Optional[Tensor], d_weight_ih: Optional[Tensor], d_weight_hh: Optional[Tensor],
                  d_bias_ih: Optional[Tensor], d_bias_hh: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """gru_layer and its tangent: returns (output, h_n, d_output, d_h_n)."""
    rows, offsets, order = _steps(batch_sizes, reverse)
    d_input_ = _zero_if_none(d_input, input)
    h, dh = h0, _zero_if_none(d_h0, h0)
    outputs: List[Tensor] = [h0] * len(rows)
    tangents: List[Tensor] = [h0] * len(rows)
    for t in order:
        count, offset = rows[t], offsets[t]
        h_t, dh_t = gru_cell_jvp(input[offset:offset + count], h[:count], weight_ih, weight_hh, bias_ih, bias_hh,
                                 d_input_[offset:offset + count], dh[:count], d_weight_ih, d_weight_hh, d_bias_ih,
                                 d_bias_hh)
        outputs[t], tangents[t] = h_t, dh_t
        h, dh = torch.cat([h_t, h[count:]]), torch.cat([dh_t, dh[count:]])
    return torch.cat(outputs), h, torch.cat(tangents), dh
