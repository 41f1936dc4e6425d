"""The whole recurrence of float32 layers on the CPU (csrc/cpu/lstm_recurrence_cpu.cpp): padded sequences
without projection run as register tiles (AVX-512, or AVX2+FMA) that accumulate x·W_ihᵀ + h·W_hhᵀ and apply
the cell update (or its backward) on the tile. Checked here at the op level against the same op in float64
(which runs the per-step path) on sizes that hit every tile edge, on each instruction set (the option cpu_isa),
shown to run (the path query names the kernel; the profiler sees no per-step GEMM), and off with
cpu_isa="none"."""

import pytest
import torch

import fused_lstm
from conftest import HAS_AVX2, assert_close, cpu_has, cpu_isa_or_skip, run_counting_aten_gemms

pytestmark = pytest.mark.skipif(not HAS_AVX2, reason="the fused CPU step needs AVX2 and FMA")

# An AVX-512 register tile is up to 6 rows (B split evenly: 7 = 4 + 3, 13 = 5 + 4 + 4) × 64 columns: 16
# hidden units × 4 gates forward, 64 units backward; an AVX2 tile up to 3 rows × 32 columns. Below 4 rows the forward starts its tiles from one input
# GEMM over all rows; from 4 rows it projects the input in its steps. These sizes cover both, partial
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


def layer_arguments(T, B, C, H, bias, dtype=torch.float32, weight_scale=0.4):
    generator = torch.Generator().manual_seed(T * 1000 + B * 100 + C * 10 + H)

    def random(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(dtype)

    return dict(
        input=random(T * B, C), batch_sizes=torch.full((T,), B, dtype=torch.long), h0=random(B, H, scale=0.5),
        c0=random(B, H, scale=0.5), weight_ih=random(4 * H, C, scale=weight_scale),
        weight_hh=random(4 * H, H, scale=weight_scale),
        bias=random(4 * H, scale=0.3) if bias else None)


def run_layer(arguments, reverse):
    """Forward (saving) and backward of one layer; returns every output of both ops."""
    a = arguments
    forward = torch.ops.fused_lstm.lstm_layer_forward(a["input"], a["batch_sizes"], a["h0"], a["c0"],
                                                      a["weight_ih"], a["weight_hh"], a["bias"], None, reverse, True)
    output, h_n, c_n, gates, cell_prev, proj_input = forward
    generator = torch.Generator().manual_seed(7)
    grad_output = torch.randn(output.shape, generator=generator, dtype=torch.float64).to(output.dtype)
    grad_h_n = torch.randn(h_n.shape, generator=generator, dtype=torch.float64).to(output.dtype)
    grad_c_n = torch.randn(c_n.shape, generator=generator, dtype=torch.float64).to(output.dtype)
    backward = torch.ops.fused_lstm.lstm_layer_backward(
        grad_output, grad_h_n, grad_c_n, a["input"], a["batch_sizes"], a["h0"], a["weight_ih"], a["weight_hh"], None,
        output, gates, cell_prev, proj_input, reverse, a["bias"] is not None)
    inference = torch.ops.fused_lstm.lstm_layer_forward(a["input"], a["batch_sizes"], a["h0"], a["c0"],
                                                        a["weight_ih"], a["weight_hh"], a["bias"], None, reverse,
                                                        False)
    return {"output": output, "h_n": h_n, "c_n": c_n, "gates": gates, "cell_prev": cell_prev,
            "inference_output": inference[0], "inference_h_n": inference[1], "inference_c_n": inference[2],
            **dict(zip(["grad_input", "grad_h0", "grad_c0", "grad_weight_ih", "grad_weight_hh", "grad_bias"],
                       backward[:6]))}


def compare_with_float64(size, reverse, bias, weight_scale=0.4, tolerance_scale=2.0):
    arguments = layer_arguments(*size, bias=bias, weight_scale=weight_scale)
    fused = run_layer(arguments, reverse)
    exact = run_layer({k: (v.double() if v is not None and v.is_floating_point() else v)
                       for k, v in arguments.items()}, reverse)
    for name, expected in exact.items():
        assert fused[name].dtype == torch.float32, name
        assert_close(fused[name], expected.float(), scale=tolerance_scale)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "T{}-B{}-C{}-H{}".format(*s))
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_whole_recurrence_matches_float64(size, reverse, bias):
    compare_with_float64(size, reverse, bias)


