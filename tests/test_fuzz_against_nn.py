"""Property tests of the modules against torch.nn: fused_lstm.LSTM and LSTMCell equal nn.LSTM and
nn.LSTMCell loaded with the same state_dict over fuzzed shapes, flags, memory layouts (strided, misaligned,
stride-0 expanded), dtypes and packed lengths, forward and every gradient; the raw layer ops equal the
float64 reference for any valid batch_sizes; the CPU pointwise pass split over threads still matches. See
docs/robustness.md; tests/fuzzing.py says how to run a longer, random exploration.
"""

import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import fused_lstm
import samples
from conftest import DEVICES, assert_close_nan, recurrence_scale
from fuzzing import (FLOAT_DTYPES, LAYOUTS, fuzz, lstm_configs, make_pair, module_kwargs, note_seed, random_states,
                     record_events, with_layout)

pytestmark = pytest.mark.usefixtures("fuzz_intra_op_threads")


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

    scale = recurrence_scale(steps, batch, dtype, config["num_layers"])
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

    scale = recurrence_scale(max(lengths), batch, dtype, config["num_layers"])
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

        compare_modules(torch_lstm, fused, make_inputs, True, recurrence_scale(3, batch, torch.float32), 1)
    finally:
        torch.set_num_threads(previous)



# ---------------------------------------------------------------------------------------------------
# Property: the raw ops against the reference, for any valid batch_sizes (trailing zeros, empty batch)
# and strided arguments


@st.composite
def layer_configs(draw, dtype):
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
    config = data.draw(layer_configs(dtype), label="sample")
    batch_sizes, proj = config["batch_sizes"], config["proj"]
    event(f"proj={'on' if proj else 'off'}, batch {'0' if batch_sizes[0] == 0 else '>0'}, "
          f"{'trailing zeros' if 0 in batch_sizes[1:] and batch_sizes[0] else 'no zeros'}")
    values = samples.to_device(samples.lstm_layer_sample(batch_sizes=batch_sizes, input_size=config["input_size"],
                                                         hidden=config["hidden"], proj=proj, bias=config["bias"],
                                                         dtype=dtype, seed=config["seed"]), device)
    names = [name for name, value in values.items() if value is not None and name != "batch_sizes"]
    results = []
    for layer in (fused_lstm.ops.lstm_layer, fused_lstm.reference.lstm_layer):
        arguments, leaves = dict(values), []
        for name, layout in zip(names, config["layouts"]):
            leaf, arguments[name] = with_layout(values[name], layout)
            leaves.append(leaf)
        outs = layer(**arguments, reverse=config["reverse"])
        weights = torch.Generator().manual_seed(config["seed"] + 1)
        loss = sum((t * torch.randn(t.shape, generator=weights, dtype=dtype).to(device)).sum() for t in outs)
        grads = torch.autograd.grad(loss, leaves, allow_unused=True) if loss.requires_grad else [None] * len(leaves)
        results.append(list(outs) + [g if g is not None else torch.zeros_like(leaf) for g, leaf in zip(grads, leaves)])
    scale = recurrence_scale(len(batch_sizes), batch_sizes[0], dtype)
    for name, a, e in zip(["output", "h_n", "c_n"] + [f"grad {n}" for n in names], *results):
        assert_close_nan(a, e, scale=scale, what=name)
