"""Drop-in replacements for torch.nn.LSTM and torch.nn.LSTMCell on the fused ops.

Same constructors, parameter names, shapes, order and initialisation as PyTorch's, so state dicts load
both ways; same forward contracts, same exceptions for the same mistakes. They derive from nn.Module,
not nn.RNNBase, because dynamo refuses to trace RNNBase subclasses: ``torch.compile(fullgraph=True)``
works on these modules.
"""

import math
import numbers
import warnings

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import ops


def _check_lstm_arguments(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size):
    """The constructor checks of nn.LSTM, with its exception types and messages."""
    if not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1 or isinstance(dropout, bool):
        raise ValueError("dropout should be a number in range [0, 1] representing the probability of an "
                         "element being zeroed")
    if dropout > 0 and num_layers == 1:
        warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                      f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                      stacklevel=3)
    if not isinstance(bias, bool):
        raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
    if not isinstance(batch_first, bool):
        raise TypeError(f"batch_first should be of type bool, got: {type(batch_first).__name__}")
    if not isinstance(input_size, int):
        raise TypeError(f"input_size should be of type int, got: {type(input_size).__name__}")
    if input_size <= 0:
        raise ValueError("input_size must be greater than zero")
    if not isinstance(hidden_size, int):
        raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
    if hidden_size <= 0:
        raise ValueError("hidden_size must be greater than zero")
    if num_layers <= 0:
        raise ValueError("num_layers must be greater than zero")
    if proj_size < 0:
        raise ValueError("proj_size should be a positive integer or zero to disable projections")
    if proj_size >= hidden_size:
        raise ValueError("proj_size has to be smaller than hidden_size")


class LSTM(nn.Module):
    """Multi-layer LSTM on fused kernels; a drop-in replacement for ``torch.nn.LSTM`` (same arguments,
    parameters and results; see its documentation)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__()
        _check_lstm_arguments(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size)
        self.mode = "LSTM"
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        factory_kwargs = {"device": device, "dtype": dtype}
        num_directions = 2 if bidirectional else 1
        real_hidden_size = proj_size if proj_size > 0 else hidden_size
        self._flat_weights_names = []
        self._all_weights = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                layer_input_size = input_size if layer == 0 else real_hidden_size * num_directions
                suffix = "_reverse" if direction == 1 else ""
                shapes = [("weight_ih", (4 * hidden_size, layer_input_size)),
                          ("weight_hh", (4 * hidden_size, real_hidden_size))]
                if bias:
                    shapes += [("bias_ih", (4 * hidden_size,)), ("bias_hh", (4 * hidden_size,))]
                if proj_size > 0:
                    shapes += [("weight_hr", (proj_size, hidden_size))]
                names = []
                for kind, shape in shapes:
                    name = f"{kind}_l{layer}{suffix}"
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory_kwargs)))
                    names.append(name)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    def reset_parameters(self):
        """nn.LSTM's initialisation: every parameter uniform in ±1/sqrt(hidden_size)."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self):
        """Kept for code written for nn.LSTM; the fused kernels need no flat weight buffer."""

    @property
    def _flat_weights(self):
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self):
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def extra_repr(self):
        text = "{input_size}, {hidden_size}"
        if self.proj_size != 0:
            text += ", proj_size={proj_size}"
        if self.num_layers != 1:
            text += ", num_layers={num_layers}"
        if self.bias is not True:
            text += ", bias={bias}"
        if self.batch_first is not False:
            text += ", batch_first={batch_first}"
        if self.dropout != 0:
            text += ", dropout={dropout}"
        if self.bidirectional is not False:
            text += ", bidirectional={bidirectional}"
        return text.format(**self.__dict__)

    def forward(self, input, hx=None):
        return lstm_stack_forward(self, input, hx, ops.lstm_layer)


