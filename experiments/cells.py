"""The recurrent cells compared by experiments/why_lstm.py.

Every cell maps a batch-first sequence [B, T, I] to its last hidden state [B, H] (``forward``, used for
training), and has ``unroll``: the same recurrence as a plain readable loop differentiated by autograd,
which also returns every step's memory state and keep gate.  The measurements (state gradients, gate
values) use ``unroll``; training never does.

* LSTM, GRU, tanh RNN: the project's fused_lstm.LSTM / fused_lstm.GRU and torch.nn.RNN; their
  ``unroll`` rereads the module's own parameters.
* The "state network" controls: a memory state c and a hidden state h, both of size H.  The new c comes
  from a network with one tanh hidden layer (width M) on z = [x_t, h_{t-1}, c_{t-1}]:
      generic:  c_t = MLP(z)
      additive: c_t = c_{t-1} + MLP(z)
      gated:    c_t = s(f) * c_{t-1} + s(i) * MLP(z),   f, i linear in z
  and in all three h_t = tanh(V [x_t, h_{t-1}, c_t] + b), one layer, as the question proposes.
* The LSTM without a forget gate (f = 1, "NFG" in Greff et al. 2017), optionally with a negative
  input-gate bias, the 1997 remedy against state drift.

The hand-written cells have a hand-written backward pass: autograd through a Python time loop records
about ten graph nodes per step and made them several times slower than the fused LSTM.
tests/test_experiments.py checks every hand-written backward against autograd through ``unroll``.
"""

import math

import torch
from torch import nn

STATE_NETWORK_MODES = ("generic", "additive", "gated")


