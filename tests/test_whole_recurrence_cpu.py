"""The whole recurrence of float32 layers on the CPU (csrc/cpu/lstm_recurrence_cpu.cpp): padded sequences
without projection run as register tiles (AVX-512, or AVX2+FMA) that accumulate x·W_ihᵀ + h·W_hhᵀ and apply
the cell update (or its backward) on the tile. Checked here at the op level against the same op in float64
(which runs the per-step path) on sizes that hit every tile edge, on each instruction set (the option cpu_isa),
shown to run (the path query names the kernel; the profiler sees no per-step GEMM), and off with
cpu_isa="none"."""

import pytest
import torch

import fused_lstm
import samples
from conftest import (HAS_AVX2, MANY_BLOCKS_SCALE, ONE_STEP_BLOCKS_SCALE, WHOLE_RECURRENCE_AGAINST_FLOAT64_SCALE,
                      assert_close, cpu_has, cpu_isa_or_skip, run_counting_aten_gemms)

pytestmark = pytest.mark.skipif(not HAS_AVX2, reason="the CPU whole recurrence needs AVX2 and FMA")

# An AVX-512 register tile is up to 6 rows (B split evenly: 7 = 4 + 3, 13 = 5 + 4 + 4) × 64 columns: 16
# hidden units × 4 gates forward, 64 units backward; an AVX2 tile up to 3 rows × 32 columns. Below 4 rows the
# forward starts its tiles from one input GEMM over all rows; from 4 rows it projects the input in its steps. These sizes cover both, partial
# unit panels forward and backward, inputs narrower than a vector and no input features at all.
SIZES = [  # (T, B, C, H)
    (1, 1, 1, 1),
    (3, 6, 3, 16),
    (5, 7, 33, 20),
    (4, 13, 16, 64),
    (6, 2, 5, 70),
    (3, 12, 40, 130),
    (2, 8, 0, 17),
    (3, 3, 0, 9),
]


OPS = torch.ops.fused_lstm


def layer_sample(T, B, C, H, bias=True, weight_scale=0.4):
    return samples.lstm_layer_sample(steps=T, batch=B, input_size=C, hidden=H, bias=bias, weight_scale=weight_scale,
                                     seed=T * 1000 + B * 100 + C * 10 + H)


def run_layer(sample, reverse):
    """Forward (saving) and backward of one layer, and the forward at inference: every output by name."""
    results = samples.lstm_forward_and_backward(OPS, sample, reverse)
    inference = samples.call(OPS.lstm_layer_forward, **sample, reverse=reverse, save_for_backward=False)
    return {**results, **{f"inference_{name}": inference[name] for name in ("output", "h_n", "c_n")}}


def compare_with_float64(size, reverse, bias, weight_scale=0.4, scale=WHOLE_RECURRENCE_AGAINST_FLOAT64_SCALE):
    """The op's outputs and gradients (float32, whole recurrence) against the reference in float64."""
    sample = layer_sample(*size, bias=bias, weight_scale=weight_scale)
    fused = run_layer(sample, reverse)
    exact = samples.lstm_reference(sample, reverse)
    for name, expected in exact.items():
        assert fused[name].dtype == torch.float32, name
        assert_close(fused[name], expected.float(), scale=scale)
    for name in ("output", "h_n", "c_n"):
        assert_close(fused[f"inference_{name}"], exact[name].float(), scale=scale)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "T{}-B{}-C{}-H{}".format(*s))
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_whole_recurrence_matches_float64(size, reverse, bias):
    compare_with_float64(size, reverse, bias)


# The fused backward works in blocks of steps whose dL/d(pre-activations) fill an 8 MiB buffer
# (csrc/lstm_layer.cpp, kGradGatesBlockBytes): B·4H·4 bytes a step, so 32 steps here; 70 steps are three
# blocks (32 + 32 + 6, from the end of the visit), which checks the recurrent gradient carried from one block
# into the next, dW_hh's h0 rows in the first or last block, and the weight gradients summed over blocks.
# Weights of scale 1/√H keep the recurrence from amplifying float32 rounding over 70 steps (the tolerances:
# MANY_BLOCKS_SCALE and ONE_STEP_BLOCKS_SCALE in conftest).
MANY_BLOCKS = (70, 64, 24, 256)
MANY_BLOCKS_WEIGHT_SCALE = 256 ** -0.5
# One step larger than the buffer (520·4096·4 bytes > 8 MiB): every block is that one step.
ONE_STEP_BLOCKS = (3, 520, 4, 1024)