class LSTMCell(nn.Module):
    """One LSTM step on the fused kernels; a drop-in replacement for ``torch.nn.LSTMCell``."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_ih = nn.Parameter(torch.empty((4 * hidden_size, input_size), **factory_kwargs))
        self.weight_hh = nn.Parameter(torch.empty((4 * hidden_size, hidden_size), **factory_kwargs))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory_kwargs))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory_kwargs))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self):
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def extra_repr(self):
        text = "{input_size}, {hidden_size}"
        if self.bias is not True:
            text += ", bias={bias}"
        return text.format(**self.__dict__)

    def forward(self, input, hx=None):
        return lstm_cell_forward(self, input, hx, ops.lstm_layer)


# ---------------------------------------------------------------------------------------------------
# The sequence handling shared by the fused modules and the reference: argument checks, packing,
# layers, directions, dropout. `layer` runs one layer in one direction (ops.lstm_layer or
# reference.lstm_layer). `module` is anything with nn.LSTM's attributes and parameter names.


def _compute_dtype(module, input):
    """The dtype the layers run in: the autocast dtype under CUDA autocast (as nn.LSTM does), else the
    weights' dtype, which the input must match."""
    weight = module.weight_ih_l0 if hasattr(module, "weight_ih_l0") else module.weight_ih
    if input.device.type == "cuda" and torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    if input.dtype != weight.dtype and not torch._C._is_any_autocast_enabled():
        raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype ({weight.dtype}). "
                         f"Convert input: input.to({weight.dtype}), or convert model: model.to({input.dtype})")
    return weight.dtype


def _check_hidden_size(hx, expected, message):
    if hx.size() != expected:
        raise RuntimeError(message.format(expected, list(hx.size())))


def _check_state(state, input, which):
    # nn.LSTM's kernels raise these for states on another device or of another dtype.
    if state.device != input.device:
        raise RuntimeError(f"Input and {which} tensors are not at the same device, found input tensor at "
                           f"{input.device} and {which} tensor at {state.device}")
    if state.dtype != input.dtype:
        raise RuntimeError(f"Expected {which} and input to have the same dtype, got {which} {state.dtype} and "
                           f"input {input.dtype}")


def lstm_stack_forward(module, input, hx, layer):
    """nn.LSTM.forward's contract: returns (output, (h_n, c_n)), output a PackedSequence if input is one."""
    num_directions = 2 if module.bidirectional else 1
    real_hidden_size = module.proj_size if module.proj_size > 0 else module.hidden_size
    state_rows = module.num_layers * num_directions

    packed = isinstance(input, PackedSequence)
    if packed:
        data, batch_sizes, sorted_indices, unsorted_indices = input
        is_batched = True
        if data.dim() != 2:
            raise RuntimeError(f"input must have 2 dimensions, got {data.dim()}")
        batch = int(batch_sizes[0])
        steps = batch_sizes.numel()
    else:
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        is_batched = input.dim() == 3
        batch_dim = 0 if module.batch_first else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
        sorted_indices = unsorted_indices = None
        time_major = input.transpose(0, 1) if module.batch_first else input
        steps, batch = time_major.shape[0], time_major.shape[1]
        data = time_major
    if data.size(-1) != module.input_size:
        raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {module.input_size}, "
                           f"got {data.size(-1)}")
    dtype = _compute_dtype(module, data)

    if hx is None:
        h0 = torch.zeros(state_rows, batch, real_hidden_size, dtype=dtype, device=data.device)
        c0 = torch.zeros(state_rows, batch, module.hidden_size, dtype=dtype, device=data.device)
    else:
        h0, c0 = hx
        if not packed:
            expected_dim = 3 if is_batched else 2
            if h0.dim() != expected_dim or c0.dim() != expected_dim:
                kind = "batched 3-D" if is_batched else "unbatched 2-D"
                raise RuntimeError(f"For {kind} input, hx and cx should also be {expected_dim}-D but got "
                                   f"({h0.dim()}-D, {c0.dim()}-D) tensors")
            if not is_batched:
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        _check_hidden_size(h0, (state_rows, batch, real_hidden_size), "Expected hidden[0] size {}, got {}")
        _check_hidden_size(c0, (state_rows, batch, module.hidden_size), "Expected hidden[1] size {}, got {}")
        if sorted_indices is not None:
            h0, c0 = h0.index_select(1, sorted_indices), c0.index_select(1, sorted_indices)
        if not torch.is_autocast_enabled("cuda"):
            _check_state(h0, data, "hidden")
            _check_state(c0, data, "cell")
    if steps == 0:
        raise RuntimeError("fused_lstm: the input sequence is empty (length 0); an LSTM needs at least one step")

    data, h0, c0 = data.to(dtype), h0.to(dtype), c0.to(dtype)
    if not packed:
        batch_sizes = torch.full((steps,), batch, dtype=torch.int64)
        data = data.reshape(steps * batch, module.input_size)

    h_n, c_n = [], []
    layer_input = data
    for layer_index in range(module.num_layers):
        direction_outputs = []
        for direction in range(num_directions):
            suffix = "_reverse" if direction == 1 else ""
            weight_ih = getattr(module, f"weight_ih_l{layer_index}{suffix}").to(dtype)
            weight_hh = getattr(module, f"weight_hh_l{layer_index}{suffix}").to(dtype)
            bias = None
            if module.bias:
                bias = (getattr(module, f"bias_ih_l{layer_index}{suffix}")
                        + getattr(module, f"bias_hh_l{layer_index}{suffix}")).to(dtype)
            weight_hr = getattr(module, f"weight_hr_l{layer_index}{suffix}").to(dtype) if module.proj_size else None
            state_index = layer_index * num_directions + direction
            output, h_last, c_last = layer(layer_input, batch_sizes, h0[state_index], c0[state_index], weight_ih,
                                           weight_hh, bias, weight_hr, direction == 1)
            direction_outputs.append(output)
            h_n.append(h_last)
            c_n.append(c_last)
        layer_input = direction_outputs[0] if num_directions == 1 else torch.cat(direction_outputs, dim=1)
        if module.dropout > 0 and module.training and layer_index < module.num_layers - 1:
            layer_input = nn.functional.dropout(layer_input, p=module.dropout, training=True)

    h_n, c_n = torch.stack(h_n), torch.stack(c_n)
    if packed:
        if unsorted_indices is not None:
            h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
        return PackedSequence(layer_input, batch_sizes, sorted_indices, unsorted_indices), (h_n, c_n)
    output = layer_input.reshape(steps, batch, num_directions * real_hidden_size)
    if module.batch_first:
        output = output.transpose(0, 1)
    if not is_batched:
        output = output.squeeze(batch_dim)
        h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
    return output, (h_n, c_n)