class StateNetworkRecurrence(torch.autograd.Function):
    """The time loop of StateNetworkCell with a hand-written backward pass.

    first_from_input: [B, T, M (+ 2H if gated)], the x_t part of the first layer plus its bias;
    readout_from_input: [B, T, H], the x_t part of the h layer plus its bias;
    first_weight: [2H, M (+ 2H)], acts on [h_{t-1}, c_{t-1}]; second_weight: [M, H]; second_bias: [H];
    readout_weight: [2H, H], acts on [h_{t-1}, c_t].  Gate columns of the first layer: f then i.
    Returns h_T."""

    @staticmethod
    def forward(ctx, first_from_input, readout_from_input, first_weight, second_weight, second_bias, readout_weight, mode):
        batch, seq_len, _ = first_from_input.shape
        hidden_size, width = readout_from_input.shape[2], second_weight.shape[0]
        gated = mode == "gated"
        # states[t] = [h_{t-1}, c_{t-1}] (zeros at t = 0): the first layer's recurrent input as is.
        states = first_from_input.new_zeros(seq_len + 1, batch, 2 * hidden_size)
        mlp_hidden = first_from_input.new_empty(seq_len, batch, width)
        mlp_out = first_from_input.new_empty(seq_len, batch, hidden_size) if gated else None
        gates = first_from_input.new_empty(seq_len, batch, 2 * hidden_size) if gated else None
        readout_hidden_weight, readout_cell_weight = readout_weight[:hidden_size], readout_weight[hidden_size:]
        for t in range(seq_len):
            first = torch.addmm(first_from_input[:, t], states[t], first_weight)
            torch.tanh(first[:, :width], out=mlp_hidden[t])
            new_part = torch.addmm(second_bias, mlp_hidden[t], second_weight)
            cell = states[t + 1, :, hidden_size:]
            if mode == "generic":
                cell.copy_(new_part)
            elif mode == "additive":
                torch.add(states[t, :, hidden_size:], new_part, out=cell)
            else:
                mlp_out[t] = new_part
                torch.sigmoid(first[:, width:], out=gates[t])
                forget, write = gates[t].chunk(2, dim=1)
                torch.addcmul(forget * states[t, :, hidden_size:], write, new_part, out=cell)
            readout = torch.addmm(readout_from_input[:, t], states[t, :, :hidden_size], readout_hidden_weight)
            torch.tanh(readout.addmm_(cell, readout_cell_weight), out=states[t + 1, :, :hidden_size])
        ctx.mode = mode
        ctx.save_for_backward(states, mlp_hidden, mlp_out, gates, first_weight, second_weight, readout_weight)
        return states[seq_len, :, :hidden_size].clone()

    @staticmethod
    def backward(ctx, grad_last_hidden):
        states, mlp_hidden, mlp_out, gates, first_weight, second_weight, readout_weight = ctx.saved_tensors
        mode = ctx.mode
        seq_len, hidden_size, width = mlp_hidden.shape[0], states.shape[2] // 2, mlp_hidden.shape[2]
        hiddens, cells, previous_cells = states[1:, :, :hidden_size], states[1:, :, hidden_size:], states[:-1, :, hidden_size:]
        # Local derivatives for all steps at once, outside the sequential loop.
        hidden_tanh_grad, mlp_tanh_grad = 1 - hiddens ** 2, 1 - mlp_hidden ** 2
        if mode == "gated":
            forget, write = gates.chunk(2, dim=2)
            forget_factor = previous_cells * forget * (1 - forget)  # dc_t / d(f pre-activation)
            write_factor = mlp_out * write * (1 - write)  # dc_t / d(i pre-activation)
        grad_first = states.new_empty(seq_len, states.shape[1], first_weight.shape[1])  # dL/d(first layer pre-act.)
        grad_new_part = torch.empty_like(cells)  # dL/d MLP(z_t)
        grad_readout = torch.empty_like(hiddens)  # dL/d(h layer pre-activation)
        first_weight_t, second_weight_t, readout_weight_t = first_weight.t(), second_weight.t(), readout_weight.t()
        grad_hidden = grad_last_hidden.contiguous()
        grad_cell = torch.zeros_like(grad_hidden)  # dL/dc_t through the steps after t
        for t in reversed(range(seq_len)):
            torch.mul(grad_hidden, hidden_tanh_grad[t], out=grad_readout[t])
            from_readout = grad_readout[t] @ readout_weight_t  # d/d[h_{t-1}, c_t]
            grad_cell_total = grad_cell + from_readout[:, hidden_size:]  # dL/dc_t, all paths
            if mode == "gated":
                torch.mul(grad_cell_total, write[t], out=grad_new_part[t])
                torch.mul(grad_cell_total, forget_factor[t], out=grad_first[t, :, width:width + hidden_size])
                torch.mul(grad_cell_total, write_factor[t], out=grad_first[t, :, width + hidden_size:])
            else:
                grad_new_part[t] = grad_cell_total
            torch.mul(grad_new_part[t] @ second_weight_t, mlp_tanh_grad[t], out=grad_first[t, :, :width])
            from_first = grad_first[t] @ first_weight_t  # d/d[h_{t-1}, c_{t-1}]
            grad_hidden = from_readout[:, :hidden_size] + from_first[:, :hidden_size]
            grad_cell = from_first[:, hidden_size:]
            if mode == "additive":
                grad_cell = grad_cell + grad_cell_total
            elif mode == "gated":
                grad_cell = torch.addcmul(grad_cell, grad_cell_total, forget[t])
        # Weight gradients summed over all steps in one matmul each.
        flat = lambda tensor: tensor.reshape(-1, tensor.shape[-1])
        grad_first_weight = flat(states[:-1]).t() @ flat(grad_first)
        grad_second_weight = flat(mlp_hidden).t() @ flat(grad_new_part)
        readout_inputs = torch.cat([states[:-1, :, :hidden_size], cells], 2)
        grad_readout_weight = flat(readout_inputs).t() @ flat(grad_readout)
        return (grad_first.transpose(0, 1), grad_readout.transpose(0, 1), grad_first_weight, grad_second_weight,
                flat(grad_new_part).sum(0), grad_readout_weight, None)


