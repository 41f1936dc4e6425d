"""fused_lstm.LSTM against torch.nn.LSTM and the package's reference: outputs and every gradient."""

import copy
import functools
import io
import itertools
import pickle

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fused_lstm
import samples
from conftest import DEVICES, LONG_SEQUENCE_SCALE, assert_close, gradients_counting_aten_gemms

INPUT_SIZE, HIDDEN_SIZE, PROJ_SIZE = 5, 7, 3


# An nn.LSTM and a fused_lstm.LSTM with the same (random) weights; random initial states that need gradients.
make_pair = functools.partial(samples.module_pair, "LSTM", INPUT_SIZE, HIDDEN_SIZE)
random_state = functools.partial(samples.random_states, requires_grad=True)


def run_and_grad(module, inputs, hx, weights_out):
    """Forward, then gradients of a random-weighted loss w.r.t. inputs, states and all parameters."""
    output, (h_n, c_n) = module(inputs, hx)
    data = output.data if hasattr(output, "batch_sizes") else output
    loss = (data * weights_out[0]).sum() + (h_n * weights_out[1]).sum() + (c_n * weights_out[2]).sum()
    leaves = [t for t in ([inputs] if torch.is_tensor(inputs) else []) + list(hx) + list(module.parameters())]
    grads = torch.autograd.grad(loss, leaves)
    return (data, h_n, c_n), grads


CONFIGS = list(itertools.product([1, 2, 3], [False, True], [False, True], [True, False], [0, PROJ_SIZE]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,bias,proj_size", CONFIGS)
def test_matches_nn_lstm(device, num_layers, bidirectional, batch_first, bias, proj_size):
    dtype = torch.float32
    torch_lstm, fused = make_pair(device, dtype, num_layers=num_layers, bidirectional=bidirectional,
                                  batch_first=batch_first, bias=bias, proj_size=proj_size)
    steps, batch = 6, 4
    shape = (batch, steps, INPUT_SIZE) if batch_first else (steps, batch, INPUT_SIZE)
    x = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
    hx = random_state(torch_lstm, batch, device, dtype)
    expected_out, _ = torch_lstm(x, hx)
    out_weights = [torch.randn_like(expected_out), torch.randn_like(hx[0]), torch.randn_like(hx[1])]
    expected, expected_grads = run_and_grad(torch_lstm, x, hx, out_weights)
    actual, actual_grads = run_and_grad(fused, x, hx, out_weights)
    for a, e in zip(actual, expected):
        assert_close(a, e)
    for a, e in zip(actual_grads, expected_grads):
        assert_close(a, e)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bidirectional,proj_size,num_layers", [(False, 0, 1), (True, PROJ_SIZE, 2), (True, 0, 2)])
def test_matches_reference_float64(device, bidirectional, proj_size, num_layers):
    fused = fused_lstm.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=num_layers, bidirectional=bidirectional,
                            proj_size=proj_size, device=device, dtype=torch.float64)
    x = torch.randn(9, 3, INPUT_SIZE, device=device, dtype=torch.float64, requires_grad=True)
    hx = random_state(fused, 3, device, torch.float64)
    out, (h_n, c_n) = fused(x, hx)
    ref_out, (ref_h, ref_c) = fused_lstm.run(fused, x, hx)
    for a, e in [(out, ref_out), (h_n, ref_h), (c_n, ref_c)]:
        assert_close(a, e)
    weights = torch.randn_like(out)
    leaves = [x, *hx, *fused.parameters()]
    grads = torch.autograd.grad((out * weights).sum() + h_n.sum() + c_n.sum(), leaves)
    ref_grads = torch.autograd.grad((ref_out * weights).sum() + ref_h.sum() + ref_c.sum(), leaves)
    for a, e in zip(grads, ref_grads):
        assert_close(a, e)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("bidirectional,proj_size,num_layers", [(False, 0, 1), (True, 0, 2), (True, PROJ_SIZE, 2)])
@pytest.mark.parametrize("with_hx", [False, True])
def test_packed_sequence(device, enforce_sorted, bidirectional, proj_size, num_layers, with_hx):
    dtype = torch.float32
    torch_lstm, fused = make_pair(device, dtype, num_layers=num_layers, bidirectional=bidirectional,
                                  proj_size=proj_size)
    lengths = [7, 7, 5, 2, 1] if enforce_sorted else [2, 7, 1, 5, 7]
    x = torch.randn(max(lengths), len(lengths), INPUT_SIZE, device=device, dtype=dtype, requires_grad=True)
    hx = random_state(torch_lstm, len(lengths), device, dtype) if with_hx else None

    def run(module):
        packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted)
        output, (h_n, c_n) = module(packed, hx)
        assert output.batch_sizes.tolist() == packed.batch_sizes.tolist()
        padded, out_lengths = pad_packed_sequence(output)
        assert out_lengths.tolist() == lengths
        loss = (padded * weights[0]).sum() + (h_n * weights[1]).sum() + (c_n * weights[2]).sum()
        leaves = [x, *(hx or ()), *module.parameters()]
        return (padded, h_n, c_n), torch.autograd.grad(loss, leaves)

    reference_out, (reference_h, reference_c) = torch_lstm(pack_padded_sequence(
        x, torch.tensor(lengths), enforce_sorted=enforce_sorted), hx)
    padded_ref, _ = pad_packed_sequence(reference_out)
    weights = [torch.randn_like(padded_ref), torch.randn_like(reference_h), torch.randn_like(reference_c)]
    expected, expected_grads = run(torch_lstm)
    actual, actual_grads = run(fused)
    for a, e in zip(actual + actual_grads, expected + expected_grads):
        assert_close(a, e)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
