"""Robustness (issue 8): fuzzed shapes, strides, packed lengths and non-finite values against nn.LSTM;
every raw op argument replaced by a wrong one (in a child process, so that a crash fails a test
instead of killing the run); extreme pre-activations. See docs/robustness.md.

Hypothesis runs derandomized by default (the same examples on every run, no example database), with
a bounded example budget so that the file stays well under 2 minutes on a 2-core CPU. Environment knobs
for a longer, random exploration:
    FUSED_LSTM_FUZZ_RANDOM=1      random examples; a failure prints its seed: rerun with --hypothesis-seed=N
    FUSED_LSTM_FUZZ_EXAMPLES=K    multiply every example budget by K
    FUSED_LSTM_FUZZ_THREADS=N     intra-op threads while this module runs (default 1)
A failure also prints the falsifying example and a @reproduce_failure(...) blob.
"""

import itertools
import json
import math
import os
import random
import re
import subprocess
import sys

import hypothesis
import pytest
import torch
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import fused_lstm
from conftest import DEVICES, assert_close_nan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANDOM_FUZZ = os.environ.get("FUSED_LSTM_FUZZ_RANDOM", "0") == "1"
EXAMPLE_FACTOR = int(os.environ.get("FUSED_LSTM_FUZZ_EXAMPLES", "1"))


# With FUSED_LSTM_FUZZ_RANDOM=1 every fuzz test runs from one seed: --hypothesis-seed's if given, else a fresh
# one applied with @hypothesis.seed (which seeds exactly as --hypothesis-seed does) and printed on failure.
FORCED_SEED = getattr(hypothesis.core, "global_force_seed", None)
FUZZ_SEED = (FORCED_SEED if FORCED_SEED is not None else random.SystemRandom().getrandbits(32)) if RANDOM_FUZZ \
    else None


def fuzz(max_examples):
    """The settings of every property test here: a bounded budget, no deadline, derandomized unless
    FUSED_LSTM_FUZZ_RANDOM=1, failures printed with a reproduction blob."""
    def decorate(test):
        test = settings(max_examples=max_examples * EXAMPLE_FACTOR, deadline=None, derandomize=not RANDOM_FUZZ,
                        database=None, print_blob=True,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                               HealthCheck.function_scoped_fixture])(test)
        if RANDOM_FUZZ and FORCED_SEED is None:
            test = hypothesis.seed(FUZZ_SEED)(test)
        return test
    return decorate


def note_seed():
    """Printed with a falsifying example: how to rerun the same random exploration."""
    if RANDOM_FUZZ:
        note(f"random fuzz: rerun with FUSED_LSTM_FUZZ_RANDOM=1 FUSED_LSTM_FUZZ_EXAMPLES={EXAMPLE_FACTOR} "
             f"pytest ... --hypothesis-seed={FUZZ_SEED}")
    else:
        note("derandomized fuzz: rerunning the same command replays the same examples")


FLOAT_DTYPES = [torch.float32, torch.float64]


@pytest.fixture(autouse=True, scope="module")
def _intra_op_threads():
    """One intra-op thread by default: on a small, shared CPU two spinning OpenMP threads make each example
    up to 100x slower, and the sizes fuzzed here are too small for intra-op parallelism to matter
    (FUSED_LSTM_FUZZ_THREADS=N to change it). Restored after the module."""
    previous = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("FUSED_LSTM_FUZZ_THREADS", "1")))
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------------
# Comparison helpers


def error_scale(steps, batch, dtype, layers=1):
    """Tolerance multiplier: rounding errors of the recurrence grow with the sequence length and the depth,
    and weight gradients sum over every packed row. float64 keeps the bare conftest tolerance."""
    if dtype == torch.float64:
        return 1.0
    return max(1.0, math.sqrt(steps * max(batch, 1)) / 4) * layers


def make_pair(input_size, hidden_size, device, dtype, **kwargs):
    torch_lstm = torch.nn.LSTM(input_size, hidden_size, device=device, dtype=dtype, **kwargs)
    fused = fused_lstm.LSTM(input_size, hidden_size, device=device, dtype=dtype, **kwargs)
    fused.load_state_dict(torch_lstm.state_dict())
    return torch_lstm, fused


# ---------------------------------------------------------------------------------------------------
# Strided views: the same values in another memory layout


LAYOUTS = ["contiguous", "permuted", "sliced", "offset", "expanded"]


def with_layout(values, layout, expand_dim=0):
    """A tensor equal to `values` (same shape) laid out differently in memory, plus the leaf it is a view
    of (gradients are taken w.r.t. the leaf; floating-point leaves require grad). 'expanded' repeats one slice
    along `expand_dim` (stride 0), so it changes the values: the caller passes the result to both
    implementations."""
    values = values.detach()
    if values.dim() == 0:
        layout = "contiguous"
    dims = list(range(values.dim()))[::-1]
    every_other = tuple(slice(None, None, 2) for _ in range(values.dim()))
    if layout == "expanded" and values.size(expand_dim) == 0:
        layout = "contiguous"
    if layout == "contiguous":
        leaf = values.clone()
    elif layout == "permuted":  # memory order reversed: every stride differs from the contiguous one
        leaf = values.permute(dims).contiguous()
    elif layout == "sliced":  # every other element of every dimension
        leaf = values.new_zeros([2 * size for size in values.shape])
        leaf[every_other] = values
    elif layout == "offset":  # storage starting one element in: misaligned for vector loads
        leaf = torch.cat([values.new_zeros(1), values.reshape(-1)])
    elif layout == "expanded":
        leaf = values.narrow(expand_dim, 0, 1).clone()
    else:
        raise ValueError(layout)
    if leaf.is_floating_point() or leaf.is_complex():
        leaf.requires_grad_()
    view = {"contiguous": lambda: leaf, "permuted": lambda: leaf.permute(dims),
            "sliced": lambda: leaf[every_other], "offset": lambda: leaf[1:].view(values.shape),
            "expanded": lambda: leaf.expand(values.shape)}[layout]()
    return leaf, view


