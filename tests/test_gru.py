"""fused_lstm.GRU / GRUCell against torch.nn.GRU / GRUCell and the reference: outputs and every gradient."""

import functools
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fused_lstm
import samples
from conftest import DEVICES, assert_close, gradients_counting_aten_gemms

INPUT_SIZE, HIDDEN_SIZE = 5, 7
F64 = torch.float64
OPS = torch.ops.fused_lstm


make_pair = functools.partial(samples.module_pair, "GRU", INPUT_SIZE, HIDDEN_SIZE)


def random_h0(module, batch, device, dtype=torch.float32):
    return samples.random_states(module, batch, device, dtype, requires_grad=True)[0]


def output_and_grads(module, inputs, h0, weights):
    output, h_n = module(inputs, h0)
    data = output.data if hasattr(output, "batch_sizes") else output
    leaves = ([inputs] if torch.is_tensor(inputs) else []) + ([h0] if h0 is not None else []) + list(module.parameters())
    grads = torch.autograd.grad((data * weights[0]).sum() + (h_n * weights[1]).sum(), leaves)
    return (data, h_n), grads


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,bias",
                         list(itertools.product([1, 2, 3], [False, True], [False, True], [True, False])))
def test_matches_nn_gru(device, num_layers, bidirectional, batch_first, bias):
    torch_gru, fused = make_pair(device, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                                 bias=bias)
    x = torch.randn((4, 6, INPUT_SIZE) if batch_first else (6, 4, INPUT_SIZE), device=device, requires_grad=True)
    h0 = random_h0(torch_gru, 4, device)
    expected_out, expected_h = torch_gru(x, h0)
    weights = [torch.randn_like(expected_out), torch.randn_like(expected_h)]
    expected, expected_grads = output_and_grads(torch_gru, x, h0, weights)
    actual, actual_grads = output_and_grads(fused, x, h0, weights)
    for a, e in zip(actual + actual_grads, expected + expected_grads):
        assert_close(a, e)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("bidirectional,num_layers", [(False, 1), (True, 2)])
def test_packed_sequence(device, enforce_sorted, bidirectional, num_layers):
    torch_gru, fused = make_pair(device, num_layers=num_layers, bidirectional=bidirectional)
    lengths = [6, 6, 4, 2, 1] if enforce_sorted else [2, 6, 1, 4, 6]
    x = torch.randn(6, 5, INPUT_SIZE, device=device, requires_grad=True)
    h0 = random_h0(torch_gru, 5, device)
    results = []
    weights = None
    for module in (torch_gru, fused):
        packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted)
        output, h_n = module(packed, h0)
        padded, _ = pad_packed_sequence(output)
        if weights is None:
            weights = [torch.randn_like(padded), torch.randn_like(h_n)]
        loss = (padded * weights[0]).sum() + (h_n * weights[1]).sum()
        results.append([padded, h_n, *torch.autograd.grad(loss, [x, h0, *module.parameters()])])
    for a, e in zip(results[1], results[0]):
        assert_close(a, e)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_hx", [False, True])
def test_unbatched(device, with_hx):
    torch_gru, fused = make_pair(device, num_layers=2, bidirectional=True)
    x = torch.randn(5, INPUT_SIZE, device=device)
    hx = torch.randn(4, HIDDEN_SIZE, device=device) if with_hx else None
    expected, expected_h = torch_gru(x, hx)
    actual, h_n = fused(x, hx)
    assert actual.shape == expected.shape and h_n.shape == expected_h.shape
    assert_close(actual, expected)
    assert_close(h_n, expected_h)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_gru_cell(device, batched, with_hx, bias):
    torch_cell = torch.nn.GRUCell(INPUT_SIZE, HIDDEN_SIZE, bias=bias, device=device)
    fused_cell = fused_lstm.GRUCell(INPUT_SIZE, HIDDEN_SIZE, bias=bias, device=device)
    fused_cell.load_state_dict(torch_cell.state_dict())
    batch_shape = (3,) if batched else ()
    x = torch.randn(*batch_shape, INPUT_SIZE, device=device, requires_grad=True)
    hx = torch.randn(*batch_shape, HIDDEN_SIZE, device=device, requires_grad=True) if with_hx else None
    weights = torch.randn(*batch_shape, HIDDEN_SIZE, device=device)
    results = []
    for cell in (torch_cell, fused_cell):
        h = cell(x, hx)
        leaves = [x, *([hx] if with_hx else []), *cell.parameters()]
        results.append([h, *torch.autograd.grad((h * weights).sum(), leaves)])
    for a, e in zip(results[1], results[0]):
        assert a.shape == e.shape
        assert_close(a, e)
    assert_close(results[1][0], fused_lstm.run(fused_cell, x, hx))


@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference_float64(device):
    fused = fused_lstm.GRU(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True, device=device, dtype=F64)
    x = torch.randn(8, 3, INPUT_SIZE, device=device, dtype=F64)
    h0 = random_h0(fused, 3, device, F64)
    out, h_n = fused(x, h0)
    ref_out, ref_h = fused_lstm.run(fused, x, h0)
    assert_close(out, ref_out)
    assert_close(h_n, ref_h)


