"""What a module's call decides outside TorchScript (which runs the fused ops in the weights' dtype; see
stack.py): which layers run it (the fused ops, or ONNX's nodes while exporting), and in which dtype (autocast,
and the float32 kernels for half precision on a CPU without kernels for it)."""

from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from . import onnx_export, settings


@torch.jit.unused
def layer_impl(module: nn.Module, input: object) -> str:
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
FOLLOWS_CPU_AUTOCAST = {"LSTM": True, "GRU": False, "LSTMCell": False, "GRUCell": False}


@torch.jit.unused
def compute_dtype(mode: str, input: Tensor, weights: List[Tensor]) -> torch.dtype:
    """The dtype the layers run in: the autocast dtype where torch's module runs in it, else the weights'
    dtype, which the input must match."""
    for weight in weights:
        if weight.device != input.device:
            raise RuntimeError("Input and parameter tensors are not at the same device, found input tensor at "
                               f"{input.device} and parameter tensor at {weight.device}")
    device_type = input.device.type
    if device_type in ("cuda", "cpu") and torch.is_autocast_enabled(device_type):
        if device_type == "cuda" or FOLLOWS_CPU_AUTOCAST[mode]:
            return torch.get_autocast_dtype(device_type)
        if input.dtype in (torch.float16, torch.bfloat16):
            return input.dtype
    if input.dtype != weights[0].dtype and not torch._C._is_any_autocast_enabled():
        raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype ({weights[0].dtype}). "
                         f"Convert input: input.to({weights[0].dtype}), or convert model: model.to({input.dtype})")
    return weights[0].dtype


@torch.jit.unused
def kernels_dtype(dtype: torch.dtype, device: torch.device, impl: str) -> torch.dtype:
    """The dtype the fused kernels run a call of `dtype` in: float32 for bfloat16 and float16 on a CPU without
    kernels for them (settings.cpu_computes_half_in_float32), else `dtype`."""
    if impl == "fused" and device.type == "cpu" and dtype in (torch.bfloat16, torch.float16):
        if settings.cpu_computes_half_in_float32(str(dtype).split(".")[-1]):
            return torch.float32
    return dtype


@torch.jit.unused
def in_dtype(dtype: torch.dtype, tensors: List[Tensor]) -> List[Tensor]:
    return [tensor if tensor.dtype == dtype else tensor.to(dtype) for tensor in tensors]


@torch.jit.unused
def cell_tensors_for_kernels(mode: str, tensors: Dict[str, Optional[Tensor]], impl: str):
    """A cell's tensors by name (input, states, weights and biases) in the dtype the kernels run the call in,
    converted once, and the dtype its results are returned in: the autocast dtype where torch's cell runs in it
    (compute_dtype), else the input's; the kernels run it in float32 on a CPU without kernels for that dtype
    (kernels_dtype). Outside autocast, tensors of another dtype than the input's are left as they are, for the op
    to reject as torch's cell does."""
    autocast = torch._C._is_any_autocast_enabled()
    input = tensors["input"]
    dtype = compute_dtype(mode, input, [tensors["weight_ih"]]) if autocast else input.dtype
    kernel_dtype = kernels_dtype(dtype, input.device, impl)
    if not autocast and (kernel_dtype == dtype or any(t is not None and t.dtype != dtype for t in tensors.values())):
        return tensors, dtype
    return {name: None if tensor is None else tensor.to(kernel_dtype) for name, tensor in tensors.items()}, dtype


@torch.jit.unused
def states_must_match_input(input: Tensor) -> bool:
    """Under autocast the states may come in another dtype: they are converted like the input."""
    return not torch.is_autocast_enabled(input.device.type)