# The fused backward works in blocks of steps whose dL/d(pre-activations) fill an 8 MiB buffer
# (csrc/lstm_layer.cpp, kGradGatesBlockBytes): B·4H·4 bytes a step, so 32 steps here; 70 steps are three
# blocks (32 + 32 + 6, from the end of the visit), which checks the recurrent gradient carried from one block
# into the next, dW_hh's h0 rows in the first or last block, and the weight gradients summed over blocks.
# Weights of scale 1/√H keep the recurrence from amplifying float32 rounding over 70 steps. Even so dL/dx
# sums 70 steps of rounding: 3.4e-5 on an entry of 3.8 on an Intel Xeon with AMX (its MKL/oneDNN GEMMs sum
# in another order than on AMD), 9e-5 relative, hence twice the default scale.
MANY_BLOCKS = (70, 64, 24, 256)
MANY_BLOCKS_WEIGHT_SCALE = 256 ** -0.5
MANY_BLOCKS_TOLERANCE = 4.0
# One step larger than the buffer (520·4096·4 bytes > 8 MiB): every block is that one step. Its weight
# gradients sum 1560 rows of float32 products: the largest error is 1.5e-4 on entries up to 75 (7e-5 with the
# per-step path's one GEMM), 3e-5 on an entry of 0.4, hence the wider tolerance there.
ONE_STEP_BLOCKS = (3, 520, 4, 1024)