class StateNetworkCell(nn.Module):
    """c_t from a one-hidden-layer network on [x_t, h_{t-1}, c_{t-1}] (generic, additive or gated, see the
    module docstring), h_t = tanh(V [x_t, h_{t-1}, c_t] + b).  Every layer keeps nn.Linear's
    initialisation, weights and biases U(+-1/sqrt(fan_in)); the gated form's forget-gate bias is then
    set to ``forget_bias``."""

    def __init__(self, input_size, hidden_size, mode, mlp_width, forget_bias=1.0):
        super().__init__()
        if mode not in STATE_NETWORK_MODES:
            raise ValueError(f"mode must be one of {STATE_NETWORK_MODES}, got {mode!r}")
        self.input_size, self.hidden_size, self.mode, self.mlp_width = input_size, hidden_size, mode, mlp_width
        gate_columns = 2 * hidden_size if mode == "gated" else 0
        self.first_layer = nn.Linear(input_size + 2 * hidden_size, mlp_width + gate_columns)
        self.second_layer = nn.Linear(mlp_width, hidden_size)
        self.readout_layer = nn.Linear(input_size + 2 * hidden_size, hidden_size)
        if mode == "gated":
            with torch.no_grad():
                self.first_layer.bias[mlp_width:mlp_width + hidden_size].fill_(forget_bias)

    def forward(self, inputs):
        split = self.input_size
        first_from_input = nn.functional.linear(inputs, self.first_layer.weight[:, :split], self.first_layer.bias)
        readout_from_input = nn.functional.linear(inputs, self.readout_layer.weight[:, :split], self.readout_layer.bias)
        return StateNetworkRecurrence.apply(first_from_input, readout_from_input, self.first_layer.weight[:, split:].t(),
                                            self.second_layer.weight.t(), self.second_layer.bias,
                                            self.readout_layer.weight[:, split:].t(), self.mode)

    def unroll(self, inputs):
        hidden = inputs.new_zeros(inputs.shape[0], self.hidden_size)
        cell = inputs.new_zeros(inputs.shape[0], self.hidden_size)
        cells, keep_gates = [], []
        for t in range(inputs.shape[1]):
            first = self.first_layer(torch.cat([inputs[:, t], hidden, cell], 1))
            new_part = self.second_layer(torch.tanh(first[:, :self.mlp_width]))
            if self.mode == "generic":
                cell = new_part
            elif self.mode == "additive":
                cell = cell + new_part
            else:
                forget, write = torch.sigmoid(first[:, self.mlp_width:]).chunk(2, dim=1)
                cell = forget * cell + write * new_part
                keep_gates.append(forget)
            hidden = torch.tanh(self.readout_layer(torch.cat([inputs[:, t], hidden, cell], 1)))
            cells.append(cell)
        return Unrolled(hidden, cells, torch.stack(keep_gates, 1) if keep_gates else None)


class Unrolled:
    """What ``unroll`` returns: the last hidden state [B, H], the memory state of every step (list of T
    tensors [B, H] in the autograd graph: c_t, or h_t for cells without a separate memory) and the keep
    gate of every step [B, T, H] (LSTM forget gate, GRU update gate z; None for ungated cells)."""

    def __init__(self, last_hidden, states, keep_gates):
        self.last_hidden, self.states, self.keep_gates = last_hidden, states, keep_gates


class NoForgetGateRecurrence(torch.autograd.Function):
    """The time loop of NoForgetGateLSTM with a hand-written backward pass.  gates_from_input: [B, T, 3H]
    in gate order o, i, g (sigmoid gates adjacent so one sigmoid call covers both; i and g adjacent because
    both get dL/dc_t); recurrent_weight: [H, 3H].  Returns h_T."""

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
            # c_t = c_{t-1} + i g: the carried gradient passes to c_{t-1} unchanged.
            grad_cell = torch.addcmul(grad_cell, grad_hidden, hidden_to_cell[t])
            torch.mul(grad_hidden, output_factor[t], out=grad_gates[t, :, :hidden_size])
            torch.mul(grad_cell.repeat(1, 2), input_candidate_factor[t], out=grad_gates[t, :, hidden_size:])
            grad_hidden = grad_gates[t] @ recurrent_weight_t
        grad_recurrent_weight = hiddens[:-1].reshape(-1, hidden_size).t() @ grad_gates.reshape(-1, 3 * hidden_size)
        return grad_gates.transpose(0, 1), grad_recurrent_weight