def test_with_layout_builds_the_layouts_it_claims():
    values = torch.arange(24.0).view(2, 3, 4)
    for layout in LAYOUTS:
        leaf, view = with_layout(values, layout)
        assert view.shape == values.shape
        if layout != "expanded":
            assert torch.equal(view, values), layout
        if layout in ("permuted", "sliced"):
            assert not view.is_contiguous(), layout
        if layout == "offset":
            assert view.storage_offset() == 1
        if layout == "expanded":
            assert view.stride(0) == 0


# ---------------------------------------------------------------------------------------------------
# Property: fused_lstm.LSTM == nn.LSTM (same state_dict) over random shapes, flags, layouts and dtypes


@st.composite
def lstm_configs(draw, max_steps=64, max_batch=17, max_size=70):
    """Module arguments and sizes (the dtype is a pytest parameter of each test)."""
    hidden = draw(st.integers(1, max_size))
    return dict(
        steps=draw(st.integers(1, max_steps)),
        batch=draw(st.integers(0, max_batch)),
        input_size=draw(st.integers(1, max_size)),
        hidden_size=hidden,
        proj_size=draw(st.integers(0, hidden - 1)) if hidden > 1 and draw(st.booleans()) else 0,
        num_layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def record_events(config, **extra):
    """Coverage labels, shown by `pytest --hypothesis-show-statistics`; and the seed note."""
    note_seed()
    event(f"dtype={str(config['dtype']).replace('torch.', '')}")
    event(f"steps {'>32' if config['steps'] > 32 else '<=32'}")
    event(f"batch {'0' if config['batch'] == 0 else '>8' if config['batch'] > 8 else '1-8'}")
    event(f"hidden {'odd' if config['hidden_size'] % 2 else 'even'}, {'>32' if config['hidden_size'] > 32 else '<=32'}")
    event(f"proj {'on' if config['proj_size'] else 'off'}")
    event(f"layers={config['num_layers']} bidirectional={config['bidirectional']}")
    for key, value in extra.items():
        event(f"{key}={value}")


def module_kwargs(config):
    return {k: config[k] for k in ("proj_size", "num_layers", "bidirectional", "batch_first", "bias")}


def random_states(config, batch, device, generator):
    directions = 2 if config["bidirectional"] else 1
    rows = config["num_layers"] * directions
    out_size = config["proj_size"] or config["hidden_size"]
    h0 = torch.randn(rows, batch, out_size, generator=generator, dtype=config["dtype"]).to(device)
    c0 = torch.randn(rows, batch, config["hidden_size"], generator=generator, dtype=config["dtype"]).to(device)
    return h0, c0


def run_module(module, inputs, hx, loss_weights, leaves, want_grads):
    """Forward (output data, h_n, c_n) and, if wanted, gradients of a weighted loss w.r.t. `leaves` and the
    module's parameters."""
    output, (h_n, c_n) = module(inputs, hx)
    data = output.data if isinstance(output, PackedSequence) else output
    results = [data, h_n, c_n]
    if want_grads:
        loss = sum((t * w).sum() for t, w in zip(results, loss_weights))
        results += list(torch.autograd.grad(loss, [*leaves, *module.parameters()], allow_unused=True))
    return results


def compare_modules(torch_lstm, fused, make_inputs, want_grads, scale, generator_seed):
    """Runs both modules on freshly built (identical) inputs and compares every result."""
    expected_inputs, expected_hx, expected_leaves = make_inputs()
    with torch.no_grad():
        probe, (probe_h, probe_c) = torch_lstm(expected_inputs, expected_hx)
    probe = probe.data if isinstance(probe, PackedSequence) else probe
    generator = torch.Generator().manual_seed(generator_seed)
    loss_weights = [torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device)
                    for t in (probe, probe_h, probe_c)]
    expected = run_module(torch_lstm, expected_inputs, expected_hx, loss_weights, expected_leaves, want_grads)
    actual_inputs, actual_hx, actual_leaves = make_inputs()
    actual = run_module(fused, actual_inputs, actual_hx, loss_weights, actual_leaves, want_grads)
    names = ["output", "h_n", "c_n"] + [f"grad[{i}]" for i in range(len(actual_leaves))] + \
        [f"grad {name}" for name, _ in fused.named_parameters()]
    for name, a, e in zip(names, actual, expected):
        if a is None or e is None:
            assert a is None and e is None, name
            continue
        assert_close_nan(a, e, scale=scale, what=name)
    return actual, expected


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@fuzz(120)
@given(config=lstm_configs(), x_layout=st.sampled_from(LAYOUTS), hx_layout=st.sampled_from(LAYOUTS + ["none"]),
       want_grads=st.booleans())
