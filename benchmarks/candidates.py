"""The three implementations compared (LSTM or GRU), built with the same weights and fed the same random inputs."""

import contextlib
import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

import fused_lstm

from .cases import RecurrentCase

FUSED = "fused_lstm"
BASELINE = "torch.nn"  # torch.nn.LSTM / torch.nn.GRU: oneDNN/native kernels on CPU, cuDNN on GPU
REFERENCE = "reference"
CANDIDATE_NAMES = (FUSED, BASELINE, REFERENCE)
# Per cell: the torch.nn / fused_lstm module class name and the package reference's runner.
MODULE_NAMES = {"lstm": "LSTM", "gru": "GRU"}

# The reference walks the steps in Python, one small op at a time; past these sizes it would take
# longer than the rest of the case, so it is skipped (and the table says so).
REFERENCE_LIMITS = {  # device type: (most sequential steps T·layers·directions, most forward GFLOP)
    "cpu": (2000, 4.0),
    "cuda": (800, 200.0),
}


def reference_skip_reason(case: RecurrentCase, device):
    max_steps, max_gflop = REFERENCE_LIMITS[device.type]
    if case.sequential_steps > max_steps:
        return f"skipped: reference too slow here (T·layers·directions = {case.sequential_steps} > {max_steps})"
    forward_gflop = case.forward_flops() / 1e9
    if forward_gflop > max_gflop:
        return f"skipped: reference too slow here ({forward_gflop:.1f} forward GFLOP > {max_gflop:g})"
    return None


@dataclass
class Candidate:
    name: str
    module: nn.Module  # owns the parameters whose gradients training produces
    call: Callable  # (input, hx) -> (output, (h_n, c_n)) for the LSTM, (output, h_n) for the GRU


@dataclass
class RecurrentInputs:
    input: torch.Tensor  # [T, B, I]; requires grad in training
    hx: object  # LSTM: (h0 [L·D, B, P], c0 [L·D, B, H]); GRU: h0 [L·D, B, H]
    output_grad: torch.Tensor  # the training loss is sum(output · output_grad): random weights, not ones


def build_candidates(case: RecurrentCase, device, names):
    """torch.nn's module initialises the weights; the other candidates get a copy through load_state_dict."""
    arguments = dict(input_size=case.input_size, hidden_size=case.hidden_size, num_layers=case.num_layers,
                     bidirectional=case.bidirectional, device=device, dtype=getattr(torch, case.dtype))
    if case.cell == "lstm":
        arguments["proj_size"] = case.proj_size
    module_name = MODULE_NAMES[case.cell]
    baseline = getattr(nn, module_name)(**arguments)
    candidates = {BASELINE: Candidate(BASELINE, baseline, baseline)}
    if FUSED in names:
        fused = getattr(fused_lstm, module_name)(**arguments)
        fused.load_state_dict(baseline.state_dict())
        candidates[FUSED] = Candidate(FUSED, fused, fused)
    if REFERENCE in names:
        # Its own module, so that its gradients do not pile up on another candidate's parameters.
        reference_module = getattr(nn, module_name)(**arguments)
        reference_module.load_state_dict(baseline.state_dict())
        candidates[REFERENCE] = Candidate(REFERENCE, reference_module,
                                          partial(fused_lstm.run, reference_module, impl="reference"))
    return [candidates[name] for name in names]


def make_inputs(case: RecurrentCase, device, mode):
    options = dict(device=device, dtype=getattr(torch, case.dtype))
    states = case.num_layers * case.directions
    sequence = torch.randn(case.seq_len, case.batch, case.input_size, **options)
    sequence.requires_grad_(mode == "training")  # not in "training-data-input"
    h0 = torch.randn(states, case.batch, case.output_size, **options)
    hx = (h0, torch.randn(states, case.batch, case.hidden_size, **options)) if case.cell == "lstm" else h0
    output_grad = torch.randn(case.seq_len, case.batch, case.directions * case.output_size, **options)
    return RecurrentInputs(sequence, hx, output_grad)


def clear_grads(candidate: Candidate, inputs: RecurrentInputs):
    """Like optimizer.zero_grad(set_to_none=True): every training call starts without gradients."""
    candidate.module.zero_grad(set_to_none=True)
    inputs.input.grad = None


def run_once(candidate: Candidate, inputs: RecurrentInputs, mode):
    """Inference: the forward under no_grad. Training (either kind): forward, then backward of the weighted loss.
    Returns (output, final states as a tuple: (h_n, c_n) or (h_n,))."""
    with torch.no_grad() if mode == "inference" else contextlib.nullcontext():
        output, final_states = candidate.call(inputs.input, inputs.hx)
    if mode != "inference":
        output.backward(inputs.output_grad)  # the gradient of sum(output · output_grad)
    return output, final_states if isinstance(final_states, tuple) else (final_states,)


def collect_results(candidate: Candidate, inputs: RecurrentInputs, run_result, mode):
    """What the correctness check compares: outputs, and in training every gradient."""
    output, final_states = run_result
    outputs = {"output": output.detach()}
    outputs.update((name, state.detach()) for name, state in zip(("h_n", "c_n"), final_states))
    grads = {}
    if mode != "inference":
        if inputs.input.requires_grad:
            grads["input"] = inputs.input.grad
        grads.update((name, parameter.grad) for name, parameter in candidate.module.named_parameters())
    return outputs, grads


# The correctness check's bound on max|Δ| / max|expected| against torch.nn, by dtype: far above the rounding of
# two implementations that sum in different orders (float32 rows read 1e-6 to 1e-5), far below a wrong result
# (order 1).
RELATIVE_DIFFERENCE_BOUND = {"float64": 1e-9, "float32": 1e-3, "bfloat16": 1e-1, "float16": 2e-2}


def relative_difference(tensors, expected_tensors):
    """max|a - b| / max|b| over matching tensors (the largest expected magnitude, at least 1e-6); NaN where
    max_abs_difference is."""
    largest_expected = max((t.double().abs().max().item() for t in expected_tensors.values()
                            if t is not None and t.numel()), default=0.0)
    return max_abs_difference(tensors, expected_tensors) / max(largest_expected, 1e-6)


def max_abs_difference(tensors, expected_tensors):
    """Largest |a - b| over matching tensors, in float64; NaN if any is missing or NaN."""
    if not expected_tensors:
        return float("nan")
    largest = 0.0
    for name, expected in expected_tensors.items():
        actual = tensors.get(name)
        if actual is None or expected is None or actual.shape != expected.shape:
            return float("nan")
        difference = (actual.double() - expected.double()).abs().max().item()
        if math.isnan(difference):  # max() would silently drop a NaN
            return difference
        largest = max(largest, difference)
    return largest
