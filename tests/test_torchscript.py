"""TorchScript: torch.jit.trace and torch.jit.script of models that hold the fused modules give the eager
numbers and gradients, also after torch.jit.save and load; the scripted models run the fused ops through
torch.ops (no Python in the loop)."""

import io

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm
from conftest import assert_close

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning",
                                        "ignore:`torch.jit.trace` is deprecated:FutureWarning",
                                        "ignore:`torch.jit.save` is deprecated:FutureWarning",
                                        "ignore:`torch.jit.load` is deprecated:FutureWarning")


class Stacked(torch.nn.Module):
    """Every module kind, and every option worth scripting: layers, directions, batch_first, projection."""

    def __init__(self, dropout=0.0):
        super().__init__()
        self.lstm = fused_lstm.LSTM(3, 6, num_layers=2, bidirectional=True, batch_first=True, dropout=dropout)
        self.projected = fused_lstm.LSTM(12, 5, proj_size=3)
        self.gru = fused_lstm.GRU(3, 4, bias=False)
        self.lstm_cell = fused_lstm.LSTMCell(4, 5)
        self.gru_cell = fused_lstm.GRUCell(5, 4)

    def forward(self, x):
        y, (h, c) = self.lstm(x)
        z, _ = self.projected(y.transpose(0, 1))
        w, h_gru = self.gru(z)
        h1, c1 = self.lstm_cell(w[-1])
        return self.gru_cell(h1, h_gru[0]) + h.sum() + c.sum() + c1.sum()


class PackedInput(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = fused_lstm.LSTM(3, 4)
        self.gru = fused_lstm.GRU(4, 4)

    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, (h, c) = self.lstm(packed)
        out, h_gru = self.gru(out)
        return out.data.sum(0) + h.sum() + c.sum() + h_gru.sum()


def compile_model(model, how, *example):
    return torch.jit.trace(model, example) if how == "trace" else torch.jit.script(model)


def saved_and_loaded(module):
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


def output_and_gradients(model, x):
    x = x.detach().requires_grad_()
    out = model(x)
    parameters = [p for p in model.parameters()]
    return [out, *torch.autograd.grad(out.sum(), [x, *parameters])]


@pytest.mark.parametrize("how", ["trace", "script"])
def test_compiled_model_gives_the_eager_outputs_and_gradients(how):
    model = Stacked().eval()
    x = torch.randn(2, 5, 3)
    compiled = compile_model(model, how, x)
    for actual, expected in zip(output_and_gradients(compiled, x), output_and_gradients(model, x)):
        assert_close(actual, expected)


@pytest.mark.parametrize("how", ["trace", "script"])
def test_compiled_model_saves_and_loads(how):
    model = Stacked().eval()
    x = torch.randn(2, 5, 3)
    loaded = saved_and_loaded(compile_model(model, how, x))
    with torch.no_grad():
        assert_close(loaded(x), model(x))


@pytest.mark.parametrize("how", ["trace", "script"])
def test_compiled_model_runs_other_batch_sizes_and_lengths(how):
    model = Stacked().eval()
    compiled = compile_model(model, how, torch.randn(2, 5, 3))
    x = torch.randn(4, 7, 3)
    with torch.no_grad():
        assert_close(compiled(x), model(x))


def test_scripted_model_takes_packed_sequences():
    model = PackedInput()
    scripted = saved_and_loaded(torch.jit.script(model))
    x, lengths = torch.randn(6, 3, 3), torch.tensor([4, 6, 2])
    assert_close(scripted(x, lengths), model(x, lengths))


def test_scripted_model_applies_dropout_only_in_training():
    model = Stacked(dropout=0.5)
    scripted = torch.jit.script(model)
    x = torch.randn(2, 5, 3)
    scripted.eval()
    model.eval()
    assert_close(scripted(x), model(x))
    scripted.train()
    torch.manual_seed(0)
    first = scripted(x)
    torch.manual_seed(1)
    assert not torch.equal(first, scripted(x))  # dropout between the layers draws anew


def test_scripted_model_runs_the_fused_ops():
    graph = str(torch.jit.script(Stacked()).inlined_graph)
    for op in ("lstm_layer_forward", "gru_layer_forward", "lstm_cell_forward", "gru_cell_forward"):
        assert f"fused_lstm::{op}" in graph


def test_traced_model_records_the_fused_ops():
    traced = torch.jit.trace(Stacked(), (torch.randn(2, 5, 3),))
    graph = str(traced.inlined_graph)
    for op in ("lstm_layer_forward", "gru_layer_forward", "lstm_cell_forward", "gru_cell_forward"):
        assert f"fused_lstm::{op}" in graph
