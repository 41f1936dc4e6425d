"""The stack of layers behind the modules, shared by every implementation of a layer: the fused ops
(``impl="fused"``), the readable reference (``"reference"``) and, while ``torch.onnx.export`` captures a model,
ONNX's LSTM/GRU nodes (``"onnx"``). Rows are time-major packed rows [N, C] with per-step batch sizes, as in
``PackedSequence`` (padded input is the case where every batch size is B).

Written so that TorchScript compiles it (a scripted module runs the fused ops through ``torch.ops``); eager
code goes through ``ops`` (autograd forms, torch.func), ``reference`` or ``onnx_export``.
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import onnx_export, ops, reference


def _optional(weights: List[Tensor], index: int, present: bool) -> Optional[Tensor]:
    if present:
        return weights[index]
    return None


def _any_requires_grad(tensors: List[Optional[Tensor]]) -> bool:
    for tensor in tensors:
        if tensor is not None and tensor.requires_grad:
            return True
    return False


@torch.jit.unused
def _eager_lstm_layer(impl: str, input: Tensor, batch_sizes: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor,
                      weight_hh: Tensor, bias_ih: Optional[Tensor], bias_hh: Optional[Tensor],
                      weight_hr: Optional[Tensor], reverse: bool) -> Tuple[Tensor, Tensor, Tensor]:
    if impl == "onnx":
        return onnx_export.lstm_layer(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                                      reverse)
    layer = reference.lstm_layer if impl == "reference" else ops.lstm_layer
    return layer(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, reverse)


def lstm_layer(impl: str, input: Tensor, batch_sizes: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor,
               weight_hh: Tensor, bias_ih: Optional[Tensor], bias_hh: Optional[Tensor], weight_hr: Optional[Tensor],
               reverse: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer and direction with `impl` (reference.lstm_layer's contract)."""
    if torch.jit.is_scripting():
        save = torch.is_grad_enabled() and _any_requires_grad([input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh,
                                                               weight_hr])
        result = torch.ops.fused_lstm.lstm_layer_forward(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias_ih,
                                                         bias_hh, weight_hr, reverse, save)
        return result[0], result[1], result[2]
    return _eager_lstm_layer(impl, input, batch_sizes, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                             reverse)


@torch.jit.unused
def _eager_gru_layer(impl: str, input: Tensor, batch_sizes: Tensor, h0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                     bias_ih: Optional[Tensor], bias_hh: Optional[Tensor], reverse: bool) -> Tuple[Tensor, Tensor]:
    layer = {"onnx": onnx_export.gru_layer, "reference": reference.gru_layer}.get(impl, ops.gru_layer)
    return layer(input, batch_sizes, h0, weight_ih, weight_hh, bias_ih, bias_hh, reverse)


def gru_layer(impl: str, input: Tensor, batch_sizes: Tensor, h0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
              bias_ih: Optional[Tensor], bias_hh: Optional[Tensor], reverse: bool) -> Tuple[Tensor, Tensor]:
    """One GRU layer and direction with `impl` (reference.gru_layer's contract)."""
    if torch.jit.is_scripting():
        save = torch.is_grad_enabled() and _any_requires_grad([input, h0, weight_ih, weight_hh, bias_ih, bias_hh])
        result = torch.ops.fused_lstm.gru_layer_forward(input, batch_sizes, h0, weight_ih, weight_hh, bias_ih,
                                                        bias_hh, reverse, save)
        return result[0], result[1]
    return _eager_gru_layer(impl, input, batch_sizes, h0, weight_ih, weight_hh, bias_ih, bias_hh, reverse)


