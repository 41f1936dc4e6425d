"""Why the LSTM without a forget gate loses its gradient at T = 100 (a diagnostic for docs/why_lstm.md).

Retrains the "LSTM no forget gate" cell of experiments/why_lstm.py exactly as the full run does
(seed 0, T = 100, same data stream and settings) and prints, at a few time steps, the mean |c_t|,
the mean tanh'(c_t) = 1 - tanh(c_t)^2 (the factor through which dL/dh_t reaches the cell) and the
mean gate values, at initialisation, after 100 and after all training steps.  About a minute of CPU.

    python -m experiments.no_forget_gate_drift
"""

import sys

import torch
from torch import nn

from experiments.why_lstm import AddingModel, Config, make_adding_batch, train_step

SEQ_LEN = 100
SEED = 0
REPORTED_STEPS = (1, 10, 50, 100)


@torch.no_grad()
def print_cell_statistics(model, label):
    cell = model.recurrent
    inputs, _ = make_adding_batch(128, SEQ_LEN, torch.Generator().manual_seed(555 + SEQ_LEN))
    gates_from_input = nn.functional.linear(inputs, cell.weight_ih, cell.bias_ih + cell.bias_hh)
    hidden = torch.zeros(inputs.shape[0], cell.hidden_size)
    cell_state = torch.zeros_like(hidden)
    for t in range(SEQ_LEN):
        output_gate, input_gate, candidate = torch.addmm(gates_from_input[:, t], hidden, cell.weight_hh.t()).chunk(3, 1)
        cell_state = cell_state + torch.sigmoid(input_gate) * torch.tanh(candidate)
        hidden = torch.sigmoid(output_gate) * torch.tanh(cell_state)
        if t + 1 in REPORTED_STEPS:
            print(f"{label:>12s}  t={t + 1:3d}  mean|c_t| {cell_state.abs().mean():6.2f}   "
                  f"mean tanh'(c_t) {(1 - torch.tanh(cell_state) ** 2).mean():.3f}   "
                  f"mean o {torch.sigmoid(output_gate).mean():.2f}   mean i {torch.sigmoid(input_gate).mean():.2f}")


def main(argv=None):
    torch.set_num_threads(1)
    config = Config()
    # Same construction, optimiser and data stream as train_and_measure in why_lstm.py.
    torch.manual_seed(SEED)
    model = AddingModel("LSTM no forget gate", config.hidden_size, "torch")  # this cell never uses fused_lstm
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    train_generator = torch.Generator().manual_seed(10_000 * (SEED + 1) + SEQ_LEN)
    print_cell_statistics(model, "init")
    for step in range(1, config.train_steps + 1):
        inputs, targets = make_adding_batch(config.batch_size, SEQ_LEN, train_generator)
        train_step(model, optimizer, inputs, targets, config)
        if step in (100, config.train_steps):
            print_cell_statistics(model, f"step {step}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
