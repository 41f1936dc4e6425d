"""Drop-in replacements for torch.nn.LSTM, GRU, LSTMCell and GRUCell on the fused ops.

Same constructors, parameter names, shapes, order and initialisation as PyTorch's, so state dicts load
both ways; same forward contracts, same exceptions for the same mistakes. They derive from nn.Module,
not nn.RNNBase, because dynamo refuses to trace RNNBase subclasses: ``torch.compile(fullgraph=True)``
works on these modules. Their forward is written so that TorchScript compiles it (``torch.jit.script`` of
a model that holds them runs the fused ops through ``torch.ops``).

``run(module, input, hx, impl)`` runs any module with torch.nn's parameters (a fused_lstm module or torch's
own) through the same argument handling with another implementation of the layers (``stack``): the tests
and benchmarks run the readable reference so.
"""

import math
from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import call_rules, nn_checks, stack


def _reset_uniform(module):
    """PyTorch's RNN initialisation: every parameter uniform in ±1/sqrt(hidden_size)."""
    stdv = 1.0 / math.sqrt(module.hidden_size) if module.hidden_size > 0 else 0
    for weight in module.parameters():
        nn.init.uniform_(weight, -stdv, stdv)


class _RecurrentBase(nn.Module):
    """Constructor, parameters and helpers shared by LSTM and GRU: nn.RNNBase's parameter layout (names,
    shapes, order, initialisation) and its _flat_weights list, without deriving from it."""

    __jit_unused_properties__ = ["all_weights"]

    def __init__(self, mode, gate_count, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                 bidirectional, proj_size, device, dtype):
        super().__init__()
        nn_checks.check_constructor_arguments(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size)
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
        self._init_flat_weights()
        self.reset_parameters()

    # _flat_weights: the parameters in nn.RNNBase's order, kept current as nn.RNNBase keeps it (a replaced
    # parameter, .to()/.cuda()), for TorchScript, which cannot look parameters up by computed names. Eager
    # calls read the parameters by name every time (parametrizations compute them anew).
    def _init_flat_weights(self):
        self._flat_weights = [getattr(self, name) for name in self._flat_weights_names]

    def __setattr__(self, attr, value):
        if attr in self.__dict__.get("_flat_weights_names", ()) and "_flat_weights" in self.__dict__:
            self._flat_weights[self._flat_weights_names.index(attr)] = value
        super().__setattr__(attr, value)

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        self._init_flat_weights()
        return result

    @torch.jit.unused
    def _current_weights(self) -> List[Tensor]:
        return [getattr(self, name) for name in self._flat_weights_names]

    def _weights(self) -> List[Tensor]:
        if torch.jit.is_scripting():
            return self._flat_weights
        return self._current_weights()

    def reset_parameters(self):
        _reset_uniform(self)

    def flatten_parameters(self):
        """Kept for code written for nn.LSTM/nn.GRU; the fused kernels need no flat weight buffer."""

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


def _sequence_rows(input: Tensor, batch_first: bool, input_size: int, mode: str) -> Tuple[Tensor, Tensor, int, int]:
    """Padded input [T, B, C] ([B, T, C] batch-first) as (time-major rows [T·B, C], batch_sizes [T], T, B).
    T and B come from the shape, never from batch_sizes' values (torch.export traces them symbolically)."""
    data = input.transpose(0, 1) if batch_first else input
    if data.size(-1) != input_size:
        raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {input_size}, got {data.size(-1)}")
    steps, batch = data.size(0), data.size(1)
    if steps == 0:
        raise RuntimeError(f"fused_lstm: the input sequence is empty (length 0); an {mode} needs at least one step")
    return data.reshape(steps * batch, input_size), torch.full([steps], batch, dtype=torch.int64), steps, batch


def _sequence_output(rows: Tensor, steps: int, batch: int, batch_first: bool) -> Tensor:
    output = rows.reshape(steps, batch, rows.size(-1))
    return output.transpose(0, 1) if batch_first else output


def _permute(state: Tensor, indices: Optional[Tensor]) -> Tensor:
    return state if indices is None else state.index_select(1, indices)


class _LayerShape(NamedTuple):
    """What the layers' forward reads of a module (fused_lstm's or torch.nn's)."""
    mode: str  # "LSTM" or "GRU"
    input_size: int
    hidden_size: int
    proj_size: int
    num_layers: int
    bidirectional: bool
    batch_first: bool
    bias: bool
    dropout: float
    training: bool


