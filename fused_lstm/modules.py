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

from . import onnx_export, ops


def _check_constructor_arguments(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size):
    """The constructor checks of nn.RNNBase, with its exception types and messages."""
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


def _reset_uniform(module):
    """PyTorch's RNN initialisation: every parameter uniform in ±1/sqrt(hidden_size)."""
    stdv = 1.0 / math.sqrt(module.hidden_size) if module.hidden_size > 0 else 0
    for weight in module.parameters():
        nn.init.uniform_(weight, -stdv, stdv)


def _layer_functions(module, input):
    """Where a module's recurrences run: the fused ops, or, while torch.onnx.export captures the model,
    onnx_export's layers, which become ONNX LSTM/GRU nodes (once it is checked that ONNX can express them)."""
    if torch.onnx.is_in_onnx_export():
        onnx_export.check_exportable(module, input)
        return onnx_export
    return ops


class _RecurrentBase(nn.Module):
    """Constructor, parameters and helpers shared by LSTM and GRU: nn.RNNBase's parameter layout
    (names, shapes, order, initialisation) without deriving from it."""

    def __init__(self, mode, gate_count, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                 bidirectional, proj_size, device, dtype):
        super().__init__()
        _check_constructor_arguments(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size)
        self.mode = mode
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
                shapes = [("weight_ih", (gate_count * hidden_size, layer_input_size)),
                          ("weight_hh", (gate_count * hidden_size, real_hidden_size))]
                if bias:
                    shapes += [("bias_ih", (gate_count * hidden_size,)), ("bias_hh", (gate_count * hidden_size,))]
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
        _reset_uniform(self)

    def flatten_parameters(self):
        """Kept for code written for nn.LSTM/nn.GRU; the fused kernels need no flat weight buffer."""

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


class LSTM(_RecurrentBase):
    """Multi-layer LSTM on fused kernels; a drop-in replacement for ``torch.nn.LSTM`` (same arguments,
    parameters and results; see its documentation)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("LSTM", 4, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype)

    def forward(self, input, hx=None):
        return lstm_stack_forward(self, input, hx, _layer_functions(self, input).lstm_layer)


class GRU(_RecurrentBase):
    """Multi-layer GRU on fused kernels; a drop-in replacement for ``torch.nn.GRU``."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None):
        super().__init__("GRU", 3, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0,
                         device, dtype)

    def forward(self, input, hx=None):
        return gru_stack_forward(self, input, hx, _layer_functions(self, input).gru_layer)


class _CellBase(nn.Module):
    def __init__(self, gate_count, input_size, hidden_size, bias, device, dtype):
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_ih = nn.Parameter(torch.empty((gate_count * hidden_size, input_size), **factory_kwargs))
        self.weight_hh = nn.Parameter(torch.empty((gate_count * hidden_size, hidden_size), **factory_kwargs))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(gate_count * hidden_size, **factory_kwargs))
            self.bias_hh = nn.Parameter(torch.empty(gate_count * hidden_size, **factory_kwargs))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_uniform(self)

    def extra_repr(self):
        text = "{input_size}, {hidden_size}"
        if self.bias is not True:
            text += ", bias={bias}"
        return text.format(**self.__dict__)


class LSTMCell(_CellBase):
    """One LSTM step on the fused kernels; a drop-in replacement for ``torch.nn.LSTMCell``."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(4, input_size, hidden_size, bias, device, dtype)

    def forward(self, input, hx=None):
        return lstm_cell_forward(self, input, hx, _layer_functions(self, input).lstm_layer)


class GRUCell(_CellBase):
    """One GRU step on the fused kernels; a drop-in replacement for ``torch.nn.GRUCell``."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(3, input_size, hidden_size, bias, device, dtype)

    def forward(self, input, hx=None):
        return gru_cell_forward(self, input, hx, _layer_functions(self, input).gru_layer)


