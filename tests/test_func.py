"""torch.func and forward-mode AD over the fused modules and ops, against torch.nn's modules in float64 (and
float32): grad, jacrev, jvp, vmap (the vmapped dimension folded into the batch: one op call, no per-sample
loop, where the weights are shared), vmap of grad (per-sample gradients), vmap over weights (ensembles,
looped), hessian, torch.autograd.forward_ad; the forward derivatives of the ops against central differences."""

import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call, grad, hessian, jacrev, jvp, vmap
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fused_lstm
import samples
from conftest import CENTRAL_DIFFERENCES_SCALE, assert_close

F64 = torch.float64
# (fused module, torch.nn module, constructor arguments, one sample's input shape)
MODULES = {
    "LSTM": (fused_lstm.LSTM, torch.nn.LSTM, dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True),
             (5, 2, 3)),
    "LSTM-proj": (fused_lstm.LSTM, torch.nn.LSTM, dict(input_size=3, hidden_size=5, proj_size=2), (4, 2, 3)),
    "GRU": (fused_lstm.GRU, torch.nn.GRU, dict(input_size=3, hidden_size=4, batch_first=True), (2, 5, 3)),
    "LSTMCell": (fused_lstm.LSTMCell, torch.nn.LSTMCell, dict(input_size=3, hidden_size=4), (2, 3)),
    "GRUCell": (fused_lstm.GRUCell, torch.nn.GRUCell, dict(input_size=3, hidden_size=4), (2, 3)),
}


def pair(kind, dtype=F64):
    fused_class, torch_class, arguments, shape = MODULES[kind]
    torch_module = torch_class(**arguments).to(dtype)
    fused = fused_class(**arguments).to(dtype)
    fused.load_state_dict(torch_module.state_dict())
    return fused, torch_module, shape


def first_output(module, parameters, x):
    out = functional_call(module, parameters, (x,))
    return out[0] if isinstance(out, tuple) else out


def loss(module, parameters, x):
    return first_output(module, parameters, x).pow(2).sum()


def both(kind, function, dtype=F64):
    """function(module, parameters, sample input) for the fused module and torch.nn's, same weights."""
    fused, torch_module, shape = pair(kind, dtype)
    x = torch.randn(*shape, dtype=dtype)
    return [function(module, dict(module.named_parameters()), x) for module in (fused, torch_module)]


def assert_trees_close(actual, expected, **kwargs):
    if isinstance(actual, dict):
        assert actual.keys() == expected.keys()
        for key in actual:
            assert_close(actual[key], expected[key], **kwargs)
    else:
        assert_close(actual, expected, **kwargs)


