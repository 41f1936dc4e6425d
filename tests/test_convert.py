"""fused_lstm.convert(model): every nn.LSTM, GRU, LSTMCell and GRUCell inside a model replaced by the fused module,
holding the same Parameter objects (an optimizer built before keeps working), with the same training flag and
hooks; shared modules stay shared; subclasses with their own forward are left alone and listed; what cannot be
carried over (parametrizations, weight_norm's extra parameters) is refused before anything changes. The model is a
seq2seq built here (torchaudio's Tacotron2 needs a torch older than the one pinned): an LSTM encoder, an LSTMCell
decoder, a GRU in a ModuleDict, a GRUCell in a Sequential, one LSTM used twice. fused_lstm.revert gives torch's
modules back."""

import copy
import io

import pytest
import torch
from torch import nn

import fused_lstm
from conftest import assert_close

INPUT, HIDDEN, STEPS, BATCH = 6, 8, 5, 3


class Seq2Seq(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, batch_first=True)
        self.bridge = nn.Linear(2 * HIDDEN, HIDDEN)
        self.decoder = nn.LSTMCell(HIDDEN, HIDDEN)
        self.extra = nn.ModuleDict({"gru": nn.GRU(HIDDEN, HIDDEN, bias=False)})
        self.post = nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.GRUCell(HIDDEN, HIDDEN))
        self.shared = nn.LSTM(HIDDEN, 4, proj_size=2)
        self.layers = nn.ModuleList([self.shared, self.shared])

    def forward(self, x):
        encoded, _ = self.encoder(x)
        features = self.bridge(encoded)  # [B, T, H]
        h = c = features.new_zeros(x.shape[0], HIDDEN)
        for t in range(features.shape[1]):
            h, c = self.decoder(features[:, t], (h, c))
        sequence, _ = self.extra["gru"](features.transpose(0, 1))
        g = self.post[1](self.post[0](sequence[-1]), h)
        first, _ = self.layers[0](sequence)
        second, _ = self.layers[1](sequence.flip(0))
        return g.sum(1) + first.sum((0, 2)) + second.sum((0, 2)) + c.sum(1)


def model_pair():
    torch.manual_seed(0)
    original = Seq2Seq()
    return original, copy.deepcopy(original)


def outputs_and_gradients(model, x):
    model.zero_grad()
    output = model(x)
    (output * torch.arange(1.0, 1 + output.numel())).sum().backward()
    return output.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_same_results(model, reference, x):
    output, gradients = outputs_and_gradients(model, x)
    expected_output, expected_gradients = outputs_and_gradients(reference, x)
    assert_close(output, expected_output)
    assert gradients.keys() == expected_gradients.keys()
    for name in gradients:
        assert_close(gradients[name], expected_gradients[name])


def recurrent_kinds(model):
    return sorted({type(m).__module__.split(".")[0] + "." + type(m).__name__ for m in model.modules()
                   if type(m).__name__ in ("LSTM", "GRU", "LSTMCell", "GRUCell")})


def test_converted_model_gives_the_same_outputs_and_gradients_on_the_fused_modules():
    model, reference = model_pair()
    conversion = fused_lstm.convert(model)
    assert conversion.model is model
    assert conversion.replaced == {
        "encoder": ("LSTM", "LSTM"), "decoder": ("LSTMCell", "LSTMCell"), "extra.gru": ("GRU", "GRU"),
        "post.1": ("GRUCell", "GRUCell"), "shared": ("LSTM", "LSTM"), "layers.0": ("LSTM", "LSTM"),
        "layers.1": ("LSTM", "LSTM")}
    assert recurrent_kinds(model) == ["fused_lstm.GRU", "fused_lstm.GRUCell", "fused_lstm.LSTM",
                                      "fused_lstm.LSTMCell"]
    assert model.shared is model.layers[0] is model.layers[1]  # shared stays shared
    assert model.shared.proj_size == 2 and model.encoder.bidirectional and model.encoder.batch_first
    assert_same_results(model, reference, torch.randn(BATCH, STEPS, INPUT))
    with fused_lstm.recording_paths() as paths:
        model(torch.randn(BATCH, STEPS, INPUT))
    assert {record["op"] for record in paths} == {"lstm_layer", "gru_layer", "lstm_cell", "gru_cell"}


