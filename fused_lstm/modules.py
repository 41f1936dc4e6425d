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
import numbers
import warnings
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import onnx_export, ops, settings, stack


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


# ---------------------------------------------------------------------------------------------------
# Eager-only decisions (TorchScript runs the fused ops in the weights' dtype; see stack.py).


@torch.jit.unused
def _layer_impl(module: nn.Module, input: object) -> str:
    """The layers of a module's call: the fused ops, or ONNX's nodes while torch.onnx.export captures the model
    (once it is checked that ONNX can express them)."""
    # Both exporters capture the model by tracing (TorchScript's or torch.export's): outside a trace the
    # (slower) export question need not be asked.
    if (torch.jit.is_tracing() or torch.compiler.is_compiling()) and torch.onnx.is_in_onnx_export():
        onnx_export.check_exportable(module, input)
        return "onnx"
    return "fused"


# What torch's own modules do under CPU autocast (measured: torch 2.11-2.14): nn.LSTM runs in the autocast
# dtype (oneDNN's RNN), nn.GRU and the cells stay in float32. Under CUDA autocast all run in its dtype.
_FOLLOWS_CPU_AUTOCAST = {"LSTM": True, "GRU": False, "LSTMCell": False, "GRUCell": False}


@torch.jit.unused
def _compute_dtype(mode: str, input: Tensor, weights: List[Tensor]) -> torch.dtype:
    """The dtype the layers run in: the autocast dtype where torch's module runs in it, else the weights'
    dtype, which the input must match."""
    for weight in weights:
        if weight.device != input.device:
            raise RuntimeError("Input and parameter tensors are not at the same device, found input tensor at "
                               f"{input.device} and parameter tensor at {weight.device}")
    device_type = input.device.type
    if device_type in ("cuda", "cpu") and torch.is_autocast_enabled(device_type):
        if device_type == "cuda" or _FOLLOWS_CPU_AUTOCAST[mode]:
            return torch.get_autocast_dtype(device_type)
        if input.dtype in (torch.float16, torch.bfloat16):
            return input.dtype
    if input.dtype != weights[0].dtype and not torch._C._is_any_autocast_enabled():
        raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype ({weights[0].dtype}). "
                         f"Convert input: input.to({weights[0].dtype}), or convert model: model.to({input.dtype})")
    return weights[0].dtype


@torch.jit.unused
def _kernel_dtype(dtype: torch.dtype, device: torch.device, impl: str) -> torch.dtype:
    """The dtype the fused kernels run a call of `dtype` in: float32 for bfloat16 and float16 on a CPU without
    kernels for them (settings.cpu_computes_half_in_float32), else `dtype`."""
    if impl == "fused" and device.type == "cpu" and dtype in (torch.bfloat16, torch.float16):
        if settings.cpu_computes_half_in_float32(str(dtype).split(".")[-1]):
            return torch.float32
    return dtype


@torch.jit.unused
def _in_dtype(dtype: torch.dtype, tensors: List[Tensor]) -> List[Tensor]:
    return [tensor if tensor.dtype == dtype else tensor.to(dtype) for tensor in tensors]


@torch.jit.unused
def _cell_tensors_for_kernels(mode: str, tensors: List[Optional[Tensor]], impl: str):
    """A cell's input, states and parameters (tensors[0] is the input, tensors[-2] weight_ih) in the dtype the
    kernels run the call in, converted once, and the dtype its results are returned in: the autocast dtype where
    torch's cell runs in it (_compute_dtype), else the input's; the kernels run it in float32 on a CPU without
    kernels for that dtype (_kernel_dtype). Outside autocast, tensors of another dtype than the input's are left
    as they are, for the op to reject as torch's cell does."""
    autocast = torch._C._is_any_autocast_enabled()
    dtype = _compute_dtype(mode, tensors[0], [tensors[-2]]) if autocast else tensors[0].dtype
    kernel_dtype = _kernel_dtype(dtype, tensors[0].device, impl)
    if not autocast and (kernel_dtype == dtype or any(t is not None and t.dtype != dtype for t in tensors)):
        return tensors, dtype
    return [None if tensor is None else tensor.to(kernel_dtype) for tensor in tensors], dtype