@pytest.fixture(autouse=True)
def no_per_sample_fallback():
    """functorch's per-sample fallback warns ("performance drop"); the ops have their own vmap rules."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*performance drop.*")
        yield


@pytest.mark.parametrize("kind", MODULES)
def test_grad_matches_nn(kind):
    ours, theirs = both(kind, lambda m, p, x: grad(lambda p: loss(m, p, x))(p))
    assert_trees_close(ours, theirs)


@pytest.mark.parametrize("kind", MODULES)
def test_jacrev_matches_nn(kind):
    ours, theirs = both(kind, lambda m, p, x: jacrev(lambda x: first_output(m, p, x))(x))
    assert_trees_close(ours, theirs)


@pytest.mark.parametrize("kind", MODULES)
def test_jvp_in_the_input_and_in_the_weights_matches_nn(kind):
    def tangents(m, p, x):
        along_input = jvp(lambda x: first_output(m, p, x), (x,), (torch.cos(x),))[1]
        along_weights = jvp(lambda p: first_output(m, p, x), (p,), ({k: torch.sin(v) for k, v in p.items()},))[1]
        return along_input, along_weights

    (ours_x, ours_w), (theirs_x, theirs_w) = both(kind, tangents)
    assert_close(ours_x, theirs_x)
    assert_close(ours_w, theirs_w)


@pytest.mark.parametrize("kind", MODULES)
def test_forward_mode_ad_matches_nn(kind):
    def tangent(m, p, x):
        with fwAD.dual_level():
            out = m(fwAD.make_dual(x, torch.cos(x)))
            out = out[0] if isinstance(out, tuple) else out
            return fwAD.unpack_dual(out).tangent

    ours, theirs = both(kind, tangent)
    assert_close(ours, theirs)


@pytest.mark.parametrize("kind", MODULES)
@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=str)
def test_vmap_matches_the_samples_one_by_one(kind, dtype):
    fused, torch_module, shape = pair(kind, dtype)
    xs = torch.randn(3, *shape, dtype=dtype)
    parameters = dict(fused.named_parameters())
    expected = torch.stack([torch_module(x)[0] if isinstance(torch_module(x), tuple) else torch_module(x) for x in xs])
    assert_close(vmap(lambda x: first_output(fused, parameters, x))(xs), expected)


@pytest.mark.parametrize("kind", MODULES)
def test_per_sample_gradients_match_the_samples_one_by_one(kind):
    """vmap(grad): per-sample gradients of the input and of every weight (the weights are shared)."""
    fused, torch_module, shape = pair(kind)
    xs = torch.randn(3, *shape, dtype=F64)
    ours = vmap(lambda x: grad(lambda p, x: loss(fused, p, x), argnums=(0, 1))(dict(fused.named_parameters()), x))(xs)
    theirs = [grad(lambda p, x: loss(torch_module, p, x), argnums=(0, 1))(dict(torch_module.named_parameters()), x)
              for x in xs]
    assert_close(ours[1], torch.stack([t[1] for t in theirs]))
    for name in ours[0]:
        assert_close(ours[0][name], torch.stack([t[0][name] for t in theirs]))


@pytest.mark.parametrize("kind", MODULES)
def test_vmap_over_weights_runs_an_ensemble(kind):
    """Vmapped weights cannot fold into the batch: the op runs once per ensemble member."""
    fused, torch_module, shape = pair(kind)
    xs = torch.randn(3, *shape, dtype=F64)
    weights = {k: torch.stack([v, 1.1 * v, 0.9 * v]) for k, v in fused.named_parameters()}
    ours = vmap(lambda p, x: first_output(fused, p, x))(weights, xs)
    theirs = torch.stack([first_output(torch_module, {k: v[i] for k, v in weights.items()}, xs[i]) for i in range(3)])
    assert_close(ours, theirs)


@pytest.mark.parametrize("kind", ["LSTM", "GRUCell"])
def test_hessian_matches_nn(kind):
    ours, theirs = both(kind, lambda m, p, x: hessian(lambda x: loss(m, p, x))(x))
    assert_close(ours, theirs)


def count_calls(monkeypatch, name):
    calls = []
    original = getattr(torch.ops.fused_lstm, name)
    monkeypatch.setattr(torch.ops.fused_lstm, name, lambda *args: calls.append(1) or original(*args), raising=False)
    return calls


@pytest.mark.parametrize("kind, op", [("LSTM", "lstm_layer_forward"), ("GRU", "gru_layer_forward"),
                                      ("LSTMCell", "lstm_cell_forward"), ("GRUCell", "gru_cell_forward")])
def test_vmap_folds_the_samples_into_one_call(monkeypatch, kind, op):
    fused, _, shape = pair(kind)
    calls = count_calls(monkeypatch, op)
    parameters = dict(fused.named_parameters())
    vmap(lambda x: first_output(fused, parameters, x))(torch.randn(5, *shape, dtype=F64))
    layers = fused.num_layers * (2 if fused.bidirectional else 1) if hasattr(fused, "num_layers") else 1
    assert len(calls) == layers


def test_vmap_over_packed_sequences_folds_each_step():
    """Packed rows of unequal lengths: sample v of sequence b becomes row b·V + v at every step."""
    fused, torch_module, _ = pair("LSTM")
    xs = torch.randn(4, 5, 3, 3, dtype=F64)
    packed = [pack_padded_sequence(x, [5, 3, 2]) for x in xs]
    batch_sizes = packed[0].batch_sizes

    def run(module, data):
        return module(PackedSequence(data, batch_sizes))[0].data

    expected = torch.stack([run(torch_module, p.data) for p in packed])
    assert_close(vmap(lambda data: run(fused, data))(torch.stack([p.data for p in packed])), expected)


# Forward derivatives of the ops themselves against central differences, in float64.
OP_CASES = {
    "lstm layer, packed, reverse, projected": (samples.lstm_layer_sample, fused_lstm.ops.lstm_layer,
                                               dict(lengths=[4, 3, 3, 1, 1], proj=3), dict(reverse=True)),
    "lstm layer, padded, no bias": (samples.lstm_layer_sample, fused_lstm.ops.lstm_layer, dict(bias=False), {}),
    "gru layer, packed, reverse": (samples.gru_layer_sample, fused_lstm.ops.gru_layer, dict(lengths=[4, 3, 3, 1, 1]),
                                   dict(reverse=True)),
}


def central_difference(function, arguments, tangents, eps=1e-6):
    plus = function(**{k: v + eps * tangents[k] if k in tangents else v for k, v in arguments.items()})
    minus = function(**{k: v - eps * tangents[k] if k in tangents else v for k, v in arguments.items()})
    return [(p - m) / (2 * eps) for p, m in zip(plus, minus)]


@pytest.mark.parametrize("case", OP_CASES)
def test_forward_derivative_of_the_ops_matches_central_differences(case):
    sample_of, layer, sample_arguments, call_arguments = OP_CASES[case]
    sample = samples.cast(sample_of(hidden=6, dtype=F64, **sample_arguments), F64)
    generator = torch.Generator().manual_seed(5)
    tangents = {name: torch.randn(value.shape, generator=generator, dtype=F64) for name, value in sample.items()
                if torch.is_tensor(value) and value.is_floating_point()}

    def function(**arguments):
        return layer(**arguments, **call_arguments)

    with fwAD.dual_level():
        duals = {k: fwAD.make_dual(v, tangents[k]) if k in tangents else v for k, v in sample.items()}
        forward_tangents = [fwAD.unpack_dual(out).tangent for out in function(**duals)]
    for actual, expected in zip(forward_tangents, central_difference(function, sample, tangents)):
        assert_close(actual, expected, scale=CENTRAL_DIFFERENCES_SCALE)


def test_cell_forward_derivatives_match_central_differences():
    for kind, cell in (("lstm", fused_lstm.ops.lstm_cell), ("gru", fused_lstm.ops.gru_cell)):
        sample = samples.cell_sample(kind, batch=3, input_size=5, hidden=4, dtype=F64, seed=3)
        generator = torch.Generator().manual_seed(5)
        tangents = {k: torch.randn(v.shape, generator=generator, dtype=F64) for k, v in sample.items()}

        def function(**arguments):
            out = cell(**arguments)
            return out if isinstance(out, tuple) else (out,)

        with fwAD.dual_level():
            outputs = function(**{k: fwAD.make_dual(v, tangents[k]) for k, v in sample.items()})
            forward_tangents = [fwAD.unpack_dual(out).tangent for out in outputs]
        for actual, expected in zip(forward_tangents, central_difference(function, sample, tangents)):
            assert_close(actual, expected, scale=CENTRAL_DIFFERENCES_SCALE)