@pytest.mark.parametrize("size, scale", [(MANY_BLOCKS, MANY_BLOCKS_SCALE), (ONE_STEP_BLOCKS, ONE_STEP_BLOCKS_SCALE)],
                         ids=["blocks-of-32-steps", "blocks-of-1-step"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_backward_in_many_blocks_matches_float64(size, scale, reverse):
    compare_with_float64(size, reverse, bias=True, weight_scale=size[3] ** -0.5, scale=scale)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_backward_in_many_blocks_skips_only_what_is_not_asked_for(reverse):
    """The flags that skip dL/dx or the weight gradients leave the other results bitwise the same."""
    sample = layer_sample(*MANY_BLOCKS, weight_scale=MANY_BLOCKS_WEIGHT_SCALE)
    forward = samples.call(OPS.lstm_layer_forward, **sample, reverse=reverse, save_for_backward=True)

    def backward(**flags):
        return samples.call(OPS.lstm_layer_backward, **samples.lstm_backward_arguments(sample, forward, reverse,
                                                                                       **flags))

    everything = backward(compute_grad_input=True, compute_grad_weights=True)
    for flags in samples.GRADIENT_SKIPS:
        skipped = backward(**flags)
        for name, value in skipped.items():
            if samples.is_computed(name, flags):
                assert torch.equal(value, everything[name]), (flags, name)
            else:
                assert value.numel() == 0, (flags, name)


FLOAT32_KERNELS = {"avx2": "whole recurrence (avx2 register tiles)",
                   "avx512": "whole recurrence (avx512 register tiles)"}


@pytest.mark.parametrize("isa", list(FLOAT32_KERNELS))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "T{}-B{}-C{}-H{}".format(*s))
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_each_instruction_set_matches_float64(isa, size, reverse):
    with cpu_isa_or_skip(isa):
        kernel = FLOAT32_KERNELS[isa]
        # One step runs the fused cell forward (tests/test_cells.py); its backward is the kernel's.
        assert samples.paths(OPS, layer_sample(*size)) == ("fused cell" if size[0] == 1 else kernel, kernel)
        compare_with_float64(size, reverse, bias=True)


@pytest.mark.parametrize("isa", list(FLOAT32_KERNELS))
def test_each_instruction_set_matches_float64_over_many_blocks(isa):
    with cpu_isa_or_skip(isa):
        compare_with_float64(MANY_BLOCKS, True, True, weight_scale=MANY_BLOCKS_WEIGHT_SCALE, scale=MANY_BLOCKS_SCALE)


def test_asking_for_an_instruction_set_the_cpu_lacks_raises_and_changes_nothing():
    missing = [isa for isa in fused_lstm.settings.CPU_ISAS if not cpu_has(isa)]
    if not missing:
        pytest.skip("this CPU has every instruction set fused_lstm uses")
    with pytest.raises(RuntimeError, match=f"cpu_isa={missing[0]} but this CPU does not have it"):
        fused_lstm.set_option("cpu_isa", missing[0])
    assert fused_lstm.get_option("cpu_isa") == "auto"


def per_step_gemms(sample):
    """The aten GEMM calls of one forward + backward: the per-step path makes one (or more) per step."""
    return run_counting_aten_gemms(lambda: samples.lstm_forward_and_backward(OPS, sample, reverse=False))[1]


# Small enough that every GEMM of the per-step path goes through aten (not oneDNN's matmul).
PROFILED = (9, 4, 8, 24)  # (T, B, C, H)
# What the whole recurrence leaves to aten, all after the backward loop: dL/dh0, dx, dW_ih and dW_hh (as a GEMM
# over the output rows plus one for h0). The forward makes none.
GEMMS_AFTER_THE_LOOP = 5


def test_whole_recurrence_makes_no_per_step_gemm():
    sample = layer_sample(*PROFILED)
    assert samples.paths(OPS, sample)[0].startswith("whole recurrence")
    assert per_step_gemms(sample) <= GEMMS_AFTER_THE_LOOP


def test_cpu_isa_none_runs_the_per_step_path():
    sample = layer_sample(*PROFILED)
    with fused_lstm.options(cpu_isa="none"):
        assert samples.paths(OPS, sample) == ("per step", "per step")
        assert per_step_gemms(sample) >= 2 * PROFILED[0]  # one per step forward and backward
        compare_with_float64(PROFILED, reverse=False, bias=True)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_recurrence_is_bitwise_independent_of_the_thread_count(reverse):
    # From 4 rows the forward is all whole recurrence (no library GEMM), and so is the backward's dL/dc0 within
    # one block: each value is summed by one thread in a fixed order, whichever thread that is, with 1 or 2
    # threads in the team (docs/robustness.md, Determinism).
    sample = layer_sample(7, 9, 40, 130)
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            results.append(samples.lstm_forward_and_backward(OPS, sample, reverse))
    finally:
        torch.set_num_threads(previous)
    for other in results[1:]:
        for name in ("output", "h_n", "c_n", "gates", "cell_prev", "grad_c0"):
            assert torch.equal(other[name], results[0][name]), name