# ---------------------------------------------------------------------------------------------------
# The sequence handling shared by LSTM and GRU, fused and reference alike: argument checks, packing,
# layers, directions, dropout. `module` is anything with nn.LSTM's / nn.GRU's attributes and parameter
# names; `layer` runs one layer in one direction (ops.lstm_layer / reference.lstm_layer for the LSTM,
# ops.gru_layer / reference.gru_layer for the GRU).


def _compute_dtype(module, input):
    """The dtype the layers run in: the autocast dtype under CUDA autocast (as nn.LSTM does), else the
    weights' dtype, which the input must match."""
    weight = module.weight_ih_l0 if hasattr(module, "weight_ih_l0") else module.weight_ih
    for parameter in module.parameters():
        if parameter.device != input.device:
            raise RuntimeError("Input and parameter tensors are not at the same device, found input tensor at "
                               f"{input.device} and parameter tensor at {parameter.device}")
    if input.device.type == "cuda" and torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    if input.dtype != weight.dtype and not torch._C._is_any_autocast_enabled():
        raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype ({weight.dtype}). "
                         f"Convert input: input.to({weight.dtype}), or convert model: model.to({input.dtype})")
    return weight.dtype


def _check_state(state, input, which):
    # PyTorch's RNN kernels raise these for states on another device or of another dtype.
    if torch.is_autocast_enabled("cuda"):
        return
    if state.device != input.device:
        raise RuntimeError(f"Input and {which} tensors are not at the same device, found input tensor at "
                           f"{input.device} and {which} tensor at {state.device}")
    if state.dtype != input.dtype:
        raise RuntimeError(f"Expected {which} and input to have the same dtype, got {which} {state.dtype} and "
                           f"input {input.dtype}")


def _layer_weights(module, layer_index, direction, dtype):
    suffix = "_reverse" if direction == 1 else ""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
    return {name: getattr(module, f"{name}_l{layer_index}{suffix}").to(dtype)
            for name in names if hasattr(module, f"{name}_l{layer_index}{suffix}")}


