"""The two long-lag tasks of experiments/why_lstm.py.

Both read out one prediction from the last hidden state, and both report for every sample the time
step of its first relevant input (the one that must be held longest), which the gate measurements use.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn


def make_adding_batch(batch_size, seq_len, generator):
    """The adding problem in its modern form (values U(0, 1), one marker in each half of the sequence;
    Hochreiter & Schmidhuber 1997 used values in [-1, 1] and a scaled target): x[:, t] = (value, marker),
    target = the sum of the two marked values.  Returns (inputs [B, T, 2], targets [B, 1], first [B])."""
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
    return inputs, targets, first


TEMPORAL_ORDER_SYMBOLS = 6  # distractors a, b, c, d and the two relevant symbols X, Y (one-hot)


def make_temporal_order_batch(batch_size, seq_len, generator):
    """The temporal order problem (Hochreiter & Schmidhuber 1997, experiment 6a, without the start and
    end symbols): every step is a random distractor a-d except two, at t1 in [0.1 T, 0.2 T) and t2 in
    [0.5 T, 0.6 T), which hold X or Y.  Target: the class of the ordered pair (XX, XY, YX, YY), so the
    symbol at t1 must be held for at least 0.8 T steps.  Returns (inputs [B, T, 6], classes [B], t1 [B])."""
    symbols = torch.randint(0, 4, (batch_size, seq_len), generator=generator)
    low, high = max(1, seq_len // 10), max(2, seq_len // 5)
    first = torch.randint(low, high, (batch_size,), generator=generator)
    second = torch.randint(seq_len // 2, max(seq_len // 2 + 1, (6 * seq_len) // 10), (batch_size,), generator=generator)
    first_is_y = torch.randint(0, 2, (batch_size,), generator=generator)
    second_is_y = torch.randint(0, 2, (batch_size,), generator=generator)
    rows = torch.arange(batch_size)
    symbols[rows, first] = 4 + first_is_y
    symbols[rows, second] = 4 + second_is_y
    inputs = nn.functional.one_hot(symbols, TEMPORAL_ORDER_SYMBOLS).float()
    return inputs, 2 * first_is_y + second_is_y, first


@dataclass(frozen=True)
class Task:
    name: str
    input_size: int
    output_size: int
    baseline_loss: float  # the loss of always predicting the prior: the "learned nothing" level
    make_batch: callable
    is_classification: bool

    def loss(self, predictions, targets, reduction="mean"):
        if self.is_classification:
            return nn.functional.cross_entropy(predictions, targets, reduction=reduction)
        losses = (predictions - targets).pow(2).squeeze(-1)
        return losses.mean() if reduction == "mean" else losses

    def accuracy(self, predictions, targets):
        """Fraction of correct classes (classification only; None for the adding problem)."""
        if not self.is_classification:
            return None
        return (predictions.argmax(-1) == targets).float().mean().item()


TASKS = {
    # Predicting 1 gives MSE = Var(u1 + u2) = 2 / 12 for u ~ U(0, 1).
    "adding": Task("adding", 2, 1, 1.0 / 6.0, make_adding_batch, False),
    # Four equally likely classes: the uniform prediction has cross-entropy ln 4.
    "temporal_order": Task("temporal_order", TEMPORAL_ORDER_SYMBOLS, 4, math.log(4.0), make_temporal_order_batch, True),
}

# One criterion for both tasks: a run is solved at the first evaluation whose test loss is below this
# fraction of the predict-the-prior loss (adding: MSE < 0.01; temporal order: cross-entropy < 0.083).
SOLVED_FRACTION_OF_BASELINE = 0.06


def solved_loss(task):
    return SOLVED_FRACTION_OF_BASELINE * task.baseline_loss
