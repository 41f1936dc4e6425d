"""The cell ops (lstm_cell_*, gru_cell_*) and one-step layers. On the CPU, float32 batches run the fused cell
(csrc/cpu/cell_cpu.cpp: the gate products in vector registers, then the cell's math): at most 16 rows in its
dot-product form, 17 to 128 rows (with AVX-512) in its batch-lanes form; larger ones two GEMMs and the pointwise
pass: all against the same op in float64 (the GEMM path), for sizes that hit every edge of the register blocks
(rows in blocks of 4, 16 or 8 lanes of the inputs and hidden units, in passes of 32 lanes; units in blocks of 16,
in pairs), with and without bias, with the best instruction set and with AVX2 forced; gradcheck, gradgradcheck and
opcheck of the ops; one-step layers against the per-step path."""

import pytest
import torch

import fused_lstm
import samples
from conftest import (FLOAT32_CELL_AGAINST_FLOAT64_SCALE, HAS_AVX2, HAS_AVX512, SUMMATION_ORDER_SCALE, assert_close,
                      cpu_isa_or_skip)

OPS = torch.ops.fused_lstm
F64 = torch.float64
# (B, C, H): 1-4 rows in one block, 5-8 in two, 16 the largest dot-product batch; 17 the smallest batch-lanes one,
# 33 and 100 with a partial last pass of 32 lanes, 64 two full passes, 128 the largest, 129 the GEMM path; C and H
# below, at and past multiples of 16 and 8 lanes, H past the 16-unit block and odd (a lone unit in the last pair),
# C past the 128-input chunk of the batch-lanes form.
SIZES = [(1, 1, 1), (1, 16, 16), (2, 17, 9), (3, 5, 33), (4, 40, 16), (5, 8, 20), (8, 31, 64), (16, 3, 7),
         (17, 12, 19), (33, 9, 5), (64, 130, 16), (100, 7, 35), (128, 16, 3), (129, 5, 6)]


def in_float64(sample):
    return samples.cast(sample, F64)


def compare_with_float64(kind, size, bias):
    sample = samples.cell_sample(kind, *size, bias=bias)
    fused = samples.cell_forward_and_backward(OPS, kind, sample)
    exact = samples.cell_forward_and_backward(OPS, kind, in_float64(sample))
    for name, expected in exact.items():
        assert fused[name].dtype == torch.float32, name
        assert_close(fused[name], expected.float(), scale=FLOAT32_CELL_AGAINST_FLOAT64_SCALE)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "B{}-C{}-H{}".format(*s))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_cell_op_matches_float64(kind, size, bias):
    compare_with_float64(kind, size, bias)


