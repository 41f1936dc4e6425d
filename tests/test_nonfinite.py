"""Non-finite and extreme values: NaN and ±Inf in the input and the states give NaN exactly where
nn.LSTM gives NaN and never leak into other batch rows (a property test); extreme finite and infinite gate
pre-activations and cell states, saturated gates, deterministically. See docs/robustness.md; tests/fuzzing.py
says how to run a longer, random exploration.
"""

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from conftest import DEVICES, assert_close_nan, recurrence_scale
from fuzzing import FLOAT_DTYPES, fuzz, lstm_configs, make_pair, module_kwargs, random_states, record_events

pytestmark = pytest.mark.usefixtures("fuzz_intra_op_threads")


# ---------------------------------------------------------------------------------------------------
# Property: NaN/Inf inputs give NaN exactly where nn.LSTM gives NaN, and never leak into other batch rows


def poison(tensor, positions, values):
    """Writes values[i] at index positions[i] of `tensor` (in place)."""
    for position, value in zip(positions, values):
        tensor[position] = value


@st.composite
def poison_plans(draw, shape, rows, batch_dim, allowed):
    """Up to 3 non-finite values at random positions of `shape` whose batch index is in `rows`."""
    if not rows:
        return [], []
    count = draw(st.integers(0, 3))
    positions, values = [], []
    for _ in range(count):
        position = [draw(st.integers(0, size - 1)) for size in shape]
        position[batch_dim] = draw(st.sampled_from(sorted(rows)))
        positions.append(tuple(position))
        values.append(draw(st.sampled_from(allowed)))
    return positions, values


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@fuzz(150)
@given(config=lstm_configs(max_steps=12, max_batch=6, max_size=12), data=st.data(), packed=st.booleans(),
       inf_allowed=st.booleans())
def test_fuzz_nonfinite_inputs(device, dtype, config, data, packed, inf_allowed):
    """NaN (and ±Inf) in the input, h0 and c0 of a random subset of batch rows. Outputs and every gradient:
    NaN positions equal to nn.LSTM's, values close elsewhere. Both implementations: rows without a
    non-finite value stay finite, outputs and input/state gradients."""
    torch.manual_seed(config["seed"])
    steps = config["steps"]
    batch = max(config["batch"], 1)
    config = dict(config, dtype=dtype, batch=batch, batch_first=False)
    record_events(config, packed=packed, inf=inf_allowed)
    torch_lstm, fused = make_pair(config["input_size"], config["hidden_size"], device, dtype, **module_kwargs(config))
    generator = torch.Generator().manual_seed(config["seed"])
    x = torch.randn(steps, batch, config["input_size"], generator=generator, dtype=dtype)
    h0, c0 = [s.cpu() for s in random_states(config, batch, "cpu", generator)]
    poisoned = set(data.draw(st.lists(st.integers(0, batch - 1), max_size=batch, unique=True), label="rows"))
    allowed = [NAN, INF, -INF] if inf_allowed else [NAN]
    for tensor, batch_dim, values in ((x, 1, allowed), (h0, 1, allowed), (c0, 1, allowed)):
        poison(tensor, *data.draw(poison_plans(tuple(tensor.shape), poisoned, batch_dim, values)))
    lengths = None
    if packed:
        lengths = data.draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch), label="lengths")
        lengths[0] = steps
    x, h0, c0 = x.to(device), h0.to(device), c0.to(device)

    results, clean = [], sorted(set(range(batch)) - poisoned)
    for module in (torch_lstm, fused):
        leaves = [x.clone().requires_grad_(), h0.clone().requires_grad_(), c0.clone().requires_grad_()]
        inputs = leaves[0]
        if packed:
            inputs = pack_padded_sequence(inputs, torch.tensor(lengths), enforce_sorted=False)
        output, (h_n, c_n) = module(inputs, (leaves[1], leaves[2]))
        if packed:
            output, _ = pad_packed_sequence(output, total_length=steps)
        outs = [output, h_n, c_n]
        weights = torch.Generator().manual_seed(config["seed"] + 1)
        loss = sum((t * torch.randn(t.shape, generator=weights, dtype=dtype).to(device)).sum() for t in outs)
        grads = torch.autograd.grad(loss, [*leaves, *module.parameters()])
        for name, t in zip(["output", "h_n", "c_n", "grad x", "grad h0", "grad c0"], outs + list(grads[:3])):
            assert torch.isfinite(t[:, clean]).all(), \
                f"{type(module).__module__}: a non-finite value leaked into clean batch rows {clean} of {name}"
        results.append(outs + list(grads))
    names = ["output", "h_n", "c_n", "grad x", "grad h0", "grad c0"] + \
        [f"grad {name}" for name, _ in fused.named_parameters()]
    scale = recurrence_scale(steps, batch, dtype, config["num_layers"])
    for name, a, e in zip(names, results[1], results[0]):
        assert_close_nan(a, e, scale=scale, what=name)