def test_unbatched_input(device, batch_first, with_hx):
    torch_lstm, fused = make_pair(device, torch.float32, num_layers=2, bidirectional=True, batch_first=batch_first)
    x = torch.randn(6, INPUT_SIZE, device=device)
    hx = None
    if with_hx:
        hx = (torch.randn(4, HIDDEN_SIZE, device=device), torch.randn(4, HIDDEN_SIZE, device=device))
    expected_out, (expected_h, expected_c) = torch_lstm(x, hx)
    out, (h_n, c_n) = fused(x, hx)
    assert out.shape == expected_out.shape and h_n.shape == expected_h.shape
    for a, e in [(out, expected_out), (h_n, expected_h), (c_n, expected_c)]:
        assert_close(a, e)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell(device, batched, with_hx, bias):
    torch_cell = torch.nn.LSTMCell(INPUT_SIZE, HIDDEN_SIZE, bias=bias, device=device)
    fused_cell = fused_lstm.LSTMCell(INPUT_SIZE, HIDDEN_SIZE, bias=bias, device=device)
    fused_cell.load_state_dict(torch_cell.state_dict())
    batch_shape = (3,) if batched else ()
    x = torch.randn(*batch_shape, INPUT_SIZE, device=device, requires_grad=True)
    hx = None
    if with_hx:
        hx = tuple(torch.randn(*batch_shape, HIDDEN_SIZE, device=device, requires_grad=True) for _ in range(2))
    w_h, w_c = torch.randn(*batch_shape, HIDDEN_SIZE, device=device), torch.randn(*batch_shape, HIDDEN_SIZE,
                                                                                    device=device)
    results = []
    for cell in (torch_cell, fused_cell):
        h, c = cell(x, hx)
        leaves = [x, *(hx or ()), *cell.parameters()]
        results.append(((h, c), torch.autograd.grad((h * w_h).sum() + (c * w_c).sum(), leaves)))
    (expected, expected_grads), (actual, actual_grads) = results
    for a, e in zip(actual + actual_grads, expected + expected_grads):
        assert a.shape == e.shape
        assert_close(a, e)
    ref_h, ref_c = fused_lstm.run(fused_cell, x, hx)
    assert_close(actual[0], ref_h)
    assert_close(actual[1], ref_c)


@pytest.mark.parametrize("device", DEVICES)
def test_long_sequence_stays_close(device):
    torch_lstm, fused = make_pair(device, torch.float32)
    x = torch.randn(2000, 2, INPUT_SIZE, device=device)
    with torch.no_grad():
        expected, (expected_h, expected_c) = torch_lstm(x)
        actual, (h_n, c_n) = fused(x)
    for a, e in [(actual, expected), (h_n, expected_h), (c_n, expected_c)]:
        assert_close(a, e, scale=LONG_SEQUENCE_SCALE)


