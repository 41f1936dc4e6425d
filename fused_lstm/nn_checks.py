"""torch.nn's checks of a recurrent module's arguments, with its exception types and messages, for the modules
(written so that TorchScript compiles those a forward calls)."""

import numbers
import warnings
from typing import List, Tuple

from torch import Tensor


def check_constructor_arguments(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size):
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


def check_state(state: Tensor, input: Tensor, which: str):
    # PyTorch's RNN kernels raise these for states on another device or of another dtype.
    if state.device != input.device:
        raise RuntimeError(f"Input and {which} tensors are not at the same device, found input tensor at "
                           f"{input.device} and {which} tensor at {state.device}")
    if state.dtype != input.dtype:
        raise RuntimeError(f"Expected {which} and input to have the same dtype, got {which} {state.dtype} and "
                           f"input {input.dtype}")


def check_state_size(state: Tensor, expected: List[int], which: str):
    if list(state.size()) != expected:
        expected_text = "(" + ", ".join([str(size) for size in expected]) + ")"
        raise RuntimeError(f"Expected {which} size {expected_text}, got {list(state.size())}")


def cell_input(name: str, input: Tensor, input_size: int) -> Tuple[Tensor, bool]:
    """nn.*Cell's input checks; returns (input as [B, C], whether it was batched)."""
    if input.dim() not in (1, 2):
        raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
    is_batched = input.dim() == 2
    if not is_batched:
        input = input.unsqueeze(0)
    if input.size(1) != input_size:
        raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected {input_size}")
    return input, is_batched


def cell_state(state: Tensor, index: int, count: int, name: str, input: Tensor, is_batched: bool,
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
