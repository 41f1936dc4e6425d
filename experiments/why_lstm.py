"""Why the LSTM works, measured: gradient flow through time and long-lag learning.

Compares, at one hidden size, a plain tanh RNN, the "single network" cell that computes the new cell
state (and then the new hidden state) from [x_t, h_{t-1}, c_{t-1}] with one tanh layer each, the LSTM
(fused_lstm.LSTM) with forget-gate bias 0 and 1, the 1997 LSTM without a forget gate (constant error
carousel), and the GRU, on
  * gradient flow: ||dL/dx_t|| (and ||dy/dx_t||) against the lag T - t, at initialisation and after
    training, averaged over seeds;
  * the adding problem (Hochreiter & Schmidhuber 1997) at several sequence lengths T: test-MSE
    learning curves against the predict-the-mean baseline 1/6 and the final test MSE per cell and T.

Run from the repository root:
    python -m experiments.why_lstm            # full run, results in experiments/results/
    python -m experiments.why_lstm --quick    # seconds-long smoke run (used by the tests)
The LSTM runs use fused_lstm.LSTM unless --lstm-impl torch is given (for developing without the
extension built).
"""

import argparse
import csv
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

ADDING_BASELINE_MSE = 1.0 / 6.0  # Var(u1 + u2) for u ~ U(0, 1): the MSE of always predicting 1
INPUT_SIZE = 2  # value channel, marker channel
SOLVED_MSE = 0.01  # a run counts as "solved" below this test MSE (about 6% of the baseline)

# Display name -> short description, in plotting order.
CELLS = {
    "tanh RNN": "nn.RNN, h_t = tanh(W_x x_t + W_h h_{t-1} + b)",
    "single network": "c_t = tanh(W[x_t,h_{t-1},c_{t-1}]+b), h_t = tanh(V[x_t,h_{t-1},c_t]+b')",
    "LSTM f-bias 0": "LSTM, forget-gate bias 0",
    "LSTM f-bias 1": "LSTM, forget-gate bias 1",
    "LSTM no forget gate": "1997 LSTM, f = 1: c_t = c_{t-1} + s(i) tanh(g)",
    "GRU": "GRU",
}
CELL_COLORS = {
    "tanh RNN": "tab:red",
    "single network": "tab:orange",
    "LSTM f-bias 0": "tab:cyan",
    "LSTM f-bias 1": "tab:blue",
    "LSTM no forget gate": "tab:purple",
    "GRU": "tab:green",
}


@dataclass
class Config:
    sequence_lengths: list = field(default_factory=lambda: [50, 100, 200])
    seeds: list = field(default_factory=lambda: [0, 1])
    hidden_size: int = 64
    batch_size: int = 64
    learning_rate: float = 1e-2
    train_steps: int = 1000
    eval_every: int = 40
    test_batch_size: int = 256
    gradient_batch_size: int = 128
    grad_clip_norm: float = 1.0
    cells: list = field(default_factory=lambda: list(CELLS))
    lstm_impl: str = "fused"


def quick_config():
    return Config(sequence_lengths=[10], seeds=[0], hidden_size=16, batch_size=16, train_steps=30,
                  eval_every=10, test_batch_size=64, gradient_batch_size=16)


# ----------------------------------------------------------------------------------------------
# Data


def make_adding_batch(batch_size, seq_len, generator):
    """The adding problem: x[:, t] = (value, marker); the two markers sit one in each half of the
    sequence, so the first marked value must be remembered for at least T/2 steps.
    Target: the sum of the two marked values."""
    values = torch.rand(batch_size, seq_len, generator=generator)
    half = seq_len // 2
    first = torch.randint(0, half, (batch_size,), generator=generator)
    second = torch.randint(half, seq_len, (batch_size,), generator=generator)
    rows = torch.arange(batch_size)
    markers = torch.zeros(batch_size, seq_len)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    inputs = torch.stack([values, markers], dim=-1)
    targets = (values[rows, first] + values[rows, second]).unsqueeze(-1)
    return inputs, targets