@torch.jit.unused
def _states_must_match_input(input: Tensor) -> bool:
    """Under autocast the states may come in another dtype: they are converted like the input."""
    return not torch.is_autocast_enabled(input.device.type)


def _check_state(state: Tensor, input: Tensor, which: str):
    # PyTorch's RNN kernels raise these for states on another device or of another dtype.
    if state.device != input.device:
        raise RuntimeError(f"Input and {which} tensors are not at the same device, found input tensor at "
                           f"{input.device} and {which} tensor at {state.device}")
    if state.dtype != input.dtype:
        raise RuntimeError(f"Expected {which} and input to have the same dtype, got {which} {state.dtype} and "
                           f"input {input.dtype}")


def _check_state_size(state: Tensor, expected: List[int], which: str):
    if list(state.size()) != expected:
        expected_text = "(" + ", ".join([str(size) for size in expected]) + ")"
        raise RuntimeError(f"Expected {which} size {expected_text}, got {list(state.size())}")


class _RecurrentBase(nn.Module):
    """Constructor, parameters and helpers shared by LSTM and GRU: nn.RNNBase's parameter layout (names,
    shapes, order, initialisation) and its _flat_weights list, without deriving from it."""

    __jit_unused_properties__ = ["all_weights"]

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
        impl = "fused" if torch.jit.is_scripting() else _layer_impl(self, input)
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
        weights = self._weights() if torch.jit.is_scripting() else _module_weights(self)
        state_rows = self.num_layers * (2 if self.bidirectional else 1)
        real_hidden_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        orig_input = input
        # The isinstance checks stay in conditionals for TorchScript, which compiles one body per overload.
        if isinstance(orig_input, PackedSequence):
            rows, batch_sizes, sorted_indices, unsorted_indices = orig_input
            if rows.dim() != 2:
                raise RuntimeError(f"input must have 2 dimensions, got {rows.dim()}")
            if rows.size(-1) != self.input_size:
                raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                                   f"got {rows.size(-1)}")
            is_batched = True
            batch, steps = int(batch_sizes[0]), batch_sizes.numel()
        else:
            if orig_input.dim() not in (2, 3):
                raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {orig_input.dim()}D instead")
            is_batched = orig_input.dim() == 3
            padded = orig_input if is_batched else orig_input.unsqueeze(0 if self.batch_first else 1)
            sorted_indices = None
            unsorted_indices = None
            rows, batch_sizes, steps, batch = _sequence_rows(padded, self.batch_first, self.input_size, "LSTM")
        dtype = rows.dtype if torch.jit.is_scripting() else _compute_dtype("LSTM", rows, weights)

        if hx is None:
            h0 = torch.zeros(state_rows, batch, real_hidden_size, dtype=dtype, device=rows.device)
            c0 = torch.zeros(state_rows, batch, self.hidden_size, dtype=dtype, device=rows.device)
        else:
            h0, c0 = hx
            if not isinstance(orig_input, PackedSequence):
                expected_dim = 3 if is_batched else 2
                if h0.dim() != expected_dim or c0.dim() != expected_dim:
                    kind = "batched 3-D" if is_batched else "unbatched 2-D"
                    raise RuntimeError(f"For {kind} input, hx and cx should also be {expected_dim}-D but got "
                                       f"({h0.dim()}-D, {c0.dim()}-D) tensors")
                if not is_batched:
                    h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
            _check_state_size(h0, [state_rows, batch, real_hidden_size], "hidden[0]")
            _check_state_size(c0, [state_rows, batch, self.hidden_size], "hidden[1]")
            h0, c0 = _permute(h0, sorted_indices), _permute(c0, sorted_indices)
            if torch.jit.is_scripting() or _states_must_match_input(rows):
                _check_state(h0, rows, "hidden")
                _check_state(c0, rows, "cell")
        if not torch.jit.is_scripting():
            kernel_dtype = _kernel_dtype(dtype, rows.device, impl)
            rows, h0, c0 = _in_dtype(kernel_dtype, [rows, h0, c0])
            weights = _in_dtype(kernel_dtype, weights)

        output, h_n, c_n = stack.lstm_layers(impl, rows, batch_sizes, h0, c0, weights, self.num_layers,
                                             self.bidirectional, self.bias, self.proj_size > 0, self.dropout,
                                             self.training)
        if not torch.jit.is_scripting():
            output, h_n, c_n = _in_dtype(dtype, [output, h_n, c_n])
        if isinstance(orig_input, PackedSequence):
            packed = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            return packed, (_permute(h_n, unsorted_indices), _permute(c_n, unsorted_indices))
        padded_output = _sequence_output(output, steps, batch, self.batch_first)
        if not is_batched:
            return padded_output.squeeze(0 if self.batch_first else 1), (h_n.squeeze(1), c_n.squeeze(1))
        return padded_output, (h_n, c_n)


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
        impl = "fused" if torch.jit.is_scripting() else _layer_impl(self, input)
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
        weights = self._weights() if torch.jit.is_scripting() else _module_weights(self)
        state_rows = self.num_layers * (2 if self.bidirectional else 1)
        orig_input = input
        if isinstance(orig_input, PackedSequence):
            rows, batch_sizes, sorted_indices, unsorted_indices = orig_input
            if rows.dim() != 2:
                raise RuntimeError(f"input must have 2 dimensions, got {rows.dim()}")
            if rows.size(-1) != self.input_size:
                raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                                   f"got {rows.size(-1)}")
            is_batched = True
            batch, steps = int(batch_sizes[0]), batch_sizes.numel()
        else:
            if orig_input.dim() not in (2, 3):
                raise ValueError(f"GRU: Expected input to be 2D or 3D, got {orig_input.dim()}D instead")
            is_batched = orig_input.dim() == 3
            padded = orig_input if is_batched else orig_input.unsqueeze(0 if self.batch_first else 1)
            sorted_indices = None
            unsorted_indices = None
            rows, batch_sizes, steps, batch = _sequence_rows(padded, self.batch_first, self.input_size, "GRU")
        dtype = rows.dtype if torch.jit.is_scripting() else _compute_dtype("GRU", rows, weights)

        if hx is None:
            h0 = torch.zeros(state_rows, batch, self.hidden_size, dtype=dtype, device=rows.device)
        else:
            h0 = hx
            if not isinstance(orig_input, PackedSequence):
                expected_dim = 3 if is_batched else 2
                if h0.dim() != expected_dim:
                    kind = "batched 3-D" if is_batched else "unbatched 2-D"
                    raise RuntimeError(f"For {kind} input, hx should also be {expected_dim}-D but got {h0.dim()}-D "
                                       "tensor")
                if not is_batched:
                    h0 = h0.unsqueeze(1)
            _check_state_size(h0, [state_rows, batch, self.hidden_size], "hidden")
            h0 = _permute(h0, sorted_indices)
            if torch.jit.is_scripting() or _states_must_match_input(rows):
                _check_state(h0, rows, "hidden")
        if not torch.jit.is_scripting():
            kernel_dtype = _kernel_dtype(dtype, rows.device, impl)
            rows, h0 = _in_dtype(kernel_dtype, [rows, h0])
            weights = _in_dtype(kernel_dtype, weights)

        output, h_n = stack.gru_layers(impl, rows, batch_sizes, h0, weights, self.num_layers, self.bidirectional,
                                       self.bias, self.dropout, self.training)
        if not torch.jit.is_scripting():
            output, h_n = _in_dtype(dtype, [output, h_n])
        if isinstance(orig_input, PackedSequence):
            return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), _permute(h_n, unsorted_indices)
        padded_output = _sequence_output(output, steps, batch, self.batch_first)
        if not is_batched:
            return padded_output.squeeze(0 if self.batch_first else 1), h_n.squeeze(1)
        return padded_output, h_n


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