def _layers_forward(shape: _LayerShape, input: Tensor, batch_sizes: Optional[Tensor], sorted_indices: Optional[Tensor],
                    unsorted_indices: Optional[Tensor], hx: Optional[List[Tensor]], weights: List[Tensor],
                    impl: str) -> Tuple[Tensor, List[Tensor]]:
    """The forward of LSTM and GRU, with nn's checks and messages: `input` packed rows with their batch_sizes
    (and PackedSequence's indices), or padded ([T, B, C], batch-first [B, T, C], or unbatched) with batch_sizes
    None; hx the initial states ([h0, c0] or [h0]) or None. Returns (output rows or padded output, the final
    states as a list like hx)."""
    lstm = shape.mode == "LSTM"
    packed = batch_sizes is not None
    state_rows = shape.num_layers * (2 if shape.bidirectional else 1)
    state_sizes = [shape.proj_size if shape.proj_size > 0 else shape.hidden_size]
    if lstm:
        state_sizes.append(shape.hidden_size)
    is_batched = True
    if batch_sizes is not None:
        rows = input
        if rows.dim() != 2:
            raise RuntimeError(f"input must have 2 dimensions, got {rows.dim()}")
        if rows.size(-1) != shape.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {shape.input_size}, "
                               f"got {rows.size(-1)}")
        batch, steps = int(batch_sizes[0]), batch_sizes.numel()
    else:
        if input.dim() not in (2, 3):
            raise ValueError(f"{shape.mode}: Expected input to be 2D or 3D, got {input.dim()}D instead")
        is_batched = input.dim() == 3
        padded = input if is_batched else input.unsqueeze(0 if shape.batch_first else 1)
        rows, batch_sizes, steps, batch = _sequence_rows(padded, shape.batch_first, shape.input_size, shape.mode)
    dtype = rows.dtype if torch.jit.is_scripting() else call_rules.compute_dtype(shape.mode, rows, weights)

    states: List[Tensor] = []
    if hx is None:
        for size in state_sizes:
            states.append(torch.zeros(state_rows, batch, size, dtype=dtype, device=rows.device))
    else:
        states = hx
        if not packed:
            expected_dim = 3 if is_batched else 2
            if any([state.dim() != expected_dim for state in states]):
                kind = "batched 3-D" if is_batched else "unbatched 2-D"
                if lstm:
                    raise RuntimeError(f"For {kind} input, hx and cx should also be {expected_dim}-D but got "
                                       f"({states[0].dim()}-D, {states[1].dim()}-D) tensors")
                raise RuntimeError(f"For {kind} input, hx should also be {expected_dim}-D but got "
                                   f"{states[0].dim()}-D tensor")
            if not is_batched:
                states = [state.unsqueeze(1) for state in states]
        names = ["hidden[0]", "hidden[1]"] if lstm else ["hidden"]
        for state, size, name in zip(states, state_sizes, names):
            nn_checks.check_state_size(state, [state_rows, batch, size], name)
        states = [_permute(state, sorted_indices) for state in states]
        if torch.jit.is_scripting() or call_rules.states_must_match_input(rows):
            for state, which in zip(states, ["hidden", "cell"]):
                nn_checks.check_state(state, rows, which)
    if not torch.jit.is_scripting():
        kernel_dtype = call_rules.kernels_dtype(dtype, rows.device, impl)
        rows = call_rules.in_dtype(kernel_dtype, [rows])[0]
        states = call_rules.in_dtype(kernel_dtype, states)
        weights = call_rules.in_dtype(kernel_dtype, weights)

    if lstm:
        output, h_n, c_n = stack.lstm_layers(impl, rows, batch_sizes, states[0], states[1], weights, shape.num_layers,
                                             shape.bidirectional, shape.bias, shape.proj_size > 0, shape.dropout,
                                             shape.training)
        states_n = [h_n, c_n]
    else:
        output, h_n = stack.gru_layers(impl, rows, batch_sizes, states[0], weights, shape.num_layers,
                                       shape.bidirectional, shape.bias, shape.dropout, shape.training)
        states_n = [h_n]
    if not torch.jit.is_scripting():
        output = call_rules.in_dtype(dtype, [output])[0]
        states_n = call_rules.in_dtype(dtype, states_n)
    states_n = [_permute(state, unsorted_indices) for state in states_n]
    if packed:
        return output, states_n
    padded_output = _sequence_output(output, steps, batch, shape.batch_first)
    if not is_batched:
        return padded_output.squeeze(0 if shape.batch_first else 1), [state.squeeze(1) for state in states_n]
    return padded_output, states_n


