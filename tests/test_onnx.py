"""ONNX export: torch.onnx.export, with either exporter, turns fused_lstm's modules into standard ONNX
LSTM / GRU nodes that reproduce the modules in onnxruntime; what those operators cannot express fails at export
time; outside an export nothing changes."""

import io
import itertools

import onnx
import onnxruntime
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm
from conftest import assert_close
from fused_lstm import onnx_export, reference

pytestmark = [
    # What every TorchScript export of an RNN says, nn.LSTM's included: the exporter is deprecated, and
    # the argument checks on traced sizes are frozen into the trace.
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]

INPUT_SIZE, HIDDEN_SIZE, BATCH, STEPS = 5, 7, 3, 4
EXPORTERS = ("torchscript", "dynamo")


# ---------------------------------------------------------------------------------------------------
# Samples, export and onnxruntime, in one place.


def make_module(kind, **options):
    """A fused_lstm module of class `kind` ("LSTM", "GRU", "LSTMCell", "GRUCell") in eval mode."""
    return getattr(fused_lstm, kind)(INPUT_SIZE, HIDDEN_SIZE, **options).eval()


def make_args(module, *, batch=BATCH, steps=STEPS, batched=True, with_states=False):
    """Forward arguments for `module`: the input (a sequence of `steps`, or one step for a cell; `batch`
    sequences, or one unbatched sequence), then the initial state(s) if with_states (a tuple for the LSTMs)."""
    is_cell = isinstance(module, (fused_lstm.LSTMCell, fused_lstm.GRUCell))
    is_lstm = isinstance(module, (fused_lstm.LSTM, fused_lstm.LSTMCell))
    if is_cell:
        input_shape, state_shape = [batch, INPUT_SIZE], [batch, HIDDEN_SIZE]
    else:
        input_shape = [batch, steps, INPUT_SIZE] if module.batch_first else [steps, batch, INPUT_SIZE]
        state_shape = [module.num_layers * (2 if module.bidirectional else 1), batch, HIDDEN_SIZE]
    if not batched:
        input_shape.remove(batch)
        del state_shape[-2]
    args = (torch.randn(input_shape),)
    if with_states:
        states = tuple(torch.randn(state_shape) for _ in range(2 if is_lstm else 1))
        args += (states if is_lstm else states[0],)
    return args


def flat_tensors(value):
    """The tensors of nested tuples in order: how both exporters flatten inputs and outputs."""
    if isinstance(value, torch.Tensor):
        return [value]
    return [tensor for item in value for tensor in flat_tensors(item)]


def input_names(args):
    return ["input", "h0", "c0"][:len(flat_tensors(args))]


def export(module, args, exporter, dynamic=False):
    """torch.onnx.export with `exporter`, as a user would call it; returns the serialized model. dynamic:
    batch and time axes of the input (and the states' batch axis) left free (batched stacks only)."""
    names = input_names(args)
    if exporter == "torchscript":
        dynamic_axes = None
        if dynamic:
            batch_axis, time_axis = (0, 1) if module.batch_first else (1, 0)
            dynamic_axes = {"input": {batch_axis: "batch", time_axis: "time"},
                            **{name: {1: "batch"} for name in names[1:]}}
        buffer = io.BytesIO()
        torch.onnx.export(module, args, buffer, dynamo=False, input_names=names, dynamic_axes=dynamic_axes)
        return buffer.getvalue()
    dynamic_shapes = None
    if dynamic:
        batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
        batch_axis, time_axis = (0, 1) if module.batch_first else (1, 0)
        state_shapes = [{1: batch} for _ in names[1:]]
        dynamic_shapes = ({batch_axis: batch, time_axis: time},)
        if state_shapes:
            dynamic_shapes += (tuple(state_shapes) if len(state_shapes) == 2 else state_shapes[0],)
    program = torch.onnx.export(module, args, dynamo=True, input_names=names, dynamic_shapes=dynamic_shapes,
                                verbose=False)
    return program.model_proto.SerializeToString()


def run_in_onnxruntime(model, args):
    """The exported model's outputs on `args`, flattened, on onnxruntime's CPU provider."""
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    feed = {name: tensor.numpy() for name, tensor in zip(input_names(args), flat_tensors(args))}
    return [torch.from_numpy(output) for output in session.run(None, feed)]