def _cell_input(name: str, input: Tensor, input_size: int) -> Tuple[Tensor, bool]:
    """nn.*Cell's input checks; returns (input as [B, C], whether it was batched)."""
    if input.dim() not in (1, 2):
        raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
    is_batched = input.dim() == 2
    if not is_batched:
        input = input.unsqueeze(0)
    if input.size(1) != input_size:
        raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected {input_size}")
    return input, is_batched


def _cell_state(state: Tensor, index: int, count: int, name: str, input: Tensor, is_batched: bool,
                hidden_size: int) -> Tensor:
    """nn.*Cell's checks of one state (hx[index]); returns it as [B, H]."""
    if state.dim() not in (1, 2):
        which = f"hx[{index}]" if count > 1 else "hidden"
        raise ValueError(f"{name}: Expected {which} to be 1D or 2D, got {state.dim()}D instead")
    if not is_batched:
        state = state.unsqueeze(0)
    if state.size(0) != input.size(0):
        raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden{index} batch size {state.size(0)}")
    if state.size(1) != hidden_size:
        raise RuntimeError(f"hidden{index} has inconsistent hidden_size: got {state.size(1)}, expected {hidden_size}")
    return state


class LSTMCell(_CellBase):
    """One LSTM step on the fused kernels; a drop-in replacement for ``torch.nn.LSTMCell``."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(4, input_size, hidden_size, bias, device, dtype)

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        impl = "fused" if torch.jit.is_scripting() else _layer_impl(self, input)
        return self.forward_with(input, hx, impl)

    def forward_with(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]], impl: str) -> Tuple[Tensor, Tensor]:
        """forward with the cell of `impl` (stack.py); `self` may be a torch.nn.LSTMCell."""
        x, is_batched = _cell_input("LSTMCell", input, self.input_size)
        if hx is None:
            h0 = torch.zeros(x.size(0), self.hidden_size, dtype=x.dtype, device=x.device)
            c0 = h0
        else:
            h0 = _cell_state(hx[0], 0, 2, "LSTMCell", x, is_batched, self.hidden_size)
            c0 = _cell_state(hx[1], 1, 2, "LSTMCell", x, is_batched, self.hidden_size)
        if torch.jit.is_scripting():
            h1, c1 = stack.lstm_cell(impl, x, h0, c0, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        else:
            t, dtype = _cell_tensors_for_kernels("LSTMCell", [x, h0, c0, self.bias_ih, self.bias_hh, self.weight_ih,
                                                              self.weight_hh], impl)
            h1, c1 = stack.lstm_cell(impl, t[0], t[1], t[2], t[5], t[6], t[3], t[4])
            h1, c1 = h1.to(dtype), c1.to(dtype)
        if not is_batched:
            return h1.squeeze(0), c1.squeeze(0)
        return h1, c1


class GRUCell(_CellBase):
    """One GRU step on the fused kernels; a drop-in replacement for ``torch.nn.GRUCell``."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(3, input_size, hidden_size, bias, device, dtype)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        impl = "fused" if torch.jit.is_scripting() else _layer_impl(self, input)
        return self.forward_with(input, hx, impl)

    def forward_with(self, input: Tensor, hx: Optional[Tensor], impl: str) -> Tensor:
        """forward with the cell of `impl` (stack.py); `self` may be a torch.nn.GRUCell."""
        x, is_batched = _cell_input("GRUCell", input, self.input_size)
        if hx is None:
            h0 = torch.zeros(x.size(0), self.hidden_size, dtype=x.dtype, device=x.device)
        else:
            h0 = _cell_state(hx, 0, 1, "GRUCell", x, is_batched, self.hidden_size)
        if torch.jit.is_scripting():
            h1 = stack.gru_cell(impl, x, h0, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        else:
            t, dtype = _cell_tensors_for_kernels("GRUCell", [x, h0, self.bias_ih, self.bias_hh, self.weight_ih,
                                                             self.weight_hh], impl)
            h1 = stack.gru_cell(impl, t[0], t[1], t[4], t[5], t[2], t[3]).to(dtype)
        return h1 if is_batched else h1.squeeze(0)


def run(module, input, hx=None, impl="reference"):
    """Runs `module` (an LSTM, GRU, LSTMCell or GRUCell of fused_lstm or of torch.nn: the same parameters)
    with the layers of `impl` ("reference", "fused") through fused_lstm's argument handling: the same
    results and errors as the module."""
    for fused_class in (LSTM, GRU, LSTMCell, GRUCell):
        if type(module).__name__ == fused_class.__name__:
            return fused_class.forward_with(module, input, hx, impl)
    raise TypeError(f"run takes an LSTM, GRU, LSTMCell or GRUCell, got {type(module).__name__}")