def test_an_optimizer_built_before_the_conversion_keeps_training_the_model():
    model, reference = model_pair()
    parameters_before = {name: p for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    fused_lstm.convert(model)
    assert all(p is parameters_before[name] for name, p in model.named_parameters())
    x = torch.randn(BATCH, STEPS, INPUT)
    for _ in range(2):
        for m, opt in ((model, optimizer), (reference, reference_optimizer)):
            opt.zero_grad()
            m(x).sum().backward()
            opt.step()
    assert_same_results(model, reference, x)  # the steps moved the weights the fused modules use


def test_state_dicts_load_both_ways_and_save_load_and_deepcopy_work():
    model, reference = model_pair()
    fused_lstm.convert(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    reference.load_state_dict(model.state_dict())
    x = torch.randn(BATCH, STEPS, INPUT)
    assert_same_results(model, reference, x)
    fresh, _ = model_pair()
    fused_lstm.convert(fresh).model.load_state_dict(reference.state_dict())
    assert_same_results(fresh, reference, x)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    assert_same_results(torch.load(buffer, weights_only=False), reference, x)
    assert_same_results(copy.deepcopy(model), reference, x)


def test_training_flag_device_dtype_and_hooks_are_carried_over():
    model, _ = model_pair()
    model.double().eval()
    calls = []
    handle = model.decoder.register_forward_hook(lambda module, args, output: calls.append("forward"))
    model.encoder.register_forward_pre_hook(lambda module, args: calls.append("pre"))
    fused_lstm.convert(model)
    assert not model.encoder.training and not model.decoder.training
    assert model.encoder.weight_ih_l0.dtype == torch.float64
    model(torch.randn(BATCH, STEPS, INPUT, dtype=torch.float64))
    assert calls == ["pre"] + ["forward"] * STEPS
    handle.remove()  # a handle taken before the conversion removes the hook from the new module
    calls.clear()
    model(torch.randn(BATCH, STEPS, INPUT, dtype=torch.float64))
    assert calls == ["pre"]


def test_the_model_itself_and_a_copy_can_be_converted():
    lstm = nn.LSTM(INPUT, HIDDEN)
    conversion = fused_lstm.convert(lstm)
    assert isinstance(conversion.model, fused_lstm.LSTM) and conversion.replaced == {"(the model)": ("LSTM", "LSTM")}
    assert conversion.model.weight_ih_l0 is lstm.weight_ih_l0
    model, reference = model_pair()
    copied = fused_lstm.convert(model, inplace=False).model
    assert copied is not model and recurrent_kinds(model) == recurrent_kinds(reference)
    assert copied.encoder.weight_ih_l0 is not model.encoder.weight_ih_l0
    assert_same_results(copied, reference, torch.randn(BATCH, STEPS, INPUT))


class LSTMWithItsOwnForward(nn.LSTM):
    def forward(self, x, hx=None):
        return super().forward(x * 2, hx)


class PlainLSTMSubclass(nn.LSTM):
    pass


def test_a_subclass_with_its_own_forward_is_left_alone_and_listed():
    model = nn.ModuleDict({"own": LSTMWithItsOwnForward(INPUT, HIDDEN), "plain": PlainLSTMSubclass(INPUT, HIDDEN)})
    conversion = fused_lstm.convert(model)
    assert type(model["own"]) is LSTMWithItsOwnForward
    assert conversion.left_alone == {"own": "LSTMWithItsOwnForward subclasses LSTM with a forward of its own"}
    assert type(model["plain"]) is fused_lstm.LSTM and conversion.replaced == {"plain": ("PlainLSTMSubclass", "LSTM")}


@pytest.mark.parametrize("kind", ["parametrization", "old weight_norm"])
def test_what_cannot_be_carried_over_is_refused_and_nothing_changes(kind):
    model, _ = model_pair()
    if kind == "parametrization":
        torch.nn.utils.parametrizations.weight_norm(model.decoder, "weight_hh")
        message = r"decoder \(ParametrizedLSTMCell\) has parametrizations on weight_hh"
    else:
        with pytest.warns(FutureWarning):
            torch.nn.utils.weight_norm(model.extra["gru"], "weight_hh_l0")
        message = r"extra.gru \(GRU\) has parameters or buffers its class does not define \(weight_hh_l0_g"
    with pytest.raises(ValueError, match=message):
        fused_lstm.convert(model)
    assert type(model.encoder) is nn.LSTM  # checked before any replacement


def test_revert_gives_torch_modules_back_with_the_same_parameters():
    model, reference = model_pair()
    parameters = list(model.parameters())
    fused_lstm.convert(model)
    conversion = fused_lstm.revert(model)
    assert recurrent_kinds(model) == ["torch.GRU", "torch.GRUCell", "torch.LSTM", "torch.LSTMCell"]
    assert len(conversion.replaced) == 7 and model.shared is model.layers[1]
    assert all(a is b for a, b in zip(model.parameters(), parameters))
    assert_same_results(model, reference, torch.randn(BATCH, STEPS, INPUT))
