"""The raw ops: float64 gradcheck and gradgradcheck, opcheck on every sample, torch.compile, and the eager calls'
C++ autograd against the ops' Python autograd."""

import inspect

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm
import samples
from conftest import DEVICES, assert_close

F64 = torch.float64
OPS = torch.ops.fused_lstm


def layer_sample(device, dtype=F64, batch_sizes=(3, 3, 2, 1), input_size=4, hidden=5, proj=0, bias=True,
                 requires_grad=True):
    """samples.lstm_layer_sample on `device`: packed rows for the given per-step batch sizes."""
    return samples.to_device(samples.lstm_layer_sample(batch_sizes=batch_sizes, input_size=input_size, hidden=hidden,
                                                       proj=proj, bias=bias, dtype=dtype, requires_grad=requires_grad),
                             device)


SAMPLE_KINDS = [
    dict(),
    dict(proj=3),
    dict(bias=False),
    dict(batch_sizes=(4, 4, 4)),
    dict(batch_sizes=(1,)),
    dict(batch_sizes=(5, 2, 2, 1, 1), proj=2, bias=False),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", SAMPLE_KINDS)
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck(device, kind, reverse):
    sample = layer_sample(device, **kind)
    names = [k for k, v in sample.items() if torch.is_tensor(v) and v.requires_grad]

    def layer(*tensors):
        arguments = dict(sample, **dict(zip(names, tensors)))
        return fused_lstm.ops.lstm_layer(**arguments, reverse=reverse)

    tensors = [sample[k] for k in names]
    assert torch.autograd.gradcheck(layer, tensors)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", [dict(), dict(proj=3, batch_sizes=(3, 2, 2, 1))])
@pytest.mark.parametrize("reverse", [False, True])
def test_gradgradcheck(device, kind, reverse):
    """Double backward (create_graph=True) goes through the reference and must be exact."""
    sample = layer_sample(device, input_size=3, hidden=3 if not kind.get("proj") else 4,
                          **{k: v for k, v in kind.items() if k != "proj"}, proj=2 if kind.get("proj") else 0)
    names = [k for k, v in sample.items() if torch.is_tensor(v) and v.requires_grad]

    def layer(*tensors):
        arguments = dict(sample, **dict(zip(names, tensors)))
        return fused_lstm.ops.lstm_layer(**arguments, reverse=reverse)

    assert torch.autograd.gradgradcheck(layer, [sample[k] for k in names])


@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_through_module(device):
    """A gradient penalty: d/dθ ‖∂L/∂x‖² must match nn.LSTM's (on the CPU: cuDNN has no double backward)."""
    torch_lstm = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=F64)
    fused = fused_lstm.LSTM(3, 4, num_layers=2, bidirectional=True, device=device, dtype=F64)
    fused.load_state_dict(torch_lstm.state_dict())
    x = torch.randn(5, 2, 3, dtype=F64)
    results = []
    for module in (torch_lstm, fused):
        leaf = x.to(next(module.parameters()).device).requires_grad_()
        out, _ = module(leaf)
        (grad_x,) = torch.autograd.grad(out.pow(2).sum(), leaf, create_graph=True)
        results.append([g.cpu() for g in torch.autograd.grad(grad_x.pow(2).sum(), list(module.parameters()))])
    for a, e in zip(*results):
        assert_close(a, e)


def opcheck_samples(device):
    for kind in SAMPLE_KINDS:
        for reverse in (False, True):
            for save in (False, True):
                # Saving nothing for backward is the inference mode: only valid without gradients.
                sample = layer_sample(device, dtype=torch.float32, requires_grad=save, **kind)
                yield dict(sample, reverse=reverse, save_for_backward=save)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_forward(device):
    op = OPS.lstm_layer_forward.default
    for arguments in opcheck_samples(device):
        torch.library.opcheck(op, samples.in_schema_order(op, arguments))


