"""Bad input: the same exception types as nn.LSTM for the same mistakes, and raw ops that raise
instead of crashing."""

import subprocess
import sys
import textwrap

import pytest
import torch

import fused_lstm
from conftest import assert_same_error

I, H = 4, 5


def both_lstms(**kwargs):
    torch_lstm = torch.nn.LSTM(I, H, **kwargs)
    fused = fused_lstm.LSTM(I, H, **kwargs)
    fused.load_state_dict(torch_lstm.state_dict())
    return torch_lstm, fused


BAD_FORWARD_CALLS = {
    "1-D input": lambda: (torch.randn(I), None),
    "4-D input": lambda: (torch.randn(2, 3, 1, I), None),
    "wrong feature size": lambda: (torch.randn(3, 2, I + 1), None),
    "h0 wrong batch": lambda: (torch.randn(3, 2, I), (torch.randn(1, 3, H), torch.randn(1, 2, H))),
    "c0 wrong hidden": lambda: (torch.randn(3, 2, I), (torch.randn(1, 2, H), torch.randn(1, 2, H + 1))),
    "h0 wrong layers": lambda: (torch.randn(3, 2, I), (torch.randn(2, 2, H), torch.randn(2, 2, H))),
    "2-D hx with batched input": lambda: (torch.randn(3, 2, I), (torch.randn(2, H), torch.randn(2, H))),
    "3-D hx with unbatched input": lambda: (torch.randn(3, I), (torch.randn(1, 1, H), torch.randn(1, 1, H))),
    "input dtype mismatch": lambda: (torch.randn(3, 2, I, dtype=torch.float64), None),
    "hx dtype mismatch": lambda: (torch.randn(3, 2, I), (torch.randn(1, 2, H, dtype=torch.float64),
                                                          torch.randn(1, 2, H, dtype=torch.float64))),
    "sequence length 0": lambda: (torch.randn(0, 2, I), None),
}


@pytest.mark.parametrize("case", list(BAD_FORWARD_CALLS))
def test_module_errors_match_nn_lstm(case):
    torch_lstm, fused = both_lstms()
    x, hx = BAD_FORWARD_CALLS[case]()
    assert_same_error(lambda: torch_lstm(x, hx), lambda: fused(x, hx))


CONSTRUCTOR_CASES = {
    "dropout out of range": dict(dropout=1.5),
    "bias not bool": dict(bias=1),
    "batch_first not bool": dict(batch_first="yes"),
    "proj_size too big": dict(proj_size=H),
    "proj_size negative": dict(proj_size=-1),
    "num_layers zero": dict(num_layers=0),
}


@pytest.mark.parametrize("case", list(CONSTRUCTOR_CASES))
def test_constructor_errors_match_nn_lstm(case):
    kwargs = CONSTRUCTOR_CASES[case]
    expected, actual = assert_same_error(lambda: torch.nn.LSTM(I, H, **kwargs), lambda: fused_lstm.LSTM(I, H, **kwargs))
    assert str(actual) == str(expected)


@pytest.mark.parametrize("sizes", [(0, H), (I, 0), ("4", H)])
def test_constructor_size_errors_match_nn_lstm(sizes):
    assert_same_error(lambda: torch.nn.LSTM(*sizes), lambda: fused_lstm.LSTM(*sizes))


CELL_CASES = {
    "3-D input": lambda: (torch.randn(2, 3, I), None),
    "wrong feature size": lambda: (torch.randn(3, I + 1), None),
    "hx wrong batch": lambda: (torch.randn(3, I), (torch.randn(2, H), torch.randn(2, H))),
    "hx wrong hidden": lambda: (torch.randn(3, I), (torch.randn(3, H + 1), torch.randn(3, H))),
    "3-D hx": lambda: (torch.randn(3, I), (torch.randn(1, 3, H), torch.randn(1, 3, H))),
}


@pytest.mark.parametrize("case", list(CELL_CASES))
def test_cell_errors_match_nn_lstm_cell(case):
    torch_cell = torch.nn.LSTMCell(I, H)
    fused_cell = fused_lstm.LSTMCell(I, H)
    x, hx = CELL_CASES[case]()
    assert_same_error(lambda: torch_cell(x, hx), lambda: fused_cell(x, hx))


def valid_raw_arguments():
    return dict(input=torch.randn(6, I), batch_sizes=torch.tensor([2, 2, 2]), h0=torch.randn(2, H),
                c0=torch.randn(2, H), weight_ih=torch.randn(4 * H, I), weight_hh=torch.randn(4 * H, H),
                bias=torch.randn(4 * H), weight_hr=None, reverse=False, save_for_backward=True)