# ----------------------------------------------------------------------------------------------
# Recurrent cells.  Every module maps a batch-first sequence [B, T, I] to the last hidden state [B, H].


def init_uniform_like_torch_rnn(module, hidden_size):
    """PyTorch initialises nn.RNN/GRU/LSTM weights and biases with U(-1/sqrt(H), 1/sqrt(H)); the
    hand-written cells get the same so that no cell starts with a different weight scale."""
    bound = 1.0 / math.sqrt(hidden_size)
    for parameter in module.parameters():
        nn.init.uniform_(parameter, -bound, bound)


class LibraryRecurrent(nn.Module):
    """Wraps nn.RNN / nn.GRU / nn.LSTM / fused_lstm.LSTM (all batch_first, one layer) and starts
    them from zero state, passed explicitly."""

    def __init__(self, core, has_cell_state):
        super().__init__()
        self.core = core
        self.has_cell_state = has_cell_state

    def forward(self, inputs):
        zeros = inputs.new_zeros(1, inputs.shape[0], self.core.hidden_size)
        if self.has_cell_state:
            outputs, _ = self.core(inputs, (zeros, zeros.clone()))
        else:
            outputs, _ = self.core(inputs, zeros)
        return outputs[:, -1]


class SingleNetworkRecurrence(torch.autograd.Function):
    """The time loop of SingleNetworkCell with a hand-written backward pass.  Autograd through a
    Python loop records ~10 graph nodes per step and made this cell 3-4x slower than nn.LSTM; this
    keeps the full run short on a 2-core CPU.  tests/test_experiments.py checks it against autograd.

    cell_from_input, hidden_from_input: [B, T, H], the x_t parts plus biases, precomputed.
    cell_weight, hidden_weight: [2H, H], act on [h_{t-1}, c_{t-1}] and [h_{t-1}, c_t].
    Returns the last hidden state h_T."""

    @staticmethod
    def forward(ctx, cell_from_input, hidden_from_input, cell_weight, hidden_weight):
        batch, seq_len, hidden_size = cell_from_input.shape
        # states[t] = [h_{t-1}, c_{t-1}] (zeros at t = 0): the cell layer's recurrent input as is.
        states = cell_from_input.new_zeros(seq_len + 1, batch, 2 * hidden_size)
        for t in range(seq_len):
            cell = torch.tanh(torch.addmm(cell_from_input[:, t], states[t], cell_weight))
            states[t + 1, :, hidden_size:] = cell
            hidden = torch.tanh(torch.addmm(hidden_from_input[:, t], torch.cat([states[t, :, :hidden_size], cell], 1), hidden_weight))
            states[t + 1, :, :hidden_size] = hidden
        ctx.save_for_backward(states, cell_weight, hidden_weight)
        return states[seq_len, :, :hidden_size].clone()

    @staticmethod
    def backward(ctx, grad_last_hidden):
        states, cell_weight, hidden_weight = ctx.saved_tensors
        seq_len, hidden_size = states.shape[0] - 1, states.shape[2] // 2
        hiddens, cells = states[1:, :, :hidden_size], states[1:, :, hidden_size:]
        # tanh' for all steps at once, outside the sequential loop.
        hidden_tanh_grad, cell_tanh_grad = 1 - hiddens ** 2, 1 - cells ** 2
        grad_cell_pre = torch.empty_like(cells)  # dL/d(pre-activation of c_t), [T, B, H]
        grad_hidden_pre = torch.empty_like(hiddens)
        grad_hidden = grad_last_hidden.contiguous()
        grad_cell = torch.zeros_like(grad_hidden)
        hidden_weight_t, cell_weight_t = hidden_weight.t(), cell_weight.t()
        for t in reversed(range(seq_len)):
            torch.mul(grad_hidden, hidden_tanh_grad[t], out=grad_hidden_pre[t])
            from_hidden_layer = grad_hidden_pre[t] @ hidden_weight_t  # d/d[h_{t-1}, c_t]
            torch.mul(grad_cell + from_hidden_layer[:, hidden_size:], cell_tanh_grad[t], out=grad_cell_pre[t])
            from_cell_layer = grad_cell_pre[t] @ cell_weight_t  # d/d[h_{t-1}, c_{t-1}]
            grad_hidden = from_hidden_layer[:, :hidden_size] + from_cell_layer[:, :hidden_size]
            grad_cell = from_cell_layer[:, hidden_size:]
        # Weight gradients summed over all steps in one matmul each.
        hidden_layer_inputs = torch.cat([states[:-1, :, :hidden_size], cells], 2).reshape(-1, 2 * hidden_size)
        grad_cell_weight = states[:-1].reshape(-1, 2 * hidden_size).t() @ grad_cell_pre.reshape(-1, hidden_size)
        grad_hidden_weight = hidden_layer_inputs.t() @ grad_hidden_pre.reshape(-1, hidden_size)
        return grad_cell_pre.transpose(0, 1), grad_hidden_pre.transpose(0, 1), grad_cell_weight, grad_hidden_weight