def lstm_cell_forward(module, input, hx, layer):
    """nn.LSTMCell.forward's contract: returns (h_1, c_1); one step of `layer`."""
    if input.dim() not in (1, 2):
        raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
    if hx is not None:
        for index, state in enumerate(hx):
            if state.dim() not in (1, 2):
                raise ValueError(f"LSTMCell: Expected hx[{index}] to be 1D or 2D, got {state.dim()}D instead")
    is_batched = input.dim() == 2
    if not is_batched:
        input = input.unsqueeze(0)
    if input.size(1) != module.input_size:
        raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected {module.input_size}")
    dtype = _compute_dtype(module, input)
    batch = input.size(0)
    if hx is None:
        h0 = torch.zeros(batch, module.hidden_size, dtype=dtype, device=input.device)
        c0 = torch.zeros(batch, module.hidden_size, dtype=dtype, device=input.device)
    else:
        h0, c0 = (hx[0].unsqueeze(0), hx[1].unsqueeze(0)) if not is_batched else hx
        for index, state in enumerate((h0, c0)):
            if state.size(0) != batch:
                raise RuntimeError(f"Input batch size {batch} doesn't match hidden{index} batch size "
                                   f"{state.size(0)}")
            if state.size(1) != module.hidden_size:
                raise RuntimeError(f"hidden{index} has inconsistent hidden_size: got {state.size(1)}, expected "
                                   f"{module.hidden_size}")
        if not torch.is_autocast_enabled("cuda"):
            _check_state(h0, input, "hidden")
            _check_state(c0, input, "cell")
    bias = (module.bias_ih + module.bias_hh).to(dtype) if module.bias else None
    batch_sizes = torch.full((1,), batch, dtype=torch.int64)
    _, h_1, c_1 = layer(input.to(dtype), batch_sizes, h0.to(dtype), c0.to(dtype), module.weight_ih.to(dtype),
                        module.weight_hh.to(dtype), bias, None, False)
    if not is_batched:
        h_1, c_1 = h_1.squeeze(0), c_1.squeeze(0)
    return h_1, c_1
