"""The three LSTMs compared, built with the same weights and fed the same random inputs."""

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

import fused_lstm

from .cases import LstmCase

FUSED = "fused_lstm"
BASELINE = "torch.nn.LSTM"  # oneDNN/native kernels on CPU, cuDNN on GPU
REFERENCE = "reference"
CANDIDATE_NAMES = (FUSED, BASELINE, REFERENCE)

# The reference walks the steps in Python, one small op at a time; past these sizes it would take
# longer than the rest of the case, so it is skipped (and the table says so).
REFERENCE_LIMITS = {  # device type: (most sequential steps T·layers·directions, most forward GFLOP)
    "cpu": (2000, 4.0),
    "cuda": (800, 200.0),
}


def reference_skip_reason(case: LstmCase, device):
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
    call: Callable  # (input, hx) -> (output, (h_n, c_n))


@dataclass
class LstmInputs:
    input: torch.Tensor  # [T, B, I]; requires grad in training
    hx: tuple  # (h0 [L·D, B, P], c0 [L·D, B, H])
    output_grad: torch.Tensor  # the training loss is sum(output · output_grad): random weights, not ones


def build_candidates(case: LstmCase, device, names):
    """nn.LSTM initialises the weights; the other candidates get a copy through load_state_dict."""
    arguments = dict(input_size=case.input_size, hidden_size=case.hidden_size, num_layers=case.num_layers,
                     bidirectional=case.bidirectional, proj_size=case.proj_size, device=device,
                     dtype=getattr(torch, case.dtype))
    baseline = nn.LSTM(**arguments)
    candidates = {BASELINE: Candidate(BASELINE, baseline, baseline)}
    if FUSED in names:
        fused = fused_lstm.LSTM(**arguments)
        fused.load_state_dict(baseline.state_dict())
        candidates[FUSED] = Candidate(FUSED, fused, fused)
    if REFERENCE in names:
        # Its own module, so that its gradients do not pile up on another candidate's parameters.
        reference_module = nn.LSTM(**arguments)
        reference_module.load_state_dict(baseline.state_dict())
        candidates[REFERENCE] = Candidate(REFERENCE, reference_module,
                                          partial(fused_lstm.reference.lstm, reference_module))
    return [candidates[name] for name in names]


def make_inputs(case: LstmCase, device, mode):
    options = dict(device=device, dtype=getattr(torch, case.dtype))
    states = case.num_layers * case.directions
    sequence = torch.randn(case.seq_len, case.batch, case.input_size, **options)
    sequence.requires_grad_(mode == "training")
    hx = (torch.randn(states, case.batch, case.output_size, **options),
          torch.randn(states, case.batch, case.hidden_size, **options))
    output_grad = torch.randn(case.seq_len, case.batch, case.directions * case.output_size, **options)
    return LstmInputs(sequence, hx, output_grad)


def clear_grads(candidate: Candidate, inputs: LstmInputs):
    """Like optimizer.zero_grad(set_to_none=True): every training call starts without gradients."""
    candidate.module.zero_grad(set_to_none=True)
    inputs.input.grad = None


def run_once(candidate: Candidate, inputs: LstmInputs, mode):
    """Inference: the forward under no_grad. Training: forward, then backward of the weighted loss."""
    if mode == "inference":
        with torch.no_grad():
            output, (h_n, c_n) = candidate.call(inputs.input, inputs.hx)
    else:
        output, (h_n, c_n) = candidate.call(inputs.input, inputs.hx)
        output.backward(inputs.output_grad)  # the gradient of sum(output · output_grad)
    return output, h_n, c_n


def collect_results(candidate: Candidate, inputs: LstmInputs, run_result, mode):
    """What the correctness check compares: outputs, and in training every gradient."""
    output, h_n, c_n = run_result
    outputs = {"output": output.detach(), "h_n": h_n.detach(), "c_n": c_n.detach()}
    grads = {}
    if mode == "training":
        grads["input"] = inputs.input.grad
        grads.update((name, parameter.grad) for name, parameter in candidate.module.named_parameters())
    return outputs, grads


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