class SingleNetworkCell(nn.Module):
    """The cell the question proposes: one tanh layer computes the new cell state from
    [x_t, h_{t-1}, c_{t-1}], a second computes the new hidden state from [x_t, h_{t-1}, c_t].
    There is no additive path: c_{t-1} reaches c_t only through a weight matrix and a tanh."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.cell_layer = nn.Linear(input_size + 2 * hidden_size, hidden_size)
        self.hidden_layer = nn.Linear(input_size + 2 * hidden_size, hidden_size)
        init_uniform_like_torch_rnn(self, hidden_size)

    def split_weights(self):
        """(input part of both layers, recurrent part of both layers as [2H, H] right factors)."""
        split = self.input_size
        return ((self.cell_layer.weight[:, :split], self.hidden_layer.weight[:, :split]),
                (self.cell_layer.weight[:, split:].t(), self.hidden_layer.weight[:, split:].t()))

    def forward(self, inputs, use_autograd_loop=False):
        (cell_input_weight, hidden_input_weight), (cell_weight, hidden_weight) = self.split_weights()
        # The x_t parts do not depend on the recurrence: one matmul for all time steps.
        cell_from_input = nn.functional.linear(inputs, cell_input_weight, self.cell_layer.bias)
        hidden_from_input = nn.functional.linear(inputs, hidden_input_weight, self.hidden_layer.bias)
        if not use_autograd_loop:
            return SingleNetworkRecurrence.apply(cell_from_input, hidden_from_input, cell_weight, hidden_weight)
        # Reference: the same recurrence differentiated by autograd (used by the tests).
        hidden = inputs.new_zeros(inputs.shape[0], self.hidden_size)
        cell = inputs.new_zeros(inputs.shape[0], self.hidden_size)
        for t in range(inputs.shape[1]):
            cell = torch.tanh(torch.addmm(cell_from_input[:, t], torch.cat([hidden, cell], 1), cell_weight))
            hidden = torch.tanh(torch.addmm(hidden_from_input[:, t], torch.cat([hidden, cell], 1), hidden_weight))
        return hidden


class NoForgetGateRecurrence(torch.autograd.Function):
    """The time loop of NoForgetGateLSTM with a hand-written backward pass (same reason as
    SingleNetworkRecurrence).  gates_from_input: [B, T, 3H] in gate order o, i, g (sigmoid gates
    adjacent so one sigmoid call covers both; i and g adjacent because both get dL/dc_t);
    recurrent_weight: [H, 3H].  Returns h_T."""

    @staticmethod
    def forward(ctx, gates_from_input, recurrent_weight):
        batch, seq_len, three_hidden = gates_from_input.shape
        hidden_size = three_hidden // 3
        hiddens = gates_from_input.new_zeros(seq_len + 1, batch, hidden_size)  # hiddens[t + 1] = h_t
        cells = gates_from_input.new_zeros(seq_len + 1, batch, hidden_size)
        tanh_cells = gates_from_input.new_empty(seq_len, batch, hidden_size)
        activations = gates_from_input.new_empty(seq_len, batch, three_hidden)  # s(o), s(i), tanh(g)
        for t in range(seq_len):
            gates = torch.addmm(gates_from_input[:, t], hiddens[t], recurrent_weight)
            torch.sigmoid(gates[:, :2 * hidden_size], out=activations[t, :, :2 * hidden_size])
            torch.tanh(gates[:, 2 * hidden_size:], out=activations[t, :, 2 * hidden_size:])
            output_gate, input_gate, candidate = activations[t].chunk(3, dim=1)
            torch.addcmul(cells[t], input_gate, candidate, out=cells[t + 1])
            torch.tanh(cells[t + 1], out=tanh_cells[t])
            torch.mul(output_gate, tanh_cells[t], out=hiddens[t + 1])
        ctx.save_for_backward(hiddens, activations, tanh_cells, recurrent_weight)
        return hiddens[seq_len].clone()

    @staticmethod
    def backward(ctx, grad_last_hidden):
        hiddens, activations, tanh_cells, recurrent_weight = ctx.saved_tensors
        seq_len, hidden_size = activations.shape[0], hiddens.shape[2]
        output_gate, input_gate, candidate = activations.chunk(3, dim=2)
        # Local derivatives for all steps at once, outside the sequential loop.
        hidden_to_cell = output_gate * (1 - tanh_cells ** 2)  # dh_t/dc_t
        output_factor = tanh_cells * output_gate * (1 - output_gate)  # dh_t/d(o pre-activation)
        input_candidate_factor = torch.cat([candidate * input_gate * (1 - input_gate),  # dc_t/d(i pre)
                                            input_gate * (1 - candidate ** 2)], 2)  # dc_t/d(g pre)
        grad_gates = torch.empty_like(activations)  # dL/d(gate pre-activations), [T, B, 3H]
        grad_hidden = grad_last_hidden.contiguous()
        grad_cell = torch.zeros_like(grad_hidden)
        recurrent_weight_t = recurrent_weight.t()
        for t in reversed(range(seq_len)):
            # c_t = c_{t-1} + i g: the carried gradient passes to c_{t-1} unchanged (the carousel).
            grad_cell = torch.addcmul(grad_cell, grad_hidden, hidden_to_cell[t])
            torch.mul(grad_hidden, output_factor[t], out=grad_gates[t, :, :hidden_size])
            torch.mul(grad_cell.repeat(1, 2), input_candidate_factor[t], out=grad_gates[t, :, hidden_size:])
            grad_hidden = grad_gates[t] @ recurrent_weight_t
        grad_recurrent_weight = hiddens[:-1].reshape(-1, hidden_size).t() @ grad_gates.reshape(-1, 3 * hidden_size)
        return grad_gates.transpose(0, 1), grad_recurrent_weight


class NoForgetGateLSTM(nn.Module):
    """The 1997 LSTM: input gate, candidate and output gate, but no forget gate, so
    c_t = c_{t-1} + s(i_t) * tanh(g_t): the constant error carousel (dc_t/dc_{t-1} = 1 exactly).
    Gate order in the weights: o, i, g.  (fused_lstm always has f, hence this small module.)"""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size))
        init_uniform_like_torch_rnn(self, hidden_size)

    def forward(self, inputs, use_autograd_loop=False):
        gates_from_input = nn.functional.linear(inputs, self.weight_ih, self.bias_ih + self.bias_hh)
        recurrent_weight = self.weight_hh.t()
        if not use_autograd_loop:
            return NoForgetGateRecurrence.apply(gates_from_input, recurrent_weight)
        # Reference: the same recurrence differentiated by autograd (used by the tests).
        hidden = inputs.new_zeros(inputs.shape[0], self.hidden_size)
        cell = inputs.new_zeros(inputs.shape[0], self.hidden_size)
        for t in range(inputs.shape[1]):
            gates = torch.addmm(gates_from_input[:, t], hidden, recurrent_weight)
            output_gate, input_gate, candidate = gates.chunk(3, dim=1)
            cell = cell + torch.sigmoid(input_gate) * torch.tanh(candidate)
            hidden = torch.sigmoid(output_gate) * torch.tanh(cell)
        return hidden


def import_fused_lstm():
    import fused_lstm  # noqa: the built extension, importable from the repository root

    return fused_lstm


def make_lstm(hidden_size, forget_bias, lstm_impl):
    if lstm_impl == "fused":
        lstm = import_fused_lstm().LSTM(INPUT_SIZE, hidden_size, batch_first=True)
    else:
        lstm = nn.LSTM(INPUT_SIZE, hidden_size, batch_first=True)
    with torch.no_grad():
        # Gate order i, f, g, o: rows [H:2H] are the forget gate; the effective bias is the sum.
        lstm.bias_ih_l0[hidden_size:2 * hidden_size].fill_(forget_bias)
        lstm.bias_hh_l0[hidden_size:2 * hidden_size].fill_(0.0)
    return LibraryRecurrent(lstm, has_cell_state=True)


def make_gru(hidden_size, lstm_impl):
    # Use a fused GRU as soon as the extension offers one (only when the fused LSTM is asked for).
    if lstm_impl == "fused" and hasattr(import_fused_lstm(), "GRU"):
        gru = import_fused_lstm().GRU(INPUT_SIZE, hidden_size, batch_first=True)
    else:
        gru = nn.GRU(INPUT_SIZE, hidden_size, batch_first=True)
    return LibraryRecurrent(gru, has_cell_state=False)


def make_recurrent(cell_name, hidden_size, lstm_impl):
    if cell_name == "tanh RNN":
        return LibraryRecurrent(nn.RNN(INPUT_SIZE, hidden_size, nonlinearity="tanh", batch_first=True), False)
    if cell_name == "single network":
        return SingleNetworkCell(INPUT_SIZE, hidden_size)
    if cell_name == "LSTM f-bias 0":
        return make_lstm(hidden_size, 0.0, lstm_impl)
    if cell_name == "LSTM f-bias 1":
        return make_lstm(hidden_size, 1.0, lstm_impl)
    if cell_name == "LSTM no forget gate":
        return NoForgetGateLSTM(INPUT_SIZE, hidden_size)
    if cell_name == "GRU":
        return make_gru(hidden_size, lstm_impl)
    raise ValueError(f"unknown cell {cell_name!r}")


class AddingModel(nn.Module):
    """Recurrent cell followed by a linear read-out of the last hidden state."""

    def __init__(self, cell_name, hidden_size, lstm_impl):
        super().__init__()
        self.recurrent = make_recurrent(cell_name, hidden_size, lstm_impl)
        self.readout = nn.Linear(hidden_size, 1)

    def forward(self, inputs):
        return self.readout(self.recurrent(inputs))


def implementation_name(model):
    core = getattr(model.recurrent, "core", model.recurrent)
    module = type(core).__module__
    return f"{'experiments.why_lstm' if module == '__main__' else module}.{type(core).__name__}"


def count_parameters(module):
    return sum(parameter.numel() for parameter in module.parameters())


# ----------------------------------------------------------------------------------------------
# Measurements


def gradient_profile(model, inputs, targets):
    """Per-sample gradient norms with respect to each input step, averaged over the batch.
    Returns (dloss_dx, doutput_dx), each a list indexed by lag = T-1-t (lag 0 = last step).
    dL/dx_t = 2 (y_hat - y) dy_hat/dx_t per sample, so one backward pass gives both; dy_hat/dx_t
    shows how far back the prediction can see, independent of how small the residual has become."""
    inputs = inputs.clone().requires_grad_(True)
    predictions = model(inputs)
    (output_grad,) = torch.autograd.grad(predictions.sum(), inputs)  # samples are independent
    output_grad_norm = output_grad.norm(dim=-1)  # [B, T]
    residual = (predictions.detach() - targets).abs()  # [B, 1]
    loss_grad_norm = 2.0 * residual * output_grad_norm
    by_lag = lambda norms: norms.mean(0).flip(0).tolist()
    return by_lag(loss_grad_norm), by_lag(output_grad_norm)


@torch.no_grad()
def test_mse(model, test_inputs, test_targets):
    return nn.functional.mse_loss(model(test_inputs), test_targets).item()


def train_step(model, optimizer, inputs, targets, config):
    """One Adam step on the MSE with the gradient norm clipped; returns the loss."""
    loss = nn.functional.mse_loss(model(inputs), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
    optimizer.step()
    return loss


def train_and_measure(cell_name, seq_len, seed, config):
    torch.manual_seed(seed)
    model = AddingModel(cell_name, config.hidden_size, config.lstm_impl)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    # Every cell sees the same training stream for a given (seed, T), and the same test batch.
    train_generator = torch.Generator().manual_seed(10_000 * (seed + 1) + seq_len)
    test_inputs, test_targets = make_adding_batch(config.test_batch_size, seq_len, torch.Generator().manual_seed(777 + seq_len))
    grad_inputs, grad_targets = make_adding_batch(config.gradient_batch_size, seq_len, torch.Generator().manual_seed(555 + seq_len))

    start = time.perf_counter()
    init_loss_grad, init_output_grad = gradient_profile(model, grad_inputs, grad_targets)
    curve = [(0, test_mse(model, test_inputs, test_targets))]
    diverged = False
    for step in range(1, config.train_steps + 1):
        inputs, targets = make_adding_batch(config.batch_size, seq_len, train_generator)
        loss = train_step(model, optimizer, inputs, targets, config)
        if not math.isfinite(loss.item()):
            diverged = True
            curve.append((step, float("nan")))
            break
        if step % config.eval_every == 0 or step == config.train_steps:
            curve.append((step, test_mse(model, test_inputs, test_targets)))
    trained_loss_grad, trained_output_grad = gradient_profile(model, grad_inputs, grad_targets)
    return {
        "cell": cell_name,
        "T": seq_len,
        "seed": seed,
        "implementation": implementation_name(model),
        "parameters": count_parameters(model),
        "recurrent_parameters": count_parameters(model.recurrent),
        "final_test_mse": curve[-1][1],
        "diverged": diverged,
        "seconds": time.perf_counter() - start,
        "curve": curve,
        "gradient": {
            "init": {"dloss_dx": init_loss_grad, "doutput_dx": init_output_grad},
            "trained": {"dloss_dx": trained_loss_grad, "doutput_dx": trained_output_grad},
        },
    }


# ----------------------------------------------------------------------------------------------
# Summaries and output files


def mean(values):
    values = list(values)
    return sum(values) / len(values)


def summarize(runs, config):
    table = []
    for seq_len in config.sequence_lengths:
        for cell_name in config.cells:
            finals = [run["final_test_mse"] for run in runs if run["cell"] == cell_name and run["T"] == seq_len]
            if not finals:
                continue
            table.append({
                "cell": cell_name,
                "T": seq_len,
                "mean_final_mse": mean(finals),
                "min_final_mse": min(finals),
                "max_final_mse": max(finals),
                "solved_seeds": sum(value < SOLVED_MSE for value in finals),
                "seeds": len(finals),
            })
    return table


def seed_band(profiles):
    """Mean, min and max over seeds of equally long per-lag profiles."""
    columns = list(zip(*profiles))
    return [mean(c) for c in columns], [min(c) for c in columns], [max(c) for c in columns]


def write_csv_files(runs, config, out_dir):
    with open(os.path.join(out_dir, "final_mse.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell", "T", "seed", "final_test_mse", "parameters", "implementation", "seconds"])
        for run in runs:
            writer.writerow([run["cell"], run["T"], run["seed"], f"{run['final_test_mse']:.6g}",
                             run["parameters"], run["implementation"], f"{run['seconds']:.1f}"])
    with open(os.path.join(out_dir, "learning_curves.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell", "T", "seed", "step", "test_mse"])
        for run in runs:
            for step, value in run["curve"]:
                writer.writerow([run["cell"], run["T"], run["seed"], step, f"{value:.5g}"])
    # Per-lag gradient norms, reduced over seeds and thinned to about 25 lags per profile to keep
    # the file small (the plots use every lag).
    with open(os.path.join(out_dir, "gradient_flow.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell", "T", "stage", "quantity", "lag", "mean_over_seeds", "min_over_seeds", "max_over_seeds"])
        for seq_len in config.sequence_lengths:
            for cell_name in config.cells:
                cell_runs = [run for run in runs if run["cell"] == cell_name and run["T"] == seq_len]
                if not cell_runs:
                    continue
                for stage in ("init", "trained"):
                    for quantity in ("dloss_dx", "doutput_dx"):
                        band = seed_band([run["gradient"][stage][quantity] for run in cell_runs])
                        lag_stride = max(1, seq_len // 25)
                        for lag, (avg, low, high) in enumerate(zip(*band)):
                            if lag % lag_stride:
                                continue
                            writer.writerow([cell_name, seq_len, stage, quantity, lag, f"{avg:.4g}", f"{low:.4g}", f"{high:.4g}"])


def plot_learning_curves(runs, config, path):
    import matplotlib.pyplot as plt

    lengths = config.sequence_lengths
    figure, axes = plt.subplots(1, len(lengths), figsize=(4.6 * len(lengths), 3.8), sharey=True, squeeze=False)
    for axis, seq_len in zip(axes[0], lengths):
        for cell_name in config.cells:
            cell_runs = [run for run in runs if run["cell"] == cell_name and run["T"] == seq_len]
            for index, run in enumerate(cell_runs):
                steps = [step for step, _ in run["curve"]]
                values = [value for _, value in run["curve"]]
                axis.plot(steps, values, color=CELL_COLORS[cell_name], alpha=0.8, linewidth=1.2,
                          label=cell_name if index == 0 else None)
        axis.axhline(ADDING_BASELINE_MSE, color="black", linestyle="--", linewidth=1, label="predict the mean (1/6)")
        axis.set_yscale("log")
        axis.set_title(f"adding problem, T = {seq_len}")
        axis.set_xlabel("training step")
        axis.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("test MSE (one line per seed)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_gradient_flow(runs, config, quantity, ylabel, path):
    import matplotlib.pyplot as plt

    lengths = config.sequence_lengths
    figure, axes = plt.subplots(len(lengths), 2, figsize=(10, 3.2 * len(lengths)), squeeze=False)
    for row, seq_len in enumerate(lengths):
        for column, stage in enumerate(("init", "trained")):
            axis = axes[row][column]
            for cell_name in config.cells:
                cell_runs = [run for run in runs if run["cell"] == cell_name and run["T"] == seq_len]
                if not cell_runs:
                    continue
                avg, low, high = seed_band([run["gradient"][stage][quantity] for run in cell_runs])
                # Exact zeros (float32 underflow) cannot be drawn on a log axis: leave them out.
                masked = lambda values: [value if value > 0 else float("nan") for value in values]
                lags = range(len(avg))
                axis.plot(lags, masked(avg), color=CELL_COLORS[cell_name], linewidth=1.4, label=cell_name)
                if len(cell_runs) > 1:
                    axis.fill_between(lags, masked(low), masked(high), color=CELL_COLORS[cell_name], alpha=0.15, linewidth=0)
            axis.set_yscale("log")
            axis.set_title(f"T = {seq_len}, {'at initialisation' if stage == 'init' else 'after training'}")
            axis.set_xlabel("lag T - t (steps before the prediction)")
            axis.set_ylabel(ylabel)
            axis.grid(True, which="major", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncol=3, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.18 / len(lengths)))
    figure.savefig(path, dpi=100)
    plt.close(figure)


def format_table(table):
    lines = ["| cell | " + " | ".join(f"T={seq_len}" for seq_len in sorted({row["T"] for row in table})) + " |"]
    lengths = sorted({row["T"] for row in table})
    lines.append("|---|" + "---|" * len(lengths))
    for cell_name in dict.fromkeys(row["cell"] for row in table):
        cells = []
        for seq_len in lengths:
            row = next((r for r in table if r["cell"] == cell_name and r["T"] == seq_len), None)
            cells.append("" if row is None else
                         f"{row['mean_final_mse']:.4f} ({row['solved_seeds']}/{row['seeds']} solved)")
        lines.append(f"| {cell_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(runs, config, out_dir, elapsed_seconds, finished):
    os.makedirs(out_dir, exist_ok=True)
    table = summarize(runs, config)
    parameter_counts = {}
    implementations = {}
    for run in runs:
        parameter_counts[run["cell"]] = {"total": run["parameters"], "recurrent": run["recurrent_parameters"]}
        implementations[run["cell"]] = run["implementation"]
    summary = {
        "finished": finished,
        "config": asdict(config),
        "task": "adding problem, markers one in each half, target = sum of the marked values",
        "baseline_mse": ADDING_BASELINE_MSE,
        "solved_threshold_mse": SOLVED_MSE,
        "parameter_counts": parameter_counts,
        "implementations": implementations,
        "final_mse_table": table,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor() or "unknown",
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "elapsed_seconds": round(elapsed_seconds, 1),
        "runs": [{key: value for key, value in run.items() if key not in ("curve", "gradient")} for run in runs],
    }
    with open(os.path.join(out_dir, "results.json"), "w") as handle:
        json.dump(summary, handle, indent=1)
    write_csv_files(runs, config, out_dir)
    if finished:
        plot_learning_curves(runs, config, os.path.join(out_dir, "learning_curves.png"))
        plot_gradient_flow(runs, config, "dloss_dx", "||dL/dx_t||", os.path.join(out_dir, "gradient_flow_loss.png"))
        plot_gradient_flow(runs, config, "doutput_dx", "||dy_hat/dx_t||", os.path.join(out_dir, "gradient_flow_output.png"))
    return table


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (T=10, 30 steps, one seed)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                        help="output folder (default: experiments/results/)")
    parser.add_argument("--lstm-impl", choices=["fused", "torch"], default="fused",
                        help="fused_lstm.LSTM (default) or torch.nn.LSTM for the LSTM runs")
    parser.add_argument("--T", type=int, nargs="+", help="sequence lengths of the adding problem")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--steps", type=int, help="training steps per run")
    parser.add_argument("--hidden", type=int, help="hidden size of every cell")
    parser.add_argument("--batch", type=int, help="training batch size")
    parser.add_argument("--lr", type=float, help="Adam learning rate")
    parser.add_argument("--cells", nargs="+", choices=list(CELLS), help="subset of the cells")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    import matplotlib

    matplotlib.use("Agg")
    config = quick_config() if args.quick else Config()
    config.lstm_impl = args.lstm_impl
    for attribute, value in (("sequence_lengths", args.T), ("seeds", args.seeds), ("train_steps", args.steps),
                             ("hidden_size", args.hidden), ("batch_size", args.batch),
                             ("learning_rate", args.lr), ("cells", args.cells)):
        if value is not None:
            setattr(config, attribute, value)
    if config.lstm_impl == "fused":
        import_fused_lstm()  # fail at once, not after the first cells, when the extension is not built

    print(f"why_lstm: {asdict(config)}", flush=True)
    start = time.perf_counter()
    runs = []
    for seq_len in config.sequence_lengths:
        for seed in config.seeds:
            for cell_name in config.cells:
                run = train_and_measure(cell_name, seq_len, seed, config)
                runs.append(run)
                print(f"[{time.perf_counter() - start:7.1f}s] T={seq_len:4d} seed={seed} {cell_name:20s} "
                      f"final test MSE {run['final_test_mse']:.4f}  ({run['seconds']:.1f}s, {run['parameters']} params, "
                      f"{run['implementation']})", flush=True)
            # Partial results survive an interrupted run.
            write_outputs(runs, config, args.out, time.perf_counter() - start, finished=False)
    table = write_outputs(runs, config, args.out, time.perf_counter() - start, finished=True)
    print(format_table(table))
    print(f"why_lstm: done in {time.perf_counter() - start:.1f}s, results in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