@pytest.mark.parametrize("isa", ["avx2", "none"], ids=["avx2-forced", "cpu-kernels-off"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cell_op_matches_float64_with_avx2_forced_and_with_the_cpu_kernels_off(isa, kind):
    with cpu_isa_or_skip(isa):
        for size in SIZES:
            for bias in (True, False):
                compare_with_float64(kind, size, bias)


def test_fused_cell_makes_no_library_gemm():
    """float32, B ≤ 16 (AVX2) or B ≤ 128 (AVX-512): the products are the kernel's own (the profiler sees no aten
    GEMM); beyond, two GEMMs."""
    from conftest import run_counting_aten_gemms

    def gemms(batch):
        sample = samples.cell_sample("lstm", batch, 8, 8)
        return run_counting_aten_gemms(lambda: OPS.lstm_cell_forward(**sample, save_for_backward=False))[1]

    if HAS_AVX512:
        assert gemms(128) == 0
    assert gemms(129) == 2
    if HAS_AVX2:
        with cpu_isa_or_skip("avx2"):
            assert gemms(16) == 0
            assert gemms(17) == 2


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_cell_functions_pass_gradcheck_and_gradgradcheck(kind, bias):
    sample = samples.cell_sample(kind, 3, 4, 5, bias=bias, dtype=F64, requires_grad=True)
    names = [name for name, value in sample.items() if value is not None]
    cell = getattr(fused_lstm.ops, f"{kind}_cell")

    def function(*tensors):
        return cell(**dict(sample, **dict(zip(names, tensors))))

    tensors = [sample[name] for name in names]
    assert torch.autograd.gradcheck(function, tensors)
    assert torch.autograd.gradgradcheck(function, tensors)


def cell_op_samples(kind):
    for size in [(1, 3, 4), (5, 2, 7), (20, 3, 4)]:
        for bias in (True, False):
            for save in (False, True):
                sample = samples.cell_sample(kind, *size, bias=bias, requires_grad=save)
                yield sample, save


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_opcheck_cell_ops(kind):
    forward = getattr(OPS, f"{kind}_cell_forward").default
    backward = getattr(OPS, f"{kind}_cell_backward").default
    for sample, save in cell_op_samples(kind):
        torch.library.opcheck(forward, samples.in_schema_order(forward, dict(sample, save_for_backward=save)))
        if not save:
            continue
        detached = {k: v.detach() if v is not None else None for k, v in sample.items()}
        outputs = samples.call(forward, **detached, save_for_backward=True)
        for compute_grad_input, compute_grad_weights in [(True, True), (False, True), (True, False)]:
            arguments = samples.cell_backward_arguments(kind, detached, outputs, compute_grad_input=compute_grad_input,
                                                        compute_grad_weights=compute_grad_weights)
            torch.library.opcheck(backward, samples.in_schema_order(backward, arguments))


@pytest.mark.parametrize("module_class, torch_class", [(fused_lstm.LSTM, torch.nn.LSTM), (fused_lstm.GRU, torch.nn.GRU)])
@pytest.mark.parametrize("batch", [1, 5, 20])
def test_one_step_layers_match_nn(module_class, torch_class, batch):
    """A decoder's call: T = 1 runs the fused cell (B ≤ 16) or the per-step path; outputs and gradients as nn's."""
    torch_module = torch_class(6, 9, num_layers=2)
    fused = module_class(6, 9, num_layers=2)
    fused.load_state_dict(torch_module.state_dict())
    x = torch.randn(1, batch, 6, requires_grad=True)
    results = []
    for module in (fused, torch_module):
        out = module(x)
        flat = [out[0], *(out[1] if isinstance(out[1], tuple) else (out[1],))]
        grads = torch.autograd.grad(sum((t * t).sum() for t in flat), [x, *module.parameters()])
        results.append(flat + list(grads))
    for actual, expected in zip(*results):
        assert_close(actual, expected, scale=SUMMATION_ORDER_SCALE)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_eager_cell_autograd_runs_in_cpp_and_differentiates_twice_through_the_reference(kind):
    """The eager cell's backward node is the C++ one; with create_graph=True its gradient is itself
    differentiable (handed to the ops' differentiable backward) and its second derivative the reference's."""
    sample = samples.cell_sample(kind, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    outputs = getattr(fused_lstm.ops, f"{kind}_cell")(**sample)
    h1 = outputs[0] if kind == "lstm" else outputs
    assert "OpAutograd" in h1.grad_fn.name()
    leaves = [value for value in sample.values() if value is not None]
    first = torch.autograd.grad((h1 ** 2).sum(), leaves, create_graph=True)
    second = torch.autograd.grad(sum((g ** 2).sum() for g in first), leaves)
    reference_cell = getattr(fused_lstm.reference, f"{kind}_cell")
    expected_h1 = reference_cell(**sample)
    expected_h1 = expected_h1[0] if kind == "lstm" else expected_h1
    expected_first = torch.autograd.grad((expected_h1 ** 2).sum(), leaves, create_graph=True)
    expected_second = torch.autograd.grad(sum((g ** 2).sum() for g in expected_first), leaves)
    for actual, expected in zip((*first, *second), (*expected_first, *expected_second)):
        assert_close(actual, expected, scale=SUMMATION_ORDER_SCALE)


class _Doubled(torch.nn.Module):
    """A parametrization: the weight the cell sees is twice the stored one."""

    def forward(self, weight):
        return 2 * weight


def _optimizer_step(cell, x):
    output = cell(x)
    (output[0] if isinstance(output, tuple) else output).square().sum().backward()
    torch.optim.SGD(cell.parameters(), lr=0.5).step()


def _parametrized_then_edited(cell, x):
    torch.nn.utils.parametrize.register_parametrization(cell, "weight_hh", _Doubled())
    cell(x)
    with torch.no_grad():
        cell.parametrizations.weight_hh.original.mul_(-1)


# Each kind of weight change a cell may see between two calls.
WEIGHT_CHANGES = {
    "optimizer step": _optimizer_step,
    "load_state_dict": lambda cell, x: cell.load_state_dict(type(cell)(cell.input_size, cell.hidden_size).state_dict()),
    "in-place edit": lambda cell, x: torch.no_grad()(lambda: cell.weight_ih.mul_(-0.5))(),
    "new Parameter": lambda cell, x: setattr(cell, "weight_hh", torch.nn.Parameter(torch.randn_like(cell.weight_hh))),
    "to float64 and back with an edit between": lambda cell, x: (cell.double(), cell(x.double()),
                                                                 torch.no_grad()(lambda: cell.bias_ih.add_(1))(),
                                                                 cell.float()),
    "parametrization, then its original edited": _parametrized_then_edited,
}


@pytest.mark.parametrize("cell_name", ["LSTMCell", "GRUCell"])
@pytest.mark.parametrize("batch", [1, 8, 64], ids=lambda b: f"B{b}")
def test_cells_follow_every_kind_of_weight_change_between_calls(cell_name, batch):
    """Nothing derived from the weights outlives a call (the fused cell reads them as they are in both its forms;
    no packed copy is kept): after each kind of weight change, in sequence, the next call equals nn's cell given
    the weights the fused cell now sees."""
    torch.manual_seed(0)
    cell = getattr(fused_lstm, cell_name)(12, 20)
    x = torch.randn(batch, 12)
    for change in WEIGHT_CHANGES.values():
        cell(x)  # a call with the weights as they were
        change(cell, x)
        reference = getattr(torch.nn, cell_name)(12, 20)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(reference, name).copy_(getattr(cell, name))
            actual, expected = cell(x), reference(x)
        for a, e in zip(actual if isinstance(actual, tuple) else (actual,),
                        expected if isinstance(expected, tuple) else (expected,)):
            assert_close(a, e, scale=SUMMATION_ORDER_SCALE)