def assert_onnxruntime_reproduces(module, model, args):
    with torch.no_grad():
        expected = flat_tensors(module(*args))
    actual = run_in_onnxruntime(model, args)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert_close(a, e)


def recurrent_nodes(model):
    """The op types of the exported graph's LSTM / GRU nodes, after checking that every node is a standard
    ONNX operator (no fused_lstm:: or other custom domain)."""
    graph = onnx.load_from_string(model).graph
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}, [node.domain for node in graph.node]
    return [node.op_type for node in graph.node if node.op_type in ("LSTM", "GRU")]


# ---------------------------------------------------------------------------------------------------
# Exported models reproduce the modules.

STACK_OPTIONS = ("kind", "num_layers", "bidirectional", "batch_first", "bias", "with_states")
ALL_STACK_CASES = list(itertools.product(("LSTM", "GRU"), (1, 2), (False, True), (False, True), (True, False),
                                         (False, True)))


def pairwise_stack_cases():
    """8 of the 64 cases in which every two options meet in all four combinations of their settings (the
    columns a, b, c, a^b, a^c, b^c of a 2^3 design): the dynamo exporter takes a second or two a model."""
    for a, b, c in itertools.product((0, 1), repeat=3):
        yield ("LSTM", "GRU")[a], (1, 2)[b], bool(c), bool(a ^ b), not a ^ c, bool(b ^ c)


STACK_CASES = ([("torchscript", *case) for case in ALL_STACK_CASES]
               + [("dynamo", *case) for case in pairwise_stack_cases()])


@pytest.mark.parametrize(("exporter", *STACK_OPTIONS), STACK_CASES)
def test_exported_stack_is_one_onnx_node_per_layer_and_direction_and_reproduces_the_module(
        exporter, kind, num_layers, bidirectional, batch_first, bias, with_states):
    module = make_module(kind, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                         bias=bias)
    args = make_args(module, with_states=with_states)
    model = export(module, args, exporter)
    assert recurrent_nodes(model) == [kind] * (num_layers * (2 if bidirectional else 1))
    assert_onnxruntime_reproduces(module, model, args)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell"])
@pytest.mark.parametrize("bias,with_states,batched", [(True, True, True), (False, False, False)])
def test_exported_cell_is_one_onnx_node_and_reproduces_the_module(exporter, kind, bias, with_states, batched):
    module = make_module(kind, bias=bias)
    args = make_args(module, with_states=with_states, batched=batched)
    model = export(module, args, exporter)
    assert recurrent_nodes(model) == [kind.removesuffix("Cell")]
    assert_onnxruntime_reproduces(module, model, args)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_exported_stack_reproduces_the_module_on_an_unbatched_sequence(exporter, kind):
    module = make_module(kind, num_layers=2, bidirectional=True)
    args = make_args(module, batched=False, with_states=True)
    assert_onnxruntime_reproduces(module, export(module, args, exporter), args)


# The dynamo exporter notes that the states' batch axis and the input's are one ("batch"), as intended.
@pytest.mark.filterwarnings("ignore:# The axis name. batch will not be used:UserWarning")
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("kind,with_states", [("LSTM", True), ("GRU", False)])
def test_stack_exported_with_dynamic_batch_and_time_runs_other_batch_sizes_and_lengths(exporter, kind, with_states):
    module = make_module(kind, num_layers=2, bidirectional=True, batch_first=True)
    model = export(module, make_args(module, with_states=with_states), exporter, dynamic=True)
    for batch, steps in [(2, 6), (5, 1)]:
        assert_onnxruntime_reproduces(module, model, make_args(module, batch=batch, steps=steps,
                                                               with_states=with_states))


# ---------------------------------------------------------------------------------------------------
# What ONNX's LSTM / GRU cannot express fails at export time.


class PackingModel(torch.nn.Module):
    """Packs a padded batch (lengths fixed at construction) before the recurrent module."""

    def __init__(self, recurrent, lengths):
        super().__init__()
        self.recurrent, self.lengths = recurrent, lengths

    def forward(self, input):
        output, _ = self.recurrent(pack_padded_sequence(input, self.lengths, enforce_sorted=False))
        return output.data


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_lstm_with_projection_fails_at_export_time(exporter):
    module = make_module("LSTM", proj_size=3)
    with pytest.raises(Exception, match="proj_size=3 cannot be exported to ONNX"):
        export(module, make_args(module), exporter)