@pytest.mark.parametrize("device", DEVICES)
def test_dropout_between_layers(device):
    # dropout=1 zeroes the input of the second layer: both implementations must then agree exactly,
    # which proves the dropout sits between the layers (and only in training mode).
    torch_lstm, fused = make_pair(device, torch.float32, num_layers=2, dropout=1.0)
    x = torch.randn(5, 3, INPUT_SIZE, device=device)
    for training in (True, False):
        torch_lstm.train(training)
        fused.train(training)
        expected, _ = torch_lstm(x)
        actual, _ = fused(x)
        assert_close(actual, expected)
    fused.train()
    with_dropout, _ = fused(x)
    fused.eval()
    without_dropout, _ = fused(x)
    assert not torch.allclose(with_dropout, without_dropout)


@pytest.mark.parametrize("device", DEVICES)
def test_dropout_is_random_in_training(device):
    fused = fused_lstm.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, dropout=0.5, device=device)
    x = torch.randn(5, 3, INPUT_SIZE, device=device)
    first, _ = fused(x)
    second, _ = fused(x)
    assert not torch.equal(first, second)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    torch_lstm, fused = make_pair(device, torch.float32, num_layers=2)
    base = torch.randn(3, 8, 2 * INPUT_SIZE, device=device)
    x = base.transpose(0, 1)[:, :, ::2]  # time-major view with strides in every dimension
    h0 = torch.randn(3, 2, HIDDEN_SIZE, device=device).transpose(0, 1)
    c0 = torch.randn(3, 2, HIDDEN_SIZE, device=device).transpose(0, 1)
    assert not x.is_contiguous() and not h0.is_contiguous()
    expected, (expected_h, expected_c) = torch_lstm(x, (h0, c0))
    actual, (h_n, c_n) = fused(x, (h0, c0))
    for a, e in [(actual, expected), (h_n, expected_h), (c_n, expected_c)]:
        assert_close(a, e)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_empty_batch(device, batch_first):
    torch_lstm, fused = make_pair(device, torch.float32, batch_first=batch_first, bidirectional=True)
    x = torch.randn((0, 4, INPUT_SIZE) if batch_first else (4, 0, INPUT_SIZE), device=device, requires_grad=True)
    expected, (expected_h, expected_c) = torch_lstm(x)
    actual, (h_n, c_n) = fused(x)
    assert actual.shape == expected.shape and h_n.shape == expected_h.shape and c_n.shape == expected_c.shape
    actual.sum().backward()
    assert x.grad.shape == x.shape


def test_state_dict_both_ways():
    torch_lstm = torch.nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True, proj_size=PROJ_SIZE)
    fused = fused_lstm.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True, proj_size=PROJ_SIZE)
    assert list(fused.state_dict().keys()) == list(torch_lstm.state_dict().keys())
    assert [p.shape for p in fused.parameters()] == [p.shape for p in torch_lstm.parameters()]
    fused.load_state_dict(torch_lstm.state_dict(), strict=True)
    other = torch.nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True, proj_size=PROJ_SIZE)
    other.load_state_dict(fused.state_dict(), strict=True)
    for a, b in zip(other.parameters(), torch_lstm.parameters()):
        assert torch.equal(a, b)
    cell = fused_lstm.LSTMCell(INPUT_SIZE, HIDDEN_SIZE)
    torch_cell = torch.nn.LSTMCell(INPUT_SIZE, HIDDEN_SIZE)
    cell.load_state_dict(torch_cell.state_dict(), strict=True)
    torch_cell.load_state_dict(cell.state_dict(), strict=True)


def test_default_init_matches_nn_lstm_distribution():
    fused = fused_lstm.LSTM(INPUT_SIZE, 64)
    bound = 1 / 64 ** 0.5
    for parameter in fused.parameters():
        assert parameter.abs().max() <= bound
        assert parameter.abs().max() > 0.9 * bound  # uniform over the whole range, not a narrower one
    assert repr(fused).replace("fused_lstm.modules.", "") == repr(torch.nn.LSTM(INPUT_SIZE, 64))