def _stack_forward(module, input, states, state_sizes, check_hx_dims, run_layer):
    """nn.RNNBase.forward's contract for a stack of layers.

    states: None, or the per-kind initial states ((h0, c0) for the LSTM, (h0,) for the GRU), each
    [layers·directions, B, size] ([layers·directions, size] for unbatched input); state_sizes: their last
    dimension; check_hx_dims(states, is_batched) raises nn's errors for states of the wrong rank;
    run_layer(input, batch_sizes, layer_states, weights, reverse) -> (output, final_states).
    Returns (output, final states as a tuple), output a PackedSequence if input is one.
    """
    num_directions = 2 if module.bidirectional else 1
    state_rows = module.num_layers * num_directions
    packed = isinstance(input, PackedSequence)
    if packed:
        data, batch_sizes, sorted_indices, unsorted_indices = input
        is_batched = True
        if data.dim() != 2:
            raise RuntimeError(f"input must have 2 dimensions, got {data.dim()}")
        batch, steps = int(batch_sizes[0]), batch_sizes.numel()
    else:
        if input.dim() not in (2, 3):
            raise ValueError(f"{module.mode}: Expected input to be 2D or 3D, got {input.dim()}D instead")
        is_batched = input.dim() == 3
        batch_dim = 0 if module.batch_first else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
        sorted_indices = unsorted_indices = None
        data = input.transpose(0, 1) if module.batch_first else input
        steps, batch = data.shape[0], data.shape[1]
    if data.size(-1) != module.input_size:
        raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {module.input_size}, "
                           f"got {data.size(-1)}")
    dtype = _compute_dtype(module, data)

    if states is None:
        states = tuple(torch.zeros(state_rows, batch, size, dtype=dtype, device=data.device) for size in state_sizes)
    else:
        if not packed:
            check_hx_dims(states, is_batched)
            if not is_batched:
                states = tuple(state.unsqueeze(1) for state in states)
        for index, (state, size) in enumerate(zip(states, state_sizes)):
            expected = (state_rows, batch, size)
            if state.size() != expected:
                which = "hidden" if len(states) == 1 else f"hidden[{index}]"
                raise RuntimeError(f"Expected {which} size {expected}, got {list(state.size())}")
        if sorted_indices is not None:
            states = tuple(state.index_select(1, sorted_indices) for state in states)
        for state, which in zip(states, ("hidden", "cell")):
            _check_state(state, data, which)
    if steps == 0:
        raise RuntimeError(f"fused_lstm: the input sequence is empty (length 0); an {module.mode} needs at least "
                           "one step")

    data = data.to(dtype)
    states = tuple(state.to(dtype) for state in states)
    if not packed:
        batch_sizes = torch.full((steps,), batch, dtype=torch.int64)
        data = data.reshape(steps * batch, module.input_size)

    final_states = [[] for _ in states]
    layer_input = data
    for layer_index in range(module.num_layers):
        direction_outputs = []
        for direction in range(num_directions):
            index = layer_index * num_directions + direction
            output, layer_final = run_layer(layer_input, batch_sizes, tuple(state[index] for state in states),
                                            _layer_weights(module, layer_index, direction, dtype), direction == 1)
            direction_outputs.append(output)
            for collected, state in zip(final_states, layer_final):
                collected.append(state)
        layer_input = direction_outputs[0] if num_directions == 1 else torch.cat(direction_outputs, dim=1)
        if module.dropout > 0 and module.training and layer_index < module.num_layers - 1:
            layer_input = nn.functional.dropout(layer_input, p=module.dropout, training=True)

    final_states = tuple(torch.stack(collected) for collected in final_states)
    if packed:
        if unsorted_indices is not None:
            final_states = tuple(state.index_select(1, unsorted_indices) for state in final_states)
        return PackedSequence(layer_input, batch_sizes, sorted_indices, unsorted_indices), final_states
    output = layer_input.reshape(steps, batch, layer_input.size(-1))
    if module.batch_first:
        output = output.transpose(0, 1)
    if not is_batched:
        output = output.squeeze(batch_dim)
        final_states = tuple(state.squeeze(1) for state in final_states)
    return output, final_states


def _lstm_biases(layer, bias_ih, bias_hh):
    """The bias arguments of an LSTM layer function: onnx_export.lstm_layer takes bias_ih and bias_hh
    apart (ONNX's B is [W_b; R_b]); ops' and reference's take their sum, or None."""
    if layer is onnx_export.lstm_layer:
        return bias_ih, bias_hh
    return (None if bias_ih is None else bias_ih + bias_hh,)


def lstm_stack_forward(module, input, hx, layer):
    """nn.LSTM.forward's contract: returns (output, (h_n, c_n))."""
    def check_hx_dims(states, is_batched):
        h0, c0 = states
        expected_dim = 3 if is_batched else 2
        if h0.dim() != expected_dim or c0.dim() != expected_dim:
            kind = "batched 3-D" if is_batched else "unbatched 2-D"
            raise RuntimeError(f"For {kind} input, hx and cx should also be {expected_dim}-D but got "
                               f"({h0.dim()}-D, {c0.dim()}-D) tensors")

    def run_layer(layer_input, batch_sizes, layer_states, weights, reverse):
        biases = _lstm_biases(layer, weights.get("bias_ih"), weights.get("bias_hh"))
        output, h_n, c_n = layer(layer_input, batch_sizes, *layer_states, weights["weight_ih"],
                                 weights["weight_hh"], *biases, weights.get("weight_hr"), reverse)
        return output, (h_n, c_n)

    state_sizes = (module.proj_size or module.hidden_size, module.hidden_size)
    output, states = _stack_forward(module, input, None if hx is None else tuple(hx), state_sizes, check_hx_dims,
                                    run_layer)
    return output, states