@pytest.mark.filterwarnings("ignore:pack_padded_sequence has been called with a Python list:UserWarning")
@pytest.mark.parametrize("exporter", EXPORTERS)
def test_packed_sequence_input_fails_at_export_time(exporter):
    model = PackingModel(make_module("GRU"), [STEPS, 2, 1]).eval()
    with pytest.raises(Exception, match="exporting a PackedSequence input to ONNX is not supported"):
        export(model, (torch.randn(STEPS, BATCH, INPUT_SIZE),), exporter)


@pytest.mark.filterwarnings("ignore:Exporting a model while it is in training mode:UserWarning")
def test_dropout_in_training_mode_fails_at_export_time():
    # The TorchScript exporter puts the model in eval mode unless told otherwise; the dynamo one keeps it.
    module = make_module("LSTM", num_layers=2, dropout=0.5).train()
    with pytest.raises(Exception, match="cannot export dropout=0.5 in training mode"):
        export(module, make_args(module), "dynamo")


def test_dtype_the_onnx_operators_do_not_accept_fails_at_export_time():
    module = make_module("GRU").to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="do not accept torch.bfloat16"):
        export(module, (torch.randn(STEPS, BATCH, INPUT_SIZE, dtype=torch.bfloat16),), "torchscript")


# ---------------------------------------------------------------------------------------------------
# The layer functions outside an export, and the modules' eager path.


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_onnx_layer_functions_compute_what_the_reference_layers_compute(kind, reverse, bias):
    # Outside an export they run the ONNX operators' equations on the converted weights: this checks the
    # gate and bias layouts without onnxruntime.
    gates = 4 if kind == "LSTM" else 3
    input = torch.randn(STEPS * BATCH, INPUT_SIZE, dtype=torch.float64)
    batch_sizes = torch.full((STEPS,), BATCH, dtype=torch.int64)
    states = [torch.randn(BATCH, HIDDEN_SIZE, dtype=torch.float64) for _ in range(2 if kind == "LSTM" else 1)]
    weights = [torch.randn(gates * HIDDEN_SIZE, size, dtype=torch.float64) for size in (INPUT_SIZE, HIDDEN_SIZE)]
    biases = [torch.randn(gates * HIDDEN_SIZE, dtype=torch.float64) if bias else None for _ in range(2)]
    if kind == "LSTM":
        actual = onnx_export.lstm_layer(input, batch_sizes, *states, *weights, *biases, None, reverse)
        expected = reference.lstm_layer(input, batch_sizes, *states, *weights, *biases, None, reverse)
    else:
        actual = onnx_export.gru_layer(input, batch_sizes, *states, *weights, *biases, reverse)
        expected = reference.gru_layer(input, batch_sizes, *states, *weights, *biases, reverse)
    for a, e in zip(actual, expected, strict=True):
        assert_close(a, e)


def test_onnx_layer_functions_refuse_packed_rows_of_unequal_lengths():
    batch_sizes = torch.tensor([2, 1])
    with pytest.raises(RuntimeError, match="take padded input"):
        onnx_export.gru_layer(torch.randn(3, INPUT_SIZE), batch_sizes, torch.zeros(2, HIDDEN_SIZE),
                              torch.randn(3 * HIDDEN_SIZE, INPUT_SIZE), torch.randn(3 * HIDDEN_SIZE, HIDDEN_SIZE))


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "LSTMCell", "GRUCell"])
def test_outside_an_export_the_modules_run_the_fused_ops_with_unchanged_results(kind, monkeypatch):
    module = make_module(kind, bias=True)
    args = make_args(module, with_states=True)
    with torch.no_grad():
        before = flat_tensors(module(*args))
        export(module, args, "torchscript")

        def refuse(*_args, **_kwargs):
            raise AssertionError("an ONNX layer function ran outside an export")

        monkeypatch.setattr(onnx_export, "lstm_layer", refuse)
        monkeypatch.setattr(onnx_export, "gru_layer", refuse)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            after = flat_tensors(module(*args))
    fused_op = f"fused_lstm::{kind.removesuffix('Cell').lower()}_{'cell' if kind.endswith('Cell') else 'layer'}_forward"
    assert fused_op in {event.name for event in profile.events()}
    for a, b in zip(after, before, strict=True):
        assert torch.equal(a, b)