def test_fuzz_module_matches_nn_lstm(device, dtype, config, x_layout, hx_layout, want_grads):
    """Random T (1-64), batch (0-17), input/hidden/proj sizes (1-70), layers (1-3), directions, batch_first,
    bias; input and (h0, c0) in random memory layouts (permuted, every-other-element, misaligned, stride-0
    expanded) or no states. Outputs, h_n, c_n and (for some examples) every gradient match nn.LSTM loaded with
    the same state_dict."""
    config = dict(config, dtype=dtype)
    record_events(config, x_layout=x_layout, hx_layout=hx_layout, grads=want_grads)
    torch.manual_seed(config["seed"])
    dtype, steps, batch = config["dtype"], config["steps"], config["batch"]
    torch_lstm, fused = make_pair(config["input_size"], config["hidden_size"], device, dtype, **module_kwargs(config))
    generator = torch.Generator().manual_seed(config["seed"])
    shape = (batch, steps, config["input_size"]) if config["batch_first"] else (steps, batch, config["input_size"])
    x_values = torch.randn(shape, generator=generator, dtype=dtype).to(device)
    hx_values = random_states(config, batch, device, generator)
    batch_dim = 0 if config["batch_first"] else 1

    def make_inputs():
        x_leaf, x = with_layout(x_values, x_layout, expand_dim=batch_dim)
        if hx_layout == "none":
            return x, None, [x_leaf]
        (h_leaf, h0), (c_leaf, c0) = [with_layout(s, hx_layout, expand_dim=1) for s in hx_values]
        return x, (h0, c0), [x_leaf, h_leaf, c_leaf]

    scale = error_scale(steps, batch, dtype, config["num_layers"])
    compare_modules(torch_lstm, fused, make_inputs, want_grads and batch > 0, scale, config["seed"] + 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@fuzz(100)
@given(config=lstm_configs(max_batch=17), lengths_data=st.data(), enforce_sorted=st.booleans(),
       data_layout=st.sampled_from(["contiguous", "sliced", "offset"]), with_hx=st.booleans(),
       want_grads=st.booleans())
def test_fuzz_packed_sequences_match_nn_lstm(device, dtype, config, lengths_data, enforce_sorted, data_layout,
                                            with_hx, want_grads):
    """Random lengths 1..T (sorted with enforce_sorted=True, any order with False), PackedSequence data in
    strided layouts, optional states: padded outputs, h_n, c_n and gradients match nn.LSTM."""
    config = dict(config, dtype=dtype)
    record_events(config, enforce_sorted=enforce_sorted, data_layout=data_layout, hx=with_hx, grads=want_grads)
    torch.manual_seed(config["seed"])
    dtype, steps = config["dtype"], config["steps"]
    batch = max(config["batch"], 1)  # a PackedSequence has at least one sequence
    lengths = lengths_data.draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch), label="lengths")
    if enforce_sorted:
        lengths = sorted(lengths, reverse=True)
    kwargs = dict(module_kwargs(config), batch_first=False)
    torch_lstm, fused = make_pair(config["input_size"], config["hidden_size"], device, dtype, **kwargs)
    generator = torch.Generator().manual_seed(config["seed"])
    padded = torch.randn(max(lengths), batch, config["input_size"], generator=generator, dtype=dtype).to(device)
    packed = pack_padded_sequence(padded, torch.tensor(lengths), enforce_sorted=enforce_sorted)
    hx_values = random_states(config, batch, device, generator)

    def make_inputs():
        data_leaf, data = with_layout(packed.data.detach(), data_layout)
        inputs = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        if not with_hx:
            return inputs, None, [data_leaf]
        (h_leaf, h0), (c_leaf, c0) = [with_layout(s, "contiguous") for s in hx_values]
        return inputs, (h0, c0), [data_leaf, h_leaf, c_leaf]

    scale = error_scale(max(lengths), batch, dtype, config["num_layers"])
    compare_modules(torch_lstm, fused, make_inputs, want_grads, scale, config["seed"] + 1)
    # The output is a PackedSequence with the input's bookkeeping, and pads back to the input lengths.
    output, _ = fused(packed)
    assert torch.equal(output.batch_sizes, packed.batch_sizes)
    _, out_lengths = pad_packed_sequence(output)
    assert out_lengths.tolist() == lengths


@pytest.mark.parametrize("device", DEVICES)
@fuzz(100)
@given(dtype=st.sampled_from(FLOAT_DTYPES), batch=st.integers(0, 17), input_size=st.integers(1, 70),
       hidden_size=st.integers(1, 70), bias=st.booleans(), batched=st.booleans(),
       layout=st.sampled_from(LAYOUTS + ["none"]), seed=st.integers(0, 2**31 - 1))
def test_fuzz_lstm_cell_matches_nn_lstm_cell(device, dtype, batch, input_size, hidden_size, bias, batched, layout,
                                           seed):
    """LSTMCell: random sizes, batched or not, states in random layouts (or none); results and gradients."""
    note_seed()
    torch.manual_seed(seed)
    torch_cell = torch.nn.LSTMCell(input_size, hidden_size, bias=bias, device=device, dtype=dtype)
    fused_cell = fused_lstm.LSTMCell(input_size, hidden_size, bias=bias, device=device, dtype=dtype)
    fused_cell.load_state_dict(torch_cell.state_dict())
    generator = torch.Generator().manual_seed(seed)
    batch_shape = (batch,) if batched else ()
    values = [torch.randn(*batch_shape, size, generator=generator, dtype=dtype).to(device)
              for size in (input_size, hidden_size, hidden_size)]
    results = []
    for cell in (torch_cell, fused_cell):
        views = [with_layout(v, layout if layout != "none" else "contiguous") for v in values]
        leaves = [leaf for leaf, _ in views]
        x = views[0][1]
        hx = None if layout == "none" else (views[1][1], views[2][1])
        h, c = cell(x, hx)
        outs = [h, c]
        if h.numel():
            weights = torch.Generator().manual_seed(seed + 1)
            loss = sum((t * torch.randn(t.shape, generator=weights, dtype=dtype).to(device)).sum() for t in outs)
            outs += torch.autograd.grad(loss, [*(leaves if hx is not None else leaves[:1]), *cell.parameters()])
        results.append(outs)
    for index, (a, e) in enumerate(zip(results[1], results[0])):
        assert_close_nan(a, e, what=f"cell result {index}")