def test_save_load_deepcopy_pickle(tmp_path):
    fused = fused_lstm.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True)
    x = torch.randn(4, 2, INPUT_SIZE)
    expected, _ = fused(x)
    path = tmp_path / "model.pt"
    torch.save(fused, path)
    copies = [torch.load(path, weights_only=False), copy.deepcopy(fused), pickle.loads(pickle.dumps(fused))]
    buffer = io.BytesIO()
    torch.save(fused.state_dict(), buffer)
    buffer.seek(0)
    from_state = fused_lstm.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True)
    from_state.load_state_dict(torch.load(buffer))
    for clone in copies + [from_state]:
        actual, _ = clone(x)
        assert torch.equal(actual, expected)


def test_flatten_parameters_and_attributes():
    fused = fused_lstm.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2)
    torch_lstm = torch.nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2)
    fused.flatten_parameters()
    assert fused._flat_weights_names == torch_lstm._flat_weights_names
    assert [[w.shape for w in layer] for layer in fused.all_weights] == \
        [[w.shape for w in layer] for layer in torch_lstm.all_weights]


def test_runs_on_fused_ops_not_on_torch_lstm(monkeypatch):
    """No silent fallback: with PyTorch's LSTM kernels disabled the module still runs, on our op."""
    def refuse(*args, **kwargs):
        raise AssertionError("torch's own LSTM kernel was called")

    monkeypatch.setattr(torch._VF, "lstm", refuse)
    monkeypatch.setattr(torch._VF, "lstm_cell", refuse)
    # Calls with gradients reach the ops from C++ (csrc/eager_autograd.cpp): the profiler sees them.
    def fused_ops(run):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            run().sum().backward()
        return [event.name for event in profile.events() if event.name.startswith("fused_lstm::")]

    fused = fused_lstm.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True)
    assert fused_ops(lambda: fused(torch.randn(3, 2, INPUT_SIZE))[0]).count("fused_lstm::lstm_layer_forward") == 4
    cell = fused_lstm.LSTMCell(INPUT_SIZE, HIDDEN_SIZE)
    assert fused_ops(lambda: cell(torch.randn(2, INPUT_SIZE))[0]) == ["fused_lstm::lstm_cell_forward",
                                                                       "fused_lstm::lstm_cell_backward"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("frozen", ["input", "weights", "input_and_weights"])
def test_gradients_not_asked_for_are_not_computed(device, frozen):
    """A first layer over data (the input needs no gradient) or a frozen LSTM (its weights need none): the
    gradients that are asked for match nn.LSTM's, and the backward skips the GEMMs of the others."""
    torch_lstm, fused = make_pair(device, torch.float32, num_layers=2, bidirectional=True)
    # Batch 5: the CPU whole recurrence projects the input inside its steps, so the forward makes no GEMM.
    x = torch.randn(6, 5, torch_lstm.input_size, device=device)
    h0 = torch.randn(4, 5, torch_lstm.hidden_size, device=device, requires_grad=True)
    c0 = torch.randn(4, 5, torch_lstm.hidden_size, device=device)
    x.requires_grad_(frozen == "weights")
    grads, gemms = gradients_counting_aten_gemms((torch_lstm, fused), frozen == "input", (x, h0),
                                                 lambda module: module(x, (h0, c0))[0])
    for actual, expected in zip(grads[1], grads[0]):
        assert_close(actual, expected)
    # What matters: every GEMM of a gradient not asked for is skipped (fewer than when all are asked for), and
    # the CPU whole recurrence makes none per step (at most the 5 after the loop per layer and direction: dL/dh0,
    # dx, dW_ih, dW_hh over the output rows and for h0).
    x_all = x.detach().requires_grad_()
    _, all_gemms = gradients_counting_aten_gemms((fused,), True, (x_all, h0), lambda module: module(x_all, (h0, c0))[0])
    assert gemms[1] < all_gemms[0], (gemms, all_gemms)
    with fused_lstm.recording_paths() as paths:
        fused(x, (h0, c0))
    if device == "cpu" and all(path["backward"].startswith("whole recurrence") for path in paths):
        assert gemms[1] <= 5 * len(paths), gemms