def lstm_layers(impl: str, rows: Tensor, batch_sizes: Tensor, h0: Tensor, c0: Tensor, weights: List[Tensor],
                num_layers: int, bidirectional: bool, has_bias: bool, has_projection: bool, dropout: float,
                training: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """The stack: rows [N, C]; h0 [L·D, B, P], c0 [L·D, B, H]; weights in nn.LSTM's order (per layer and
    direction: weight_ih, weight_hh, [bias_ih, bias_hh], [weight_hr]). Dropout between layers in training.
    Returns (output rows [N, D·P], h_n [L·D, B, P], c_n [L·D, B, H])."""
    directions = 2 if bidirectional else 1
    per_direction = 2 + (2 if has_bias else 0) + (1 if has_projection else 0)
    h_n: List[Tensor] = []
    c_n: List[Tensor] = []
    layer_input = rows
    for layer in range(num_layers):
        outputs: List[Tensor] = []
        for direction in range(directions):
            index = layer * directions + direction
            w = weights[index * per_direction:(index + 1) * per_direction]
            output, h, c = lstm_layer(impl, layer_input, batch_sizes, h0[index], c0[index], w[0], w[1],
                                      _optional(w, 2, has_bias), _optional(w, 3, has_bias),
                                      _optional(w, per_direction - 1, has_projection), direction == 1)
            outputs.append(output)
            h_n.append(h)
            c_n.append(c)
        layer_input = outputs[0] if directions == 1 else torch.cat(outputs, 1)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = torch.nn.functional.dropout(layer_input, p=dropout, training=True)
    return layer_input, torch.stack(h_n), torch.stack(c_n)


def gru_layers(impl: str, rows: Tensor, batch_sizes: Tensor, h0: Tensor, weights: List[Tensor], num_layers: int,
               bidirectional: bool, has_bias: bool, dropout: float, training: bool) -> Tuple[Tensor, Tensor]:
    """As lstm_layers, for the GRU: returns (output rows [N, D·H], h_n [L·D, B, H])."""
    directions = 2 if bidirectional else 1
    per_direction = 4 if has_bias else 2
    h_n: List[Tensor] = []
    layer_input = rows
    for layer in range(num_layers):
        outputs: List[Tensor] = []
        for direction in range(directions):
            index = layer * directions + direction
            w = weights[index * per_direction:(index + 1) * per_direction]
            output, h = gru_layer(impl, layer_input, batch_sizes, h0[index], w[0], w[1], _optional(w, 2, has_bias),
                                  _optional(w, 3, has_bias), direction == 1)
            outputs.append(output)
            h_n.append(h)
        layer_input = outputs[0] if directions == 1 else torch.cat(outputs, 1)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = torch.nn.functional.dropout(layer_input, p=dropout, training=True)
    return layer_input, torch.stack(h_n)


@torch.jit.unused
def _eager_lstm_cell(impl: str, input: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                     bias_ih: Optional[Tensor], bias_hh: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    if impl == "fused":
        return ops.lstm_cell(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    if impl == "onnx":
        batch_sizes = torch.ones(1, dtype=torch.int64) * input.shape[0]
        _, h1, c1 = onnx_export.lstm_layer(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, None,
                                           False)
        return h1, c1
    return reference.lstm_cell(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)


def lstm_cell(impl: str, input: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
              bias_ih: Optional[Tensor], bias_hh: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """One LSTM step with `impl` (reference.lstm_cell's contract)."""
    if torch.jit.is_scripting():
        save = torch.is_grad_enabled() and _any_requires_grad([input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh])
        result = torch.ops.fused_lstm.lstm_cell_forward(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, save)
        return result[0], result[1]
    return _eager_lstm_cell(impl, input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)


@torch.jit.unused
def _eager_gru_cell(impl: str, input: Tensor, h0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                    bias_ih: Optional[Tensor], bias_hh: Optional[Tensor]) -> Tensor:
    if impl == "fused":
        return ops.gru_cell(input, h0, weight_ih, weight_hh, bias_ih, bias_hh)
    if impl == "onnx":
        batch_sizes = torch.ones(1, dtype=torch.int64) * input.shape[0]
        return onnx_export.gru_layer(input, batch_sizes, h0, weight_ih, weight_hh, bias_ih, bias_hh, False)[1]
    return reference.gru_cell(input, h0, weight_ih, weight_hh, bias_ih, bias_hh)


def gru_cell(impl: str, input: Tensor, h0: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Optional[Tensor],
             bias_hh: Optional[Tensor]) -> Tensor:
    """One GRU step with `impl` (reference.gru_cell's contract)."""
    if torch.jit.is_scripting():
        save = torch.is_grad_enabled() and _any_requires_grad([input, h0, weight_ih, weight_hh, bias_ih, bias_hh])
        return torch.ops.fused_lstm.gru_cell_forward(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, save)[0]
    return _eager_gru_cell(impl, input, h0, weight_ih, weight_hh, bias_ih, bias_hh)