class LSTM(_RecurrentBase):
    """Multi-layer LSTM on fused kernels; a drop-in replacement for ``torch.nn.LSTM`` (same arguments,
    parameters and results; see its documentation)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("LSTM", 4, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype)

    @torch._jit_internal._overload_method  # noqa: F811
    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        pass

    @torch._jit_internal._overload_method  # noqa: F811
    def forward(self, input: PackedSequence,  # noqa: F811
                hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[PackedSequence, Tuple[Tensor, Tensor]]:
        pass

    def forward(self, input, hx=None):  # noqa: F811
        impl = "fused" if torch.jit.is_scripting() else call_rules.layer_impl(self, input)
        return self.forward_with(input, hx, impl)

    @torch._jit_internal._overload_method  # noqa: F811
    def forward_with(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]],
                     impl: str) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        pass

    @torch._jit_internal._overload_method  # noqa: F811
    def forward_with(self, input: PackedSequence, hx: Optional[Tuple[Tensor, Tensor]],  # noqa: F811
                     impl: str) -> Tuple[PackedSequence, Tuple[Tensor, Tensor]]:
        pass

    def forward_with(self, input, hx, impl: str):  # noqa: F811
        """forward with the layers of `impl` (stack.py); `self` may be a torch.nn.LSTM."""
        states: Optional[List[Tensor]] = None
        if hx is not None:
            states = [hx[0], hx[1]]
        weights = self._weights() if torch.jit.is_scripting() else _module_weights(self)
        shape = _LayerShape("LSTM", self.input_size, self.hidden_size, self.proj_size, self.num_layers,
                            self.bidirectional, self.batch_first, self.bias, self.dropout, self.training)
        # The isinstance checks stay in conditionals for TorchScript, which compiles one body per overload.
        if isinstance(input, PackedSequence):
            rows, batch_sizes, sorted_indices, unsorted_indices = input
            output, states_n = _layers_forward(shape, rows, batch_sizes, sorted_indices, unsorted_indices, states,
                                               weights, impl)
            return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), (states_n[0], states_n[1])
        output, states_n = _layers_forward(shape, input, None, None, None, states, weights, impl)
        return output, (states_n[0], states_n[1])


class GRU(_RecurrentBase):
    """Multi-layer GRU on fused kernels; a drop-in replacement for ``torch.nn.GRU``."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None):
        super().__init__("GRU", 3, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0,
                         device, dtype)

    @torch._jit_internal._overload_method  # noqa: F811
    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        pass

    @torch._jit_internal._overload_method  # noqa: F811
    def forward(self, input: PackedSequence, hx: Optional[Tensor] = None) -> Tuple[PackedSequence, Tensor]:  # noqa: F811
        pass

    def forward(self, input, hx=None):  # noqa: F811
        impl = "fused" if torch.jit.is_scripting() else call_rules.layer_impl(self, input)
        return self.forward_with(input, hx, impl)

    @torch._jit_internal._overload_method  # noqa: F811
    def forward_with(self, input: Tensor, hx: Optional[Tensor], impl: str) -> Tuple[Tensor, Tensor]:
        pass

    @torch._jit_internal._overload_method  # noqa: F811
    def forward_with(self, input: PackedSequence, hx: Optional[Tensor],  # noqa: F811
                     impl: str) -> Tuple[PackedSequence, Tensor]:
        pass

    def forward_with(self, input, hx, impl: str):  # noqa: F811
        """forward with the layers of `impl` (stack.py); `self` may be a torch.nn.GRU."""
        states: Optional[List[Tensor]] = None
        if hx is not None:
            states = [hx]
        weights = self._weights() if torch.jit.is_scripting() else _module_weights(self)
        shape = _LayerShape("GRU", self.input_size, self.hidden_size, 0, self.num_layers, self.bidirectional,
                            self.batch_first, self.bias, self.dropout, self.training)
        if isinstance(input, PackedSequence):
            rows, batch_sizes, sorted_indices, unsorted_indices = input
            output, states_n = _layers_forward(shape, rows, batch_sizes, sorted_indices, unsorted_indices, states,
                                               weights, impl)
            return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), states_n[0]
        output, states_n = _layers_forward(shape, input, None, None, None, states, weights, impl)
        return output, states_n[0]