class NoForgetGateLSTM(nn.Module):
    """LSTM without a forget gate (f = 1): c_t = c_{t-1} + s(i_t) tanh(g_t), h_t = s(o_t) tanh(c_t).
    Gate order in the weights: o, i, g.  Initialised like nn.LSTM (U(+-1/sqrt(H))); with
    ``input_gate_bias`` the input-gate rows of bias_ih are set to it and those of bias_hh to 0
    (fused_lstm.LSTM always has a forget gate, hence this small module)."""

    def __init__(self, input_size, hidden_size, input_gate_bias=None):
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)
        if input_gate_bias is not None:
            with torch.no_grad():
                self.bias_ih[hidden_size:2 * hidden_size].fill_(input_gate_bias)
                self.bias_hh[hidden_size:2 * hidden_size].fill_(0.0)

    def forward(self, inputs):
        gates_from_input = nn.functional.linear(inputs, self.weight_ih, self.bias_ih + self.bias_hh)
        return NoForgetGateRecurrence.apply(gates_from_input, self.weight_hh.t())

    def unroll(self, inputs):
        hidden = inputs.new_zeros(inputs.shape[0], self.hidden_size)
        cell = inputs.new_zeros(inputs.shape[0], self.hidden_size)
        cells = []
        for t in range(inputs.shape[1]):
            gates = nn.functional.linear(inputs[:, t], self.weight_ih, self.bias_ih) + nn.functional.linear(hidden, self.weight_hh, self.bias_hh)
            output_gate, input_gate, candidate = gates.chunk(3, dim=1)
            cell = cell + torch.sigmoid(input_gate) * torch.tanh(candidate)
            hidden = torch.sigmoid(output_gate) * torch.tanh(cell)
            cells.append(cell)
        return Unrolled(hidden, cells, None)


class LibraryRecurrent(nn.Module):
    """Wraps a one-layer, batch-first fused_lstm.LSTM / fused_lstm.GRU / torch.nn.{LSTM, GRU, RNN}, started
    from zero state; ``unroll`` reruns its parameters through a readable loop (gate orders as PyTorch's:
    LSTM i, f, g, o; GRU r, z, n)."""

    def __init__(self, core, kind):
        super().__init__()
        if kind not in ("lstm", "gru", "rnn"):
            raise ValueError(f"kind must be lstm, gru or rnn, got {kind!r}")
        self.core, self.kind, self.hidden_size = core, kind, core.hidden_size

    def forward(self, inputs):
        zeros = inputs.new_zeros(1, inputs.shape[0], self.hidden_size)
        state = (zeros, zeros.clone()) if self.kind == "lstm" else zeros
        outputs, _ = self.core(inputs, state)
        return outputs[:, -1]

    def unroll(self, inputs):
        core = self.core
        weight_ih, weight_hh, bias_ih, bias_hh = core.weight_ih_l0, core.weight_hh_l0, core.bias_ih_l0, core.bias_hh_l0
        hidden = inputs.new_zeros(inputs.shape[0], self.hidden_size)
        cell = torch.zeros_like(hidden)
        states, keep_gates = [], []
        for t in range(inputs.shape[1]):
            from_input = nn.functional.linear(inputs[:, t], weight_ih, bias_ih)
            from_hidden = nn.functional.linear(hidden, weight_hh, bias_hh)
            if self.kind == "rnn":
                hidden = torch.tanh(from_input + from_hidden)
                states.append(hidden)
            elif self.kind == "lstm":
                input_gate, forget_gate, candidate, output_gate = (from_input + from_hidden).chunk(4, dim=1)
                forget = torch.sigmoid(forget_gate)
                cell = forget * cell + torch.sigmoid(input_gate) * torch.tanh(candidate)
                hidden = torch.sigmoid(output_gate) * torch.tanh(cell)
                states.append(cell)
                keep_gates.append(forget)
            else:
                input_r, input_z, input_n = from_input.chunk(3, dim=1)
                hidden_r, hidden_z, hidden_n = from_hidden.chunk(3, dim=1)
                update = torch.sigmoid(input_z + hidden_z)
                candidate = torch.tanh(input_n + torch.sigmoid(input_r + hidden_r) * hidden_n)
                hidden = (1 - update) * candidate + update * hidden
                states.append(hidden)
                keep_gates.append(update)
        return Unrolled(hidden, states, torch.stack(keep_gates, 1) if keep_gates else None)