def backward_arguments(device, kind, reverse):
    """lstm_layer_backward's arguments after a forward (saving) on the float32 sample of `kind`."""
    sample = layer_sample(device, dtype=torch.float32, requires_grad=False, **kind)
    forward = samples.call(OPS.lstm_layer_forward, **sample, reverse=reverse, save_for_backward=True)
    return samples.lstm_backward_arguments(sample, forward, reverse)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_backward(device):
    op = OPS.lstm_layer_backward.default
    for kind in SAMPLE_KINDS:
        for reverse in (False, True):
            arguments = backward_arguments(device, kind, reverse)
            torch.library.opcheck(op, samples.in_schema_order(op, arguments))
            for skip in samples.GRADIENT_SKIPS:
                torch.library.opcheck(op, samples.in_schema_order(op, dict(arguments, **skip)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", SAMPLE_KINDS)
def test_backward_skips_only_the_gradients_not_asked_for(device, kind):
    arguments = backward_arguments(device, kind, reverse=False)
    full = samples.call(OPS.lstm_layer_backward, **arguments)
    for skip in samples.GRADIENT_SKIPS:
        partial = samples.call(OPS.lstm_layer_backward, **arguments, **skip)
        for name, value in partial.items():
            if samples.is_computed(name, skip):
                assert torch.equal(value, full[name]), (skip, name)
            else:
                assert value.numel() == 0, (skip, name)


@pytest.mark.parametrize("device", DEVICES)
def test_forward_without_saving_returns_same_results(device):
    sample = layer_sample(device, requires_grad=False, proj=3)
    saved = samples.call(OPS.lstm_layer_forward, **sample, reverse=False, save_for_backward=True)
    unsaved = samples.call(OPS.lstm_layer_forward, **sample, reverse=False, save_for_backward=False)
    for name in ("output", "h_n", "c_n"):
        assert torch.equal(saved[name], unsaved[name]), name
    for name in ("gates", "cell_prev", "proj_input"):
        assert unsaved[name].numel() == 0, name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(device, backend, monkeypatch):
    """nn.LSTM graph-breaks under dynamo; ours compiles into one graph, forward and backward, and the
    compiled backward runs the fused backward op (the reference path is only for double backward)."""
    torch._dynamo.reset()

    def refuse(*args, **kwargs):
        raise AssertionError("the compiled graph used the reference instead of the fused backward")

    monkeypatch.setattr(fused_lstm.reference, "lstm_layer", refuse)
    fused = fused_lstm.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3, device=device)
    compiled = torch.compile(fused, fullgraph=True, backend=backend)
    x = torch.randn(5, 3, 4, device=device, requires_grad=True)
    out, (h_n, c_n) = compiled(x)
    expected, (expected_h, expected_c) = fused(x)
    for a, e in [(out, expected), (h_n, expected_h), (c_n, expected_c)]:
        assert_close(a, e)
    grads = torch.autograd.grad(out.sum() + c_n.sum(), [x, *fused.parameters()])
    monkeypatch.undo()
    expected_grads = torch.autograd.grad(expected.sum() + expected_c.sum(), [x, *fused.parameters()])
    for a, e in zip(grads, expected_grads):
        assert_close(a, e)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_packed_sequence(device):
    torch._dynamo.reset()
    fused = fused_lstm.LSTM(4, 6, device=device)
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    packed = pack_padded_sequence(torch.randn(5, 3, 4, device=device), torch.tensor([5, 3, 2]))
    out, (h_n, _) = compiled(packed)
    expected, (expected_h, _) = fused(packed)
    assert_close(out.data, expected.data)
    assert_close(h_n, expected_h)


def test_the_cpu_never_takes_the_persistent_kernel():
    """The CUDA persistent kernel (tests/test_persistent.py) is not a CPU path, even with its option on."""
    sample = samples.lstm_layer_sample()
    with fused_lstm.options(cuda_persistent=True):
        forward, _ = torch.ops.fused_lstm.layer_paths("lstm_layer", sample["input"], sample["batch_sizes"],
                                                      sample["h0"], sample["weight_ih"], sample["weight_hh"], None)
    assert "persistent" not in forward


# The samples of each forward op for the eager autograd's test: (op, arguments but save_for_backward).
EAGER_SAMPLES = {
    "LSTM layer": ("lstm_layer_forward", lambda: dict(samples.lstm_layer_sample(batch_sizes=(3, 3, 2, 1), input_size=4,
                                                                                hidden=5, dtype=F64), reverse=False)),
    "LSTM layer, projected, no bias, reversed": (
        "lstm_layer_forward", lambda: dict(samples.lstm_layer_sample(batch_sizes=(4, 2, 1), input_size=3, hidden=5,
                                                                     proj=2, bias=False, dtype=F64), reverse=True)),
    "GRU layer": ("gru_layer_forward", lambda: dict(samples.gru_layer_sample(batch_sizes=(3, 2, 2), input_size=4,
                                                                             hidden=5, dtype=F64), reverse=False)),
    "GRU layer, no bias, reversed": ("gru_layer_forward", lambda: dict(
        samples.gru_layer_sample(batch_sizes=(2, 2, 1), input_size=3, hidden=4, bias=False, dtype=F64), reverse=True)),
    "LSTM cell": ("lstm_cell_forward", lambda: samples.cell_sample("lstm", 3, 5, 6, dtype=F64)),
    "LSTM cell, no bias": ("lstm_cell_forward", lambda: samples.cell_sample("lstm", 2, 4, 3, bias=False, dtype=F64)),
    "GRU cell": ("gru_cell_forward", lambda: samples.cell_sample("gru", 3, 5, 6, dtype=F64)),
    "GRU cell, no bias": ("gru_cell_forward", lambda: samples.cell_sample("gru", 2, 4, 3, bias=False, dtype=F64)),
}
# Which arguments need gradients: every subset a caller makes (data input, frozen weights, a state from outside,
# everything, only the biases).
NEEDS_GRAD = {"everything": None, "weights only": ("weight_ih", "weight_hh", "weight_hr", "bias_ih", "bias_hh"),
              "states only": ("h0", "c0"), "input and weight_hh": ("input", "weight_hh"),
              "biases only": ("bias_ih", "bias_hh")}


def eager_gradients(name, sample, wanted, through_python):
    """The differentiable outputs of op `name` on the sample, with `wanted` arguments (every floating-point one if
    None) needing gradients, and those gradients of Σ output² + Σ (other outputs)³ (None where not wanted).
    through_python: the ops' Python autograd.Function (torch.func's) instead of the C++ autograd of eager calls."""
    spec = fused_lstm.autograd.SPECS[name]
    leaves = {key: value.detach().requires_grad_(wanted is None or key in wanted)
              for key, value in sample.items() if torch.is_tensor(value) and value.is_floating_point()}
    arguments = samples.in_schema_order(getattr(OPS, name).default, {**sample, **leaves, "save_for_backward": True})
    if through_python:
        outputs = fused_lstm.autograd.FORWARD_FUNCTIONS[name].apply(*arguments)
    else:
        outputs = fused_lstm.autograd.call(name, *arguments)
    outputs = outputs[:len(spec.outputs)]
    loss = (outputs[0] ** 2).sum() + sum((output ** 3).sum() for output in outputs[1:])
    needing = [key for key, leaf in leaves.items() if leaf.requires_grad]
    grads = dict(zip(needing, torch.autograd.grad(loss, [leaves[key] for key in needing]))) if needing else {}
    return outputs, {key: grads.get(key) for key in leaves}


@pytest.mark.parametrize("case", list(EAGER_SAMPLES), ids=lambda s: s.replace(" ", "_").replace(",", ""))
@pytest.mark.parametrize("needs_grad", list(NEEDS_GRAD), ids=lambda s: s.replace(" ", "_"))
def test_eager_autograd_in_cpp_matches_the_ops_python_autograd(case, needs_grad):
    """An eager call of an op with gradients runs the C++ autograd (csrc/eager_autograd.cpp): the same outputs,
    and the same gradients (bitwise: the same ops in the same order) for every subset of arguments that need
    them, None for the rest, as the ops' Python autograd."""
    name, make_sample = EAGER_SAMPLES[case]
    sample = make_sample()
    wanted = NEEDS_GRAD[needs_grad]
    if wanted is not None and not any(sample.get(key) is not None for key in wanted):
        pytest.skip("no argument of this sample needs a gradient")
    outputs, grads = eager_gradients(name, sample, wanted, through_python=False)
    assert "OpAutograd" in outputs[0].grad_fn.name()
    expected_outputs, expected_grads = eager_gradients(name, sample, wanted, through_python=True)
    for actual, expected in zip(outputs, expected_outputs):
        assert torch.equal(actual, expected)
    for key, expected in expected_grads.items():
        assert (grads[key] is None) == (expected is None), key
        if expected is not None:
            assert torch.equal(grads[key], expected), key


# The ops' descriptions (csrc/op_descriptions.h), read by the C++ eager autograd and by Python.
DESCRIPTIONS = fused_lstm.descriptions.DESCRIPTIONS
FLAGS = ("has_bias", "compute_grad_input", "compute_grad_weights")


@pytest.mark.parametrize("name", list(DESCRIPTIONS))
def test_each_description_names_only_what_the_schemas_have(name):
    """Every name a description gives is an argument or result of its ops, and the backward op follows the
    conventions both autograds rely on: its arguments are the outputs' cotangents grad_<output>, tensors the
    forward saves (by their forward names), the forward's plain arguments and the three flags; each of its results
    is the gradient of differentiable arguments, and every differentiable argument gets one."""
    d = DESCRIPTIONS[name]
    assert set(d.differentiable) <= set(d.tensor_arguments)
    assert set(d.weights) <= set(d.differentiable) and "input" in d.differentiable
    assert d.returns[:len(d.outputs)] == d.outputs
    assert set(d.saved_outputs) == set(d.returns) - set(d.outputs)
    assert set(d.cotangent_like) <= set(d.outputs) and set(d.cotangent_like.values()) <= set(d.saved)
    plain = set(d.arguments) - set(d.tensor_arguments) - {"save_for_backward"}
    for argument in d.backward_arguments:
        cotangent = argument.startswith("grad_") and argument[len("grad_"):] in d.outputs
        assert cotangent or argument in d.saved or argument in plain or argument in FLAGS, argument
    targets = [target for result in d.backward_returns for target in d.gradient_targets(result)]
    assert sorted(targets) == sorted(d.differentiable)
    assert d.bias in d.differentiable


@pytest.mark.parametrize("op", [name for d in DESCRIPTIONS.values() for name in (d.op, d.backward_op)])
def test_each_fake_kernel_takes_the_schemas_arguments_by_name(op):
    """The fake kernels (fused_lstm/fake_kernels.py) are written by hand: their parameters must be the schema's
    arguments, in order, so that a renamed or added argument cannot leave them behind."""
    function = getattr(fused_lstm.fake_kernels, f"_{op}_fake")
    assert list(inspect.signature(function).parameters) == \
        [argument.name for argument in getattr(OPS, op).default._schema.arguments]


def test_the_eager_autograd_refuses_arguments_of_the_wrong_type():
    """The C++ eager autograd's entry points check each argument against the schema: a wrong type or count is a
    TypeError, never a crash."""
    sample = samples.cell_sample("lstm", 2, 3, 4, dtype=F64)
    arguments = samples.in_schema_order(OPS.lstm_cell_forward.default, {**sample, "save_for_backward": True})[:-1]
    entry = fused_lstm._C.lstm_cell_forward_autograd
    with pytest.raises(TypeError, match="takes 7 arguments"):
        entry(*arguments[:-1])
    with pytest.raises(TypeError, match="input must be a Tensor"):
        entry(None, *arguments[1:])
    with pytest.raises(TypeError, match="h0 must be a Tensor"):
        entry(arguments[0], 1.0, *arguments[2:])