def gru_sample(device, batch_sizes=(3, 3, 2, 1), bias=True, hidden=4, requires_grad=True):
    """samples.gru_layer_sample in float64 on `device`: packed rows for the given per-step batch sizes."""
    return samples.to_device(samples.gru_layer_sample(batch_sizes=batch_sizes, input_size=3, hidden=hidden, bias=bias,
                                                      dtype=F64, requires_grad=requires_grad), device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", [dict(), dict(bias=False), dict(batch_sizes=(2, 2, 2)), dict(batch_sizes=(5, 2, 1))])
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_and_gradgradcheck(device, kind, reverse):
    sample = gru_sample(device, **kind)
    names = [k for k, v in sample.items() if torch.is_tensor(v) and v.requires_grad]

    def layer(*tensors):
        return fused_lstm.ops.gru_layer(**dict(sample, **dict(zip(names, tensors))), reverse=reverse)

    tensors = [sample[k] for k in names]
    assert torch.autograd.gradcheck(layer, tensors)
    assert torch.autograd.gradgradcheck(layer, tensors)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    forward_op, backward_op = OPS.gru_layer_forward.default, OPS.gru_layer_backward.default
    for kind in [dict(), dict(bias=False), dict(batch_sizes=(4,)), dict(batch_sizes=(5, 3, 3, 1))]:
        for reverse in (False, True):
            for save in (False, True):
                sample = dict(gru_sample(device, requires_grad=save, **kind), reverse=reverse, save_for_backward=save)
                torch.library.opcheck(forward_op, samples.in_schema_order(forward_op, sample))
            sample = gru_sample(device, requires_grad=False, **kind)
            forward = samples.call(forward_op, **sample, reverse=reverse, save_for_backward=True)
            arguments = samples.gru_backward_arguments(sample, forward, reverse)
            torch.library.opcheck(backward_op, samples.in_schema_order(backward_op, arguments))
            full = samples.call(backward_op, **arguments)
            for skip in samples.GRADIENT_SKIPS:
                torch.library.opcheck(backward_op, samples.in_schema_order(backward_op, dict(arguments, **skip)))
                partial = samples.call(backward_op, **arguments, **skip)
                for name, value in partial.items():
                    computed = samples.is_computed(name, skip)
                    assert torch.equal(value, full[name]) if computed else value.numel() == 0, (skip, name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("frozen", ["input", "weights"])
def test_gradients_not_asked_for_are_not_computed(device, frozen):
    """As for the LSTM: a data input or frozen weights; the gradients asked for match nn.GRU's."""
    torch_gru, fused = make_pair(device, num_layers=2, bidirectional=True)
    x = torch.randn(6, 5, torch_gru.input_size, device=device, requires_grad=frozen == "weights")
    h0 = torch.randn(4, 5, torch_gru.hidden_size, device=device, requires_grad=True)
    grads, gemms = gradients_counting_aten_gemms((torch_gru, fused), frozen == "input", (x, h0),
                                                 lambda module: module(x, h0)[0])
    for actual, expected in zip(grads[1], grads[0]):
        assert_close(actual, expected)
    # What matters: the GEMMs of the gradients not asked for are skipped (fewer than when all are asked for).
    x_all = x.detach().requires_grad_()
    _, all_gemms = gradients_counting_aten_gemms((fused,), True, (x_all, h0), lambda module: module(x_all, h0)[0])
    assert gemms[1] < all_gemms[0], (gemms, all_gemms)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    fused = fused_lstm.GRU(4, 6, num_layers=2, bidirectional=True, device=device)
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    x = torch.randn(5, 3, 4, device=device, requires_grad=True)
    out, h_n = compiled(x)
    expected, expected_h = fused(x)
    assert_close(out, expected)
    assert_close(h_n, expected_h)
    grads = torch.autograd.grad(out.sum() + h_n.sum(), [x, *fused.parameters()])
    expected_grads = torch.autograd.grad(expected.sum() + expected_h.sum(), [x, *fused.parameters()])
    for a, e in zip(grads, expected_grads):
        assert_close(a, e)


def test_state_dict_both_ways_and_repr():
    torch_gru = torch.nn.GRU(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True)
    fused = fused_lstm.GRU(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True)
    assert list(fused.state_dict()) == list(torch_gru.state_dict())
    fused.load_state_dict(torch_gru.state_dict(), strict=True)
    torch_gru.load_state_dict(fused.state_dict(), strict=True)
    assert repr(fused).replace("fused_lstm.modules.", "") == repr(torch_gru)
    torch.nn.GRUCell(INPUT_SIZE, HIDDEN_SIZE).load_state_dict(fused_lstm.GRUCell(INPUT_SIZE, HIDDEN_SIZE).state_dict())


def test_dropout_between_layers():
    torch_gru, fused = make_pair("cpu", num_layers=2, dropout=1.0)
    x = torch.randn(5, 3, INPUT_SIZE)
    assert_close(fused(x)[0], torch_gru(x)[0])


def test_gru_runs_on_fused_ops(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch's own GRU kernel was called")

    monkeypatch.setattr(torch._VF, "gru", refuse)
    monkeypatch.setattr(torch._VF, "gru_cell", refuse)
    fused = fused_lstm.GRU(INPUT_SIZE, HIDDEN_SIZE, num_layers=2)
    out, _ = fused(torch.randn(3, 2, INPUT_SIZE))
    out.sum().backward()
    fused_lstm.GRUCell(INPUT_SIZE, HIDDEN_SIZE)(torch.randn(2, INPUT_SIZE))