@pytest.mark.parametrize("hidden,batch", [(16, 2100), (1, 17000), (70, 500)], ids=["H16", "H1", "H70"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_pointwise_pass_split_over_threads_matches_nn_lstm(hidden, batch, packed):
    """Batches big enough that the CPU pointwise passes split their rows between 2 intra-op threads (16384
    elements per task; packed input, and padded input where the fused step is off), or that the fused step
    runs many row tiles per panel (padded float32): forward and gradients still match nn.LSTM (the fuzz
    above runs single-threaded)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        torch_lstm, fused = make_pair(3, hidden, "cpu", torch.float32, bidirectional=True)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(3, batch, 3, generator=generator)
        lengths = torch.randint(1, 4, (batch,), generator=generator)
        lengths[0] = 3

        def make_inputs():
            leaf = x.clone().requires_grad_()
            inputs = pack_padded_sequence(leaf, lengths, enforce_sorted=False) if packed else leaf
            return inputs, None, [leaf]

        compare_modules(torch_lstm, fused, make_inputs, True, error_scale(3, batch, torch.float32), 1)
    finally:
        torch.set_num_threads(previous)


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
    scale = error_scale(steps, batch, dtype, config["num_layers"])
    for name, a, e in zip(names, results[1], results[0]):
        assert_close_nan(a, e, scale=scale, what=name)


# ---------------------------------------------------------------------------------------------------
# Property: the raw ops against the reference, for any valid batch_sizes (trailing zeros, empty batch)
# and strided arguments


@st.composite
def layer_samples(draw, dtype):
    batch = draw(st.integers(0, 17))
    steps = draw(st.integers(1, 64))
    # Non-increasing batch sizes starting at `batch`; zeros allowed (the op accepts them; PackedSequence has none).
    sizes = sorted(draw(st.lists(st.integers(0, batch), min_size=steps - 1, max_size=steps - 1)), reverse=True)
    hidden = draw(st.integers(1, 70))
    proj = draw(st.integers(1, hidden - 1)) if hidden > 1 and draw(st.booleans()) else 0
    return dict(dtype=dtype, batch_sizes=[batch] + sizes, input_size=draw(st.integers(0, 70)), hidden=hidden,
                proj=proj, bias=draw(st.booleans()), reverse=draw(st.booleans()),
                layouts=draw(st.lists(st.sampled_from(["contiguous", "permuted", "sliced", "offset"]), min_size=8,
                                      max_size=8)),
                seed=draw(st.integers(0, 2**31 - 1)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@fuzz(100)
@given(data=st.data())
def test_fuzz_raw_ops_match_reference(device, dtype, data):
    """lstm_layer_forward and lstm_layer_backward (through autograd) against reference.lstm_layer, with every
    tensor argument in a random memory layout; input_size 0 is allowed at this level."""
    note_seed()
    sample = data.draw(layer_samples(dtype), label="sample")
    batch_sizes, hidden, proj = sample["batch_sizes"], sample["hidden"], sample["proj"]
    event(f"proj={'on' if proj else 'off'}, batch {'0' if batch_sizes[0] == 0 else '>0'}, "
          f"{'trailing zeros' if 0 in batch_sizes[1:] and batch_sizes[0] else 'no zeros'}")
    out_size = proj or hidden
    rows, batch = sum(batch_sizes), batch_sizes[0]
    generator = torch.Generator().manual_seed(sample["seed"])

    def rand(*shape):
        return (torch.randn(*shape, generator=generator, dtype=dtype) / math.sqrt(max(shape[-1], 1))).to(device)

    values = dict(input=rand(rows, sample["input_size"]), h0=rand(batch, out_size), c0=rand(batch, hidden),
                  weight_ih=rand(4 * hidden, sample["input_size"]), weight_hh=rand(4 * hidden, out_size),
                  bias=rand(4 * hidden) if sample["bias"] else None, weight_hr=rand(out_size, hidden) if proj else None)
    names = [name for name, value in values.items() if value is not None]
    tensor_sizes = torch.tensor(batch_sizes, dtype=torch.int64)
    results = []
    for layer in (fused_lstm.ops.lstm_layer, fused_lstm.reference.lstm_layer):
        arguments, leaves = dict(values), []
        for name, layout in zip(names, sample["layouts"]):
            leaf, arguments[name] = with_layout(values[name], layout)
            leaves.append(leaf)
        outs = layer(arguments["input"], tensor_sizes, arguments["h0"], arguments["c0"], arguments["weight_ih"],
                     arguments["weight_hh"], arguments["bias"], arguments["weight_hr"], sample["reverse"])
        weights = torch.Generator().manual_seed(sample["seed"] + 1)
        loss = sum((t * torch.randn(t.shape, generator=weights, dtype=dtype).to(device)).sum() for t in outs)
        grads = torch.autograd.grad(loss, leaves, allow_unused=True) if loss.requires_grad else [None] * len(leaves)
        results.append(list(outs) + [g if g is not None else torch.zeros_like(leaf) for g, leaf in zip(grads, leaves)])
    scale = error_scale(len(batch_sizes), batch, dtype)
    for name, a, e in zip(["output", "h_n", "c_n"] + [f"grad {n}" for n in names], *results):
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


# ---------------------------------------------------------------------------------------------------
# Bad arguments to the raw ops, generated systematically and run in a child process


# Small valid calls: (batch_sizes, input_size, hidden, proj, bias, reverse). GRU calls use the same sizes
# without the projection.
BASELINES = {
    "padded": ((2, 2, 2), 4, 5, 0, True, False),
    "packed_proj": ((3, 2, 2, 1), 4, 5, 3, True, True),
    "packed_nobias": ((3, 3, 1), 3, 2, 0, False, False),
}
OPS = ["lstm_layer_forward", "lstm_layer_backward", "gru_layer_forward", "gru_layer_backward"]


def op_tensor_arguments(op_name):
    """The op's Tensor and Tensor? arguments, in schema order."""
    schema = getattr(torch.ops.fused_lstm, op_name).default._schema
    return [a.name for a in schema.arguments if "Tensor" in str(a.type)]


def baseline_arguments(name, device="cpu", dtype=torch.float32):
    """Valid argument dicts (schema order) of every op for one baseline: {op name: arguments}."""
    sizes, input_size, hidden, proj, bias, reverse = BASELINES[name]
    generator = torch.Generator().manual_seed(0)
    out_size = proj or hidden

    def rand(*shape):
        return torch.randn(*shape, generator=generator, dtype=dtype).to(device)

    rows, batch = sum(sizes), sizes[0]
    batch_sizes = torch.tensor(sizes, dtype=torch.int64)
    x = rand(rows, input_size)
    lstm_forward = dict(input=x, batch_sizes=batch_sizes, h0=rand(batch, out_size), c0=rand(batch, hidden),
                        weight_ih=rand(4 * hidden, input_size), weight_hh=rand(4 * hidden, out_size),
                        bias=rand(4 * hidden) if bias else None, weight_hr=rand(out_size, hidden) if proj else None,
                        reverse=reverse, save_for_backward=True)
    output, h_n, c_n, gates, cell_prev, proj_input = torch.ops.fused_lstm.lstm_layer_forward(*lstm_forward.values())
    lstm_backward = dict(grad_output=rand(*output.shape), grad_h_n=rand(*h_n.shape), grad_c_n=rand(*c_n.shape),
                         input=x, batch_sizes=batch_sizes, h0=lstm_forward["h0"], weight_ih=lstm_forward["weight_ih"],
                         weight_hh=lstm_forward["weight_hh"], weight_hr=lstm_forward["weight_hr"], output=output,
                         gates=gates, cell_prev=cell_prev, proj_input=proj_input, reverse=reverse, has_bias=bias)
    gru_forward = dict(input=x, batch_sizes=batch_sizes, h0=rand(batch, hidden),
                       weight_ih=rand(3 * hidden, input_size), weight_hh=rand(3 * hidden, hidden),
                       bias_ih=rand(3 * hidden) if bias else None, bias_hh=rand(3 * hidden) if bias else None,
                       reverse=reverse, save_for_backward=True)
    output, h_n, gates, candidate = torch.ops.fused_lstm.gru_layer_forward(*gru_forward.values())
    gru_backward = dict(grad_output=rand(*output.shape), grad_h_n=rand(*h_n.shape), input=x, batch_sizes=batch_sizes,
                        h0=gru_forward["h0"], weight_ih=gru_forward["weight_ih"], weight_hh=gru_forward["weight_hh"],
                        output=output, gates=gates, candidate_hidden=candidate, reverse=reverse, has_bias=bias)
    return {"lstm_layer_forward": lstm_forward, "lstm_layer_backward": lstm_backward,
            "gru_layer_forward": gru_forward, "gru_layer_backward": gru_backward}


def tensor_mutations(name, value):
    """(label, replacement, expectation) for one tensor argument: 'raise' (a clear error), 'same' (must run and
    give the baseline's results: another memory layout of the same values) or 'run' (must run: an argument
    the op ignores)."""
    if value is None:
        return []
    is_index = name == "batch_sizes"
    rank_changes = [("0-D", value.reshape(-1)[:1].reshape(()) if value.numel() else torch.zeros((), dtype=value.dtype)),
                    ("rank+1", value.unsqueeze(0)),
                    ("rank+1 (trailing)", value.unsqueeze(-1))]
    if value.dim() >= 2:
        rank_changes.append(("flattened", value.reshape(-1)))
    mutations = [(f"{name}: {label}", replacement, "raise") for label, replacement in rank_changes]
    for dim in range(value.dim()):
        for delta in (+1, -1, "zero"):
            shape = list(value.shape)
            shape[dim] = 0 if delta == "zero" else shape[dim] + delta
            if shape[dim] < 0 or shape == list(value.shape):
                continue
            if is_index:
                replacement = torch.ones(shape, dtype=value.dtype)  # keeps the non-increasing property
            else:
                replacement = torch.randn(shape, dtype=value.dtype, device=value.device)
            mutations.append((f"{name}: dim {dim} {'size 0' if delta == 'zero' else f'{delta:+d}'}", replacement,
                              "raise"))
    dtypes = [torch.int32, torch.float32, torch.float64, torch.uint8, torch.bool] if is_index else \
        [torch.float64 if value.dtype == torch.float32 else torch.float32, torch.float16, torch.bfloat16,
         torch.int64, torch.int32, torch.bool, torch.complex64]
    for dtype in dtypes:
        if dtype != value.dtype:
            mutations.append((f"{name}: dtype {str(dtype).replace('torch.', '')}", value.to(dtype), "raise"))
    mutations.append((f"{name}: empty 1-D", torch.empty(0, dtype=value.dtype, device=value.device), "raise"))
    mutations.append((f"{name}: None", None, "raise"))
    if value.dim() >= 1 and value.numel() > 1:
        mutations.append((f"{name}: strided view of the same values", with_layout(value, "sliced")[1].detach(),
                          "same"))
        mutations.append((f"{name}: misaligned view of the same values", with_layout(value, "offset")[1].detach(),
                          "same"))
    if value.dim() == 2 and value.numel() > 1:
        mutations.append((f"{name}: transposed storage of the same values", value.t().contiguous().t(), "same"))
    return mutations


def batch_size_value_mutations(batch_sizes):
    """Bad values in a well-formed batch_sizes (every baseline has at least three steps)."""
    sizes = batch_sizes.tolist()
    rising = [sizes[0], sizes[0] - 1, sizes[0]] + sizes[3:]  # step 2 > step 1 (checked before the sum)
    return [
        ("batch_sizes: increasing", torch.tensor(rising), "raise"),
        ("batch_sizes: one negative", torch.tensor(sizes[:-1] + [-1]), "raise"),
        ("batch_sizes: first too big", torch.tensor([sizes[0] + 1] + sizes[1:]), "raise"),
        ("batch_sizes: first 0", torch.tensor([0] + sizes[1:]), "raise"),
        ("batch_sizes: sum one short", torch.tensor(sizes[:-1] + [sizes[-1] - 1]), "raise"),
        ("batch_sizes: sum one long", torch.tensor(sizes + [1]), "raise"),
        ("batch_sizes: 2^62 everywhere", torch.tensor([2**62] * len(sizes)), "raise"),
        ("batch_sizes: int64 max first", torch.tensor([2**63 - 1] + sizes[1:]), "raise"),
        ("batch_sizes: a trailing zero step", torch.tensor(sizes + [0]), "same"),
        ("batch_sizes: non-contiguous", torch.tensor([[size, 0] for size in sizes])[:, 0], "same"),
    ]


def overflowing_call():
    """batch_sizes that sum to 2^64 (0 after int64 wrap-around) with a 0-row input and expanded (stride 0)
    states of 2^62 rows: the row-count check passes by overflow; what follows must raise, not crash."""
    big, hidden = 2**62, 1
    states = torch.zeros(1, hidden).expand(big, hidden)
    return (torch.zeros(0, 2), torch.tensor([big] * 4), states, states, torch.randn(4 * hidden, 2),
            torch.randn(4 * hidden, hidden), None, None, False, False)


OPTIONAL_TENSORS = {"bias", "weight_hr", "bias_ih", "bias_hh"}


def mutation_cases(op_name, baseline):
    """Every (label, arguments, expectation) of one op and baseline."""
    arguments = baseline_arguments(baseline)[op_name]
    projected = arguments.get("weight_hr") is not None
    gates = 4 if op_name.startswith("lstm") else 3
    hidden = arguments["weight_ih"].shape[0] // gates
    cases = []
    for name in op_tensor_arguments(op_name):
        mutations = tensor_mutations(name, arguments[name])
        if name == "batch_sizes":
            mutations += batch_size_value_mutations(arguments[name])
        if name == "proj_input" and not projected:
            mutations = [(label, value, "run") for label, value, _ in mutations]  # ignored without a projection
        if name in OPTIONAL_TENSORS:
            mutations = [m for m in mutations if not m[0].endswith(": None")]
        if name == "weight_hr":
            if projected:
                mutations.append(("weight_hr: None for a projected layer", None, "raise"))
            else:
                mutations += [("weight_hr: [H, H] given to a layer without projection", torch.randn(hidden, hidden),
                               "raise"),
                              ("weight_hr: [H, H-1] given to a layer without projection",
                               torch.randn(hidden, max(hidden - 1, 1)), "raise")]
        if name in ("bias_ih", "bias_hh"):
            if arguments[name] is not None:
                mutations.append((f"{name}: None while the other bias is given", None, "raise"))
            else:
                mutations.append((f"{name}: given while the other bias is None", torch.randn(3 * hidden), "raise"))
        for label, value, expectation in mutations:
            cases.append((label, dict(arguments, **{name: value}), expectation))
    steps, rows = len(arguments["batch_sizes"]), arguments["input"].shape[0]
    if op_name.endswith("forward"):
        cases.append(("reverse: not a bool", dict(arguments, reverse="yes"), "raise"))
        if rows % steps == 0:
            padded = arguments["input"].reshape(steps, rows // steps, -1)
            cases.append(("input: a [T, B, C] tensor instead of packed rows", dict(arguments, input=padded), "raise"))
    if op_name == "lstm_layer_forward" and arguments["bias"] is not None:
        stacked = torch.stack([arguments["bias"], arguments["bias"]])
        cases.append(("bias: b_ih and b_hh stacked [2, 4H] instead of summed", dict(arguments, bias=stacked), "raise"))
    if op_name.endswith("backward"):
        wider = torch.randn(arguments["gates"].shape[0], arguments["gates"].shape[1] + gates)
        cases.append(("gates: from a layer with another hidden size", dict(arguments, gates=wider), "raise"))
        saved = [name for name in ("gates", "cell_prev", "candidate_hidden") if name in arguments]
        cases.append((f"{', '.join(saved)}: empty (forward ran with save_for_backward=False)",
                      dict(arguments, **{name: torch.empty(0) for name in saved}), "raise"))
    return cases


def meta_cases(op_name, baseline):
    """One argument on the meta device, the rest on the CPU."""
    arguments = baseline_arguments(baseline)[op_name]
    return [(f"{name}: on meta, the rest on cpu", dict(arguments, **{name: arguments[name].to("meta")}))
            for name in op_tensor_arguments(op_name) if arguments[name] is not None]


def _describe(results):
    return [(tuple(t.shape), str(t.dtype).replace("torch.", ""), t.device.type) for t in results]


def _run_case(op, arguments, baseline_results):
    """Runs one call; returns (outcome, detail). Outcomes: raised, returned close (to the baseline's
    results), returned different, returned."""
    try:
        results = op(*arguments.values())
    except Exception as error:  # noqa: BLE001 -- any Python exception is the wanted outcome
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return "raised", f"{type(error).__name__}: {message}"
    described = str(_describe(results))
    if all(t.device.type == "cpu" for t in results) and \
            all(a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in
                zip(results, baseline_results)):
        return "returned close", described
    return "returned", described


def child_cases(op_name, baseline, kind):
    if kind == "mutations":
        cases = mutation_cases(op_name, baseline)
        if op_name == "lstm_layer_forward" and baseline == "padded":
            arguments = baseline_arguments(baseline)[op_name]
            cases.append(("batch_sizes: sum overflows int64 (expanded 2^62-row states)",
                          dict(zip(list(arguments), overflowing_call())), "raise"))
        return cases
    if kind == "meta":
        return [(label, arguments, "raise") for label, arguments in meta_cases(op_name, baseline)]
    if kind == "cuda":  # a second real device: each argument alone on the GPU
        arguments = baseline_arguments(baseline)[op_name]
        return [(f"{name}: on cuda, the rest on cpu", dict(arguments, **{name: arguments[name].to("cuda")}), "raise")
                for name in op_tensor_arguments(op_name) if arguments[name] is not None]
    raise ValueError(kind)


def mutation_child(kinds):
    """Child-process entry point: every op x baseline x kind; one JSON line per case, flushed before the next
    case starts, so that the parent knows in which case a crash happened."""
    torch.set_num_threads(1)
    for kind in kinds:
        for op_name in OPS:
            op = getattr(torch.ops.fused_lstm, op_name)
            for baseline in BASELINES:
                baseline_results = op(*baseline_arguments(baseline)[op_name].values())
                for label, arguments, expectation in child_cases(op_name, baseline, kind):
                    key = dict(kind=kind, op=op_name, baseline=baseline, case=label)
                    print(json.dumps(dict(key, start=True)), flush=True)
                    outcome, detail = _run_case(op, arguments, baseline_results)
                    print(json.dumps(dict(key, expect=expectation, outcome=outcome, detail=detail)), flush=True)
    print(json.dumps({"done": True}), flush=True)


def run_child(function, *args, timeout=600):
    """Runs test_fuzz_against_nn.<function>(*args) in a fresh interpreter; returns (returncode, records, stderr)."""
    code = f"import test_fuzz_against_nn as m; m.{function}(*{args!r})"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                            env=env)
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.returncode, records, result.stderr


@pytest.fixture(scope="module")
def bad_call_records():
    """All bad raw-op calls, run once per session in one child process (a crash there fails the tests that
    use these records, naming the case it died in, instead of killing pytest)."""
    kinds = ["mutations", "meta"] + (["cuda"] if torch.cuda.is_available() else [])
    returncode, records, stderr = run_child("mutation_child", kinds)
    finished = {(r["kind"], r["op"], r["baseline"], r["case"]) for r in records if "outcome" in r}
    crashed = [r for r in records if r.get("start") and (r["kind"], r["op"], r["baseline"], r["case"]) not in finished]
    if returncode != 0 or not records or not records[-1].get("done"):
        pytest.fail(f"the child process died (exit status {returncode}) in {crashed[:1]}; stderr tail:\n"
                    f"{stderr[-3000:]}")
    return [r for r in records if "outcome" in r]


def schema_argument_names(op_name):
    return [argument.name for argument in getattr(torch.ops.fused_lstm, op_name).default._schema.arguments]


# The argument checks say "fused_lstm[.lstm_layer_<op>]: <argument> must ...".
NAMED_CHECK = re.compile(r"fused_lstm(?:\.\w+_layer_\w+)?: (\S+) must ")


CLEAR_MESSAGE_WORDS = ("fused_lstm", "_layer_forward", "_layer_backward")


@pytest.mark.parametrize("op_name", OPS)
def test_raw_op_bad_arguments_raise(bad_call_records, op_name):
    """Each tensor argument replaced by: wrong rank (0-D, an extra leading or trailing dimension, flattened),
    each dimension +1, -1 and 0, every other dtype, an empty tensor, None; batch_sizes with bad values
    (increasing, negative, first != batch, wrong sum, 2^62, int64 max, a sum that overflows int64); argument
    mix-ups. On three baselines (padded, packed with projection, packed without bias). Every such call raises
    a Python exception that names the op; the same values in
    another memory layout (strided, misaligned, transposed storage) give the baseline's results; arguments the
    op ignores (proj_input without a projection) may be anything."""
    problems, count = [], 0
    for record in bad_call_records:
        if record["kind"] != "mutations" or record["op"] != op_name:
            continue
        count += 1
        where = f"[{record['baseline']}] {record['case']}"
        expect, outcome, detail = record["expect"], record["outcome"], record["detail"]
        if expect == "raise":
            if outcome != "raised":
                problems.append(f"{where}: did not raise, returned {detail}")
            elif not any(word in detail for word in CLEAR_MESSAGE_WORDS):
                problems.append(f"{where}: unclear message {detail!r}")
        elif expect == "same" and outcome != "returned close":
            problems.append(f"{where}: {outcome} {detail}")
        elif expect == "run" and not outcome.startswith("returned"):
            problems.append(f"{where}: {outcome} {detail}")
    assert count > 150
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("op_name", OPS)
def test_raw_op_error_messages_name_the_argument(bad_call_records, op_name):
    """'fused_lstm: X must ...' messages: X is one of the op's argument names."""
    arguments = schema_argument_names(op_name)
    unclear = sorted({f"{r['case']}: {r['detail']}" for r in bad_call_records
                      if r["kind"] == "mutations" and r["op"] == op_name and r["outcome"] == "raised"
                      and any(name not in arguments for name in NAMED_CHECK.findall(r["detail"]))})
    assert not unclear, "\n".join(unclear)


@pytest.mark.parametrize("op_name", OPS)
def test_raw_op_none_for_a_required_tensor_names_it(bad_call_records, op_name):
    """None for a required tensor (an undefined tensor in C++): '<op>: <argument> is required'."""
    unclear = sorted({f"{r['case']}: {r['detail']}" for r in bad_call_records
                      if r["kind"] == "mutations" and r["op"] == op_name and r["case"].endswith(": None")
                      and r["expect"] == "raise" and not ("fused_lstm" in r["detail"] and "required" in r["detail"])})
    assert not unclear, "\n".join(unclear)


def test_batch_sizes_sum_overflow_is_reported_as_such(bad_call_records):
    """Four steps of 2^62 rows would wrap an int64 sum to 0 and pass the row-count check: the check compares
    before adding and names batch_sizes."""
    (record,) = [r for r in bad_call_records if "overflows int64" in r["case"]]
    assert record["outcome"] == "raised"
    assert "fused_lstm" in record["detail"] and "batch_sizes" in record["detail"], record["detail"]


@pytest.mark.parametrize("op_name", OPS)
def test_meta_tensors_everywhere_give_meta_results(op_name):
    """Every tensor on the meta device (batch_sizes on meta or on the CPU): the fake kernel gives the real
    kernel's shapes and dtypes, on meta."""
    op = getattr(torch.ops.fused_lstm, op_name)
    for baseline in BASELINES:
        arguments = baseline_arguments(baseline)[op_name]
        cpu_results = op(*arguments.values())
        for sizes_device in ("cpu", "meta"):
            meta = {k: (v.to("meta") if torch.is_tensor(v) else v) for k, v in arguments.items()}
            meta["batch_sizes"] = arguments["batch_sizes"].to(sizes_device)
            results = op(*meta.values())
            assert [(r.shape, r.dtype) for r in results] == [(r.shape, r.dtype) for r in cpu_results]
            assert all(r.device.type == "meta" for r in results)


@pytest.mark.parametrize("op_name", OPS)
def test_meta_tensor_among_cpu_arguments_raises(bad_call_records, op_name):
    """One argument on meta, the rest on the CPU: Meta wins dispatch, so the fake kernel serves the call; it
    must raise naming the op, never return uninitialized CPU tensors."""
    problems = [f"[{r['baseline']}] {r['case']}: {r['outcome']} {r['detail']}" for r in bad_call_records
                if r["kind"] == "meta" and r["op"] == op_name
                and (r["outcome"] != "raised" or not any(w in r["detail"] for w in CLEAR_MESSAGE_WORDS))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ["LSTM", "GRU", "LSTMCell", "GRUCell"])
def test_module_with_meta_parameters_and_cpu_input_raises(name):
    """nn.LSTM / nn.GRU / nn.LSTMCell raise here, and so do the fused modules (they check the parameters'
    device as nn.LSTM does)."""
    x = torch.randn(3, 2, 4)[0] if name.endswith("Cell") else torch.randn(3, 2, 4)
    with pytest.raises(RuntimeError):
        getattr(torch.nn, name)(4, 5, device="meta")(x)
    with pytest.raises(RuntimeError):
        getattr(fused_lstm, name)(4, 5, device="meta")(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (a second real device)")
@pytest.mark.parametrize("op_name", OPS)
def test_raw_op_argument_on_cuda_with_the_rest_on_the_cpu_raises(bad_call_records, op_name):
    problems = [f"[{r['baseline']}] {r['case']}: {r['outcome']} {r['detail']}" for r in bad_call_records
                if r["kind"] == "cuda" and r["op"] == op_name
                and (r["outcome"] != "raised" or not any(w in r["detail"] for w in CLEAR_MESSAGE_WORDS))]
    assert not problems, "\n".join(problems)