def gru_stack_forward(module, input, hx, layer):
    """nn.GRU.forward's contract: returns (output, h_n)."""
    def check_hx_dims(states, is_batched):
        (h0,) = states
        expected_dim = 3 if is_batched else 2
        if h0.dim() != expected_dim:
            kind = "batched 3-D" if is_batched else "unbatched 2-D"
            raise RuntimeError(f"For {kind} input, hx should also be {expected_dim}-D but got {h0.dim()}-D tensor")

    def run_layer(layer_input, batch_sizes, layer_states, weights, reverse):
        output, h_n = layer(layer_input, batch_sizes, *layer_states, weights["weight_ih"], weights["weight_hh"],
                            weights.get("bias_ih"), weights.get("bias_hh"), reverse)
        return output, (h_n,)

    output, (h_n,) = _stack_forward(module, input, None if hx is None else (hx,), (module.hidden_size,),
                                    check_hx_dims, run_layer)
    return output, h_n


def _cell_states(module, name, input, hx, state_count):
    """nn.*Cell's argument checks; returns (batched input, states as [B, H] tensors, is_batched, dtype)."""
    if input.dim() not in (1, 2):
        raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
    if hx is not None:
        for index, state in enumerate(hx):
            if state.dim() not in (1, 2):
                which = f"hx[{index}]" if state_count > 1 else "hidden"
                raise ValueError(f"{name}: Expected {which} to be 1D or 2D, got {state.dim()}D instead")
    is_batched = input.dim() == 2
    if not is_batched:
        input = input.unsqueeze(0)
    if input.size(1) != module.input_size:
        raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected {module.input_size}")
    dtype = _compute_dtype(module, input)
    batch = input.size(0)
    if hx is None:
        states = tuple(torch.zeros(batch, module.hidden_size, dtype=dtype, device=input.device)
                       for _ in range(state_count))
    else:
        states = tuple(state if is_batched else state.unsqueeze(0) for state in hx)
        for index, state in enumerate(states):
            if state.size(0) != batch:
                raise RuntimeError(f"Input batch size {batch} doesn't match hidden{index} batch size {state.size(0)}")
            if state.size(1) != module.hidden_size:
                raise RuntimeError(f"hidden{index} has inconsistent hidden_size: got {state.size(1)}, expected "
                                   f"{module.hidden_size}")
        for state, which in zip(states, ("hidden", "cell")):
            _check_state(state, input, which)
    states = tuple(state.to(dtype) for state in states)
    return input.to(dtype), states, is_batched, dtype


def lstm_cell_forward(module, input, hx, layer):
    """nn.LSTMCell.forward's contract: returns (h_1, c_1); one step of `layer`."""
    input, (h0, c0), is_batched, dtype = _cell_states(module, "LSTMCell", input, hx, 2)
    biases = tuple(None if bias is None else bias.to(dtype)
                   for bias in _lstm_biases(layer, module.bias_ih, module.bias_hh))
    batch_sizes = torch.full((1,), input.size(0), dtype=torch.int64)
    _, h_1, c_1 = layer(input, batch_sizes, h0, c0, module.weight_ih.to(dtype), module.weight_hh.to(dtype), *biases,
                        None, False)
    return (h_1, c_1) if is_batched else (h_1.squeeze(0), c_1.squeeze(0))


def gru_cell_forward(module, input, hx, layer):
    """nn.GRUCell.forward's contract: returns h_1; one step of `layer`."""
    input, (h0,), is_batched, dtype = _cell_states(module, "GRUCell", input, None if hx is None else (hx,), 1)
    biases = (module.bias_ih.to(dtype), module.bias_hh.to(dtype)) if module.bias else (None, None)
    batch_sizes = torch.full((1,), input.size(0), dtype=torch.int64)
    _, h_1 = layer(input, batch_sizes, h0, module.weight_ih.to(dtype), module.weight_hh.to(dtype), *biases, False)
    return h_1 if is_batched else h_1.squeeze(0)