RAW_FORWARD_MISTAKES = {
    "input 3-D": dict(input=torch.randn(3, 2, I)),
    "input int": dict(input=torch.ones(6, I, dtype=torch.int64)),
    "input half on CPU": dict(input=torch.randn(6, I).half()),
    "batch_sizes sum wrong": dict(batch_sizes=torch.tensor([2, 2])),
    "batch_sizes increasing": dict(batch_sizes=torch.tensor([1, 2, 3])),
    "batch_sizes negative": dict(batch_sizes=torch.tensor([2, 5, -1])),
    "batch_sizes float": dict(batch_sizes=torch.tensor([2.0, 2.0, 2.0])),
    "batch_sizes empty": dict(input=torch.randn(0, I), batch_sizes=torch.tensor([], dtype=torch.int64)),
    "batch_sizes first != batch": dict(input=torch.randn(3, I), batch_sizes=torch.tensor([1, 1, 1])),
    "h0 wrong columns": dict(h0=torch.randn(2, H + 1)),
    "c0 wrong rows": dict(c0=torch.randn(3, H)),
    "c0 dtype": dict(c0=torch.randn(2, H, dtype=torch.float64)),
    "weight_ih rows not 4H": dict(weight_ih=torch.randn(4 * H + 1, I)),
    "weight_ih wrong columns": dict(weight_ih=torch.randn(4 * H, I + 1)),
    "weight_hh wrong shape": dict(weight_hh=torch.randn(4 * H, H + 2)),
    "bias wrong size": dict(bias=torch.randn(4 * H - 1)),
    "weight_hr without projection sizes": dict(weight_hr=torch.randn(H, H)),
    "weight_ih empty": dict(weight_ih=torch.randn(0, I)),
}


@pytest.mark.parametrize("case", list(RAW_FORWARD_MISTAKES))
def test_raw_forward_op_raises(case):
    arguments = dict(valid_raw_arguments(), **RAW_FORWARD_MISTAKES[case])
    with pytest.raises(RuntimeError, match="fused_lstm"):
        torch.ops.fused_lstm.lstm_layer_forward(*arguments.values())


def test_raw_backward_op_raises_on_mismatched_saved_tensors():
    arguments = valid_raw_arguments()
    output, h_n, c_n, gates, cell_prev, proj_input = torch.ops.fused_lstm.lstm_layer_forward(*arguments.values())
    good = [torch.randn_like(output), torch.randn_like(h_n), torch.randn_like(c_n), arguments["input"],
            arguments["batch_sizes"], arguments["h0"], arguments["weight_ih"], arguments["weight_hh"], None, output,
            gates, cell_prev, proj_input, False, True]
    torch.ops.fused_lstm.lstm_layer_backward(*good)
    for index, bad in [(0, torch.randn(5, H)), (9, torch.randn(6, H + 1)), (10, gates[:, :-1]), (11, cell_prev.double()),
                       (1, torch.randn(3, H)), (10, torch.empty(0))]:
        arguments_bad = list(good)
        arguments_bad[index] = bad
        with pytest.raises(RuntimeError, match="fused_lstm"):
            torch.ops.fused_lstm.lstm_layer_backward(*arguments_bad)


def test_raw_op_misuse_cannot_crash_the_process():
    """Run a batch of bad calls in a child process: a segfault there fails this test instead of the run."""
    script = textwrap.dedent("""
        import torch, fused_lstm
        H, I = 5, 4
        calls = [
            lambda: torch.ops.fused_lstm.lstm_layer_forward(torch.randn(10**3, I), torch.tensor([10**6]),
                torch.randn(10**6, H), torch.randn(10**6, H), torch.randn(4*H, I), torch.randn(4*H, H), None, None,
                False, False),
            lambda: torch.ops.fused_lstm.lstm_layer_forward(torch.randn(6, I), torch.tensor([2, 2, 2]),
                torch.randn(2, H), torch.randn(2, H), torch.randn(4*H, I), torch.randn(4*H, H), torch.randn(3),
                None, False, False),
            lambda: torch.ops.fused_lstm.lstm_layer_backward(torch.randn(6, H), torch.randn(2, H),
                torch.randn(2, H), torch.randn(6, I), torch.tensor([2, 2, 2]), torch.randn(2, H),
                torch.randn(4*H, I), torch.randn(4*H, H), None, torch.randn(6, H), torch.randn(1, 4*H),
                torch.randn(6, H), torch.empty(0), False, True),
        ]
        raised = 0
        for call in calls:
            try:
                call()
            except RuntimeError:
                raised += 1
        print("raised", raised, "of", len(calls))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "raised 3 of 3" in result.stdout