@pytest.mark.parametrize("size, tolerance_scale", [(MANY_BLOCKS, MANY_BLOCKS_TOLERANCE), (ONE_STEP_BLOCKS, 8.0)],
                         ids=["blocks-of-32-steps", "blocks-of-1-step"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_backward_in_many_blocks_matches_float64(size, tolerance_scale, reverse):
    compare_with_float64(size, reverse, bias=True, weight_scale=size[3] ** -0.5, tolerance_scale=tolerance_scale)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_backward_in_many_blocks_skips_only_what_is_not_asked_for(reverse):
    """The flags that skip dL/dx or the weight gradients leave the other results bitwise the same."""
    a = layer_arguments(*MANY_BLOCKS, bias=True, weight_scale=MANY_BLOCKS_WEIGHT_SCALE)
    output, h_n, c_n, gates, cell_prev, proj_input = torch.ops.fused_lstm.lstm_layer_forward(
        a["input"], a["batch_sizes"], a["h0"], a["c0"], a["weight_ih"], a["weight_hh"], a["bias"], None, reverse,
        True)
    grads = [torch.randn_like(output), torch.randn_like(h_n), torch.randn_like(c_n)]

    def backward(compute_grad_input, compute_grad_weights):
        return torch.ops.fused_lstm.lstm_layer_backward(
            *grads, a["input"], a["batch_sizes"], a["h0"], a["weight_ih"], a["weight_hh"], None, output, gates,
            cell_prev, proj_input, reverse, True, compute_grad_input, compute_grad_weights)

    everything = backward(True, True)
    no_input = backward(False, True)
    no_weights = backward(True, False)
    assert no_input[0].numel() == 0 and all(t.numel() == 0 for t in no_weights[3:])
    for name, index in [("grad_h0", 1), ("grad_c0", 2), ("grad_weight_ih", 3), ("grad_weight_hh", 4),
                        ("grad_bias", 5)]:
        assert torch.equal(no_input[index], everything[index]), name
    for name, index in [("grad_input", 0), ("grad_h0", 1), ("grad_c0", 2)]:
        assert torch.equal(no_weights[index], everything[index]), name


FLOAT32_KERNELS = {"avx2": "whole recurrence (avx2 register tiles)",
                   "avx512": "whole recurrence (avx512 register tiles)"}


def paths_of(arguments):
    a = arguments
    return torch.ops.fused_lstm.layer_paths("lstm_layer", a["input"], a["batch_sizes"], a["h0"], a["weight_ih"],
                                            a["weight_hh"], None)


@pytest.mark.parametrize("isa", list(FLOAT32_KERNELS))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "T{}-B{}-C{}-H{}".format(*s))
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_each_instruction_set_matches_float64(isa, size, reverse):
    with cpu_isa_or_skip(isa):
        kernel = FLOAT32_KERNELS[isa]
        # One step runs the fused cell forward (tests/test_cells.py); its backward is the kernel's.
        assert paths_of(layer_arguments(*size, bias=True)) == ("fused cell" if size[0] == 1 else kernel, kernel)
        compare_with_float64(size, reverse, bias=True)


@pytest.mark.parametrize("isa", list(FLOAT32_KERNELS))
def test_each_instruction_set_matches_float64_over_many_blocks(isa):
    with cpu_isa_or_skip(isa):
        compare_with_float64(MANY_BLOCKS, True, True, weight_scale=MANY_BLOCKS_WEIGHT_SCALE,
                             tolerance_scale=MANY_BLOCKS_TOLERANCE)


def test_asking_for_an_instruction_set_the_cpu_lacks_raises_and_changes_nothing():
    missing = [isa for isa in fused_lstm.ops.CPU_ISAS if not cpu_has(isa)]
    if not missing:
        pytest.skip("this CPU has every instruction set fused_lstm uses")
    with pytest.raises(RuntimeError, match=f"cpu_isa={missing[0]} but this CPU does not have it"):
        fused_lstm.set_option("cpu_isa", missing[0])
    assert fused_lstm.get_option("cpu_isa") == "auto"


def per_step_gemms(arguments):
    """The aten GEMM calls of one forward + backward: the per-step path makes one (or more) per step."""
    return run_counting_aten_gemms(lambda: run_layer(arguments, reverse=False))[1]


# Small enough that every GEMM of the per-step path goes through aten (not oneDNN's matmul).
PROFILED = dict(T=9, B=4, C=8, H=24)
# What the whole recurrence leaves to aten, all after the backward loop: dL/dh0, dx, dW_ih and dW_hh (as a GEMM
# over the output rows plus one for h0). The forward makes none.
GEMMS_AFTER_THE_LOOP = 5


def test_whole_recurrence_makes_no_per_step_gemm():
    arguments = layer_arguments(**PROFILED, bias=True)
    assert paths_of(arguments)[0].startswith("whole recurrence")
    assert per_step_gemms(arguments) <= GEMMS_AFTER_THE_LOOP


def test_cpu_isa_none_runs_the_per_step_path():
    arguments = layer_arguments(**PROFILED, bias=True)
    with fused_lstm.options(cpu_isa="none"):
        assert paths_of(arguments) == ("per step", "per step")
        assert per_step_gemms(arguments) >= 2 * PROFILED["T"]  # one per step forward and backward
        exact = run_layer({k: (v.double() if v is not None and v.is_floating_point() else v)
                           for k, v in arguments.items()}, reverse=False)
        for name, value in run_layer(arguments, reverse=False).items():
            assert_close(value, exact[name].float(), scale=2.0)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_recurrence_is_bitwise_independent_of_the_thread_count(reverse):
    # From 4 rows the forward is all whole recurrence (no library GEMM), and so is the backward's dL/dc0 within one
    # block: each value is summed by one thread in a fixed order, whichever thread that is, with 1 or 2
    # threads in the team (docs/robustness.md, Determinism).
    a = layer_arguments(T=7, B=9, C=40, H=130, bias=True)
    generator = torch.Generator().manual_seed(3)
    grad_output, grad_h_n, grad_c_n = (torch.randn(*shape, generator=generator) for shape in
                                       [(7 * 9, 130), (9, 130), (9, 130)])
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            forward = torch.ops.fused_lstm.lstm_layer_forward(
                a["input"], a["batch_sizes"], a["h0"], a["c0"], a["weight_ih"], a["weight_hh"], a["bias"], None,
                reverse, True)
            output, _, _, gates, cell_prev, proj_input = forward
            grad_c0 = torch.ops.fused_lstm.lstm_layer_backward(
                grad_output, grad_h_n, grad_c_n, a["input"], a["batch_sizes"], a["h0"], a["weight_ih"],
                a["weight_hh"], None, output, gates, cell_prev, proj_input, reverse, True)[2]
            results.append((*forward[:5], grad_c0))
    finally:
        torch.set_num_threads(previous)
    for other in results[1:]:
        for actual, expected in zip(other, results[0]):
            assert torch.equal(actual, expected)