# ---------------------------------------------------------------------------------------------------
# Extreme (finite and infinite) gate pre-activations and cell states, deterministically


def gate_probe_pair(device, dtype, input_size=4, bias=True):
    """nn.LSTM and fused LSTM with hidden size 1 whose weight_ih is the identity (input_size 4): the gate
    pre-activations (i, f, g, o) of step 0 are exactly the four input features; every other weight is 0."""
    torch_lstm, fused = make_pair(input_size, 1, device, dtype, bias=bias)
    with torch.no_grad():
        for parameter in torch_lstm.parameters():
            parameter.zero_()
        torch_lstm.weight_ih_l0.copy_(torch.eye(4, input_size, dtype=dtype))
    fused.load_state_dict(torch_lstm.state_dict())
    return torch_lstm, fused


EXTREME_PRE = [-1e30, -200.0, -88.6, -20.0, -1.0, 0.0, 1.0, 20.0, 88.6, 200.0, 1e30]
EXTREME_CELL = [-1e38, -1e10, -1.0, 0.0, 1.0, 1e10, 1e38]


def extreme_grid_results(device, dtype):
    """One step over every combination of extreme pre-activations (i, f, g, o) and c0: one batch row each."""
    torch_lstm, fused = gate_probe_pair(device, dtype)
    rows = list(itertools.product(EXTREME_PRE, EXTREME_PRE, EXTREME_PRE, EXTREME_PRE, EXTREME_CELL))
    grid = torch.tensor(rows, dtype=dtype, device=device)
    x = grid[:, :4].unsqueeze(0)
    c0 = grid[:, 4].reshape(1, -1, 1)
    h0 = torch.zeros_like(c0)
    # The expected values are nn.LSTM's in float64, rounded to dtype: oneDNN's float32 LSTM flushes
    # denormal gate values to 0 (sigmoid(-88.6) = 3.3e-39), so a saturated forget gate times c0 = 1e38
    # gives 0 there, where the exact value is 0.33; the fused kernels keep the denormal.
    torch_lstm.double()
    with torch.no_grad():
        expected = torch_lstm(x.double(), (h0.double(), c0.double()))
        actual = fused(x, (h0, c0))
    output, (h_n, c_n) = expected
    return actual, (output.to(dtype), (h_n.to(dtype), c_n.to(dtype)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [
    pytest.param(torch.float64, id="float64"),
    pytest.param(torch.float32, id="float32"),
])
def test_extreme_preactivations_and_cell_states_match_nn_lstm(device, dtype):
    """Every combination of pre-activations in ±{0, 1, 20, 88.6, 200, 1e30} and c0 up to ±1e38: h_n and c_n
    within tolerance of nn.LSTM in float64 (relative for the huge cell states) with the same NaN positions."""
    (out, (h_n, c_n)), (expected_out, (expected_h, expected_c)) = extreme_grid_results(device, dtype)
    assert_close_nan(out, expected_out, what="output")
    assert_close_nan(h_n, expected_h, what="h_n")
    assert_close_nan(c_n, expected_c, what="c_n")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("gate", range(4), ids=list("ifgo"))
@pytest.mark.parametrize("value", [INF, -INF, NAN])
def test_infinite_preactivation_of_each_gate(device, dtype, gate, value):
    """One gate's pre-activation ±Inf or NaN (through its bias) with finite states: same results and same
    gradients (NaN positions included) as nn.LSTM, for every gate."""
    torch_lstm, fused = make_pair(3, 4, device, dtype)
    with torch.no_grad():
        torch_lstm.bias_ih_l0[gate * 4:(gate + 1) * 4] = value
    fused.load_state_dict(torch_lstm.state_dict())
    generator = torch.Generator().manual_seed(gate)
    x = torch.randn(5, 2, 3, generator=generator, dtype=dtype).to(device)
    hx = [torch.randn(1, 2, 4, generator=generator, dtype=dtype).to(device) for _ in range(2)]
    results = []
    for module in (torch_lstm, fused):
        leaves = [x.clone().requires_grad_(), *(s.clone().requires_grad_() for s in hx)]
        out, (h_n, c_n) = module(leaves[0], (leaves[1], leaves[2]))
        grads = torch.autograd.grad(out.sum() + h_n.sum() + c_n.sum(), [*leaves, *module.parameters()])
        results.append([out, h_n, c_n, *grads])
    for index, (a, e) in enumerate(zip(results[1], results[0])):
        assert_close_nan(a, e, what=f"result {index}")


def saturated_forget_gate_pair(device, dtype, cell):
    """Hidden size 1, every weight 0, forget-gate bias -100: c_1 = sigmoid(-100)·c0 + 0.5·tanh(0) = ~0."""
    torch_lstm, fused = make_pair(1, 1, device, dtype)
    with torch.no_grad():
        for parameter in torch_lstm.parameters():
            parameter.zero_()
        torch_lstm.bias_ih_l0[1] = -100.0
    fused.load_state_dict(torch_lstm.state_dict())
    x = torch.zeros(1, 1, 1, device=device, dtype=dtype)
    hx = (torch.zeros(1, 1, 1, device=device, dtype=dtype), torch.full((1, 1, 1), cell, device=device, dtype=dtype))
    with torch.no_grad():
        return fused(x, hx)[1][1], torch_lstm(x, hx)[1][1]


def test_saturated_forget_gate_times_huge_cell_state():
    """sigmoid(-100)·1e38 is 3.7e-6 (nn.LSTM float32: 0); the fused CPU kernel gave 0.4156 while its exp
    saturated at 2.4e38 instead of overflowing to inf."""
    actual, expected = saturated_forget_gate_pair("cpu", torch.float32, 1e38)
    assert_close_nan(actual, expected, what="c_n")


def test_saturated_forget_gate_times_infinite_cell_state_is_nan():
    """nn.LSTM: sigmoid(-100) = 0 and 0·inf = NaN (the fused CPU kernel gave inf before the exp fix)."""
    actual, expected = saturated_forget_gate_pair("cpu", torch.float32, INF)
    assert torch.isnan(expected).all()
    assert_close_nan(actual, expected, what="c_n")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cell", [1e38, INF])
def test_saturated_forget_gate_float64(device, cell):
    """The same two cases in float64 (libm exp) agree with nn.LSTM: the behaviour the float32 fix must give."""
    actual, expected = saturated_forget_gate_pair(device, torch.float64, cell)
    assert_close_nan(actual, expected, what="c_n")


def test_infinite_h0_gradient_nan_pattern():
    """h0 = +inf drives the pre-activations to (+inf, -inf, +inf, -inf): nn.LSTM's gate derivatives are all 0
    and its dW_hh = 0·inf = NaN everywhere (the fused output gate's derivative was ~4e-39 before the exp fix,
    so dW_hh[o] was +inf)."""
    torch_lstm, fused = make_pair(1, 1, "cpu", torch.float32, bias=False)
    with torch.no_grad():
        torch_lstm.weight_ih_l0.zero_()
        torch_lstm.weight_hh_l0.copy_(torch.tensor([[1.0], [-1.0], [1.0], [-1.0]]))
    fused.load_state_dict(torch_lstm.state_dict())
    x, h0, c0 = torch.zeros(1, 1, 1), torch.full((1, 1, 1), INF), torch.zeros(1, 1, 1)
    grads = []
    for module in (torch_lstm, fused):
        out, _ = module(x, (h0, c0))
        grads.append(torch.autograd.grad(out.sum(), module.weight_hh_l0)[0])
    assert torch.isnan(grads[0]).all()
    assert_close_nan(grads[1], grads[0], what="grad weight_hh")