@torch.jit.unused
def _module_weights(module: nn.Module) -> List[Tensor]:
    """A module's weights in nn.RNNBase's order, read now (fused_lstm's modules or torch.nn's)."""
    return [getattr(module, name) for name in module._flat_weights_names]


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

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        impl = "fused" if torch.jit.is_scripting() else call_rules.layer_impl(self, input)
        return self.forward_with(input, hx, impl)

    def forward_with(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]], impl: str) -> Tuple[Tensor, Tensor]:
        """forward with the cell of `impl` (stack.py); `self` may be a torch.nn.LSTMCell."""
        x, is_batched = nn_checks.cell_input("LSTMCell", input, self.input_size)
        if hx is None:
            h0 = torch.zeros(x.size(0), self.hidden_size, dtype=x.dtype, device=x.device)
            c0 = h0
        else:
            h0 = nn_checks.cell_state(hx[0], 0, 2, "LSTMCell", x, is_batched, self.hidden_size)
            c0 = nn_checks.cell_state(hx[1], 1, 2, "LSTMCell", x, is_batched, self.hidden_size)
        if torch.jit.is_scripting():
            h1, c1 = stack.lstm_cell(impl, x, h0, c0, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        else:
            tensors, dtype = call_rules.cell_tensors_for_kernels("LSTMCell", dict(
                input=x, h0=h0, c0=c0, weight_ih=self.weight_ih, weight_hh=self.weight_hh, bias_ih=self.bias_ih,
                bias_hh=self.bias_hh), impl)
            h1, c1 = stack.lstm_cell(impl, tensors["input"], tensors["h0"], tensors["c0"], tensors["weight_ih"],
                                     tensors["weight_hh"], tensors["bias_ih"], tensors["bias_hh"])
            h1, c1 = h1.to(dtype), c1.to(dtype)
        if not is_batched:
            return h1.squeeze(0), c1.squeeze(0)
        return h1, c1


class GRUCell(_CellBase):
    """One GRU step on the fused kernels; a drop-in replacement for ``torch.nn.GRUCell``."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(3, input_size, hidden_size, bias, device, dtype)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        impl = "fused" if torch.jit.is_scripting() else call_rules.layer_impl(self, input)
        return self.forward_with(input, hx, impl)

    def forward_with(self, input: Tensor, hx: Optional[Tensor], impl: str) -> Tensor:
        """forward with the cell of `impl` (stack.py); `self` may be a torch.nn.GRUCell."""
        x, is_batched = nn_checks.cell_input("GRUCell", input, self.input_size)
        if hx is None:
            h0 = torch.zeros(x.size(0), self.hidden_size, dtype=x.dtype, device=x.device)
        else:
            h0 = nn_checks.cell_state(hx, 0, 1, "GRUCell", x, is_batched, self.hidden_size)
        if torch.jit.is_scripting():
            h1 = stack.gru_cell(impl, x, h0, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        else:
            tensors, dtype = call_rules.cell_tensors_for_kernels("GRUCell", dict(
                input=x, h0=h0, weight_ih=self.weight_ih, weight_hh=self.weight_hh, bias_ih=self.bias_ih,
                bias_hh=self.bias_hh), impl)
            h1 = stack.gru_cell(impl, tensors["input"], tensors["h0"], tensors["weight_ih"], tensors["weight_hh"],
                                tensors["bias_ih"], tensors["bias_hh"]).to(dtype)
        return h1 if is_batched else h1.squeeze(0)


def run(module, input, hx=None, impl="reference"):
    """Runs `module` (an LSTM, GRU, LSTMCell or GRUCell of fused_lstm or of torch.nn: the same parameters)
    with the layers of `impl` ("reference", "fused") through fused_lstm's argument handling: the same
    results and errors as the module."""
    for fused_class in (LSTM, GRU, LSTMCell, GRUCell):
        if type(module).__name__ == fused_class.__name__:
            return fused_class.forward_with(module, input, hx, impl)
    raise TypeError(f"run takes an LSTM, GRU, LSTMCell or GRUCell, got {type(module).__name__}")
