"""Bad input to the modules: fused_lstm.LSTM, GRU, LSTMCell and GRUCell raise the same exception types as
torch.nn's modules for the same mistakes (in a call or in the constructor), with a message. Bad arguments to
the raw ops are tests/test_bad_arguments.py's."""

import pytest
import torch

import fused_lstm
from conftest import assert_same_error

I, H = 4, 5


def both(name, **kwargs):
    """torch.nn.<name> and fused_lstm.<name> with the same weights."""
    torch_module = getattr(torch.nn, name)(I, H, **kwargs)
    fused = getattr(fused_lstm, name)(I, H, **kwargs)
    fused.load_state_dict(torch_module.state_dict())
    return torch_module, fused


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
    torch_lstm, fused = both("LSTM")
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
    torch_cell, fused_cell = both("LSTMCell")
    x, hx = CELL_CASES[case]()
    assert_same_error(lambda: torch_cell(x, hx), lambda: fused_cell(x, hx))


BAD_GRU_CALLS = {
    "1-D input": lambda: (torch.randn(I), None),
    "wrong feature size": lambda: (torch.randn(3, 2, I + 1), None),
    "h0 wrong batch": lambda: (torch.randn(3, 2, I), torch.randn(1, 3, H)),
    "2-D h0 with batched input": lambda: (torch.randn(3, 2, I), torch.randn(2, H)),
    "3-D h0 with unbatched input": lambda: (torch.randn(3, I), torch.randn(1, 1, H)),
    "input dtype mismatch": lambda: (torch.randn(3, 2, I, dtype=torch.float64), None),
    "sequence length 0": lambda: (torch.randn(0, 2, I), None),
}


@pytest.mark.parametrize("case", list(BAD_GRU_CALLS))
def test_errors_match_nn_gru(case):
    torch_gru, fused = both("GRU")
    x, hx = BAD_GRU_CALLS[case]()
    assert_same_error(lambda: torch_gru(x, hx), lambda: fused(x, hx))


GRU_CELL_CASES = {
    "3-D input": lambda: (torch.randn(2, 3, I), None),
    "hx wrong batch": lambda: (torch.randn(3, I), torch.randn(2, H)),
    "hx wrong hidden": lambda: (torch.randn(3, I), torch.randn(3, H + 1)),
    "3-D hx": lambda: (torch.randn(3, I), torch.randn(1, 3, H)),
}


@pytest.mark.parametrize("case", list(GRU_CELL_CASES))
def test_cell_errors_match_nn_gru_cell(case):
    torch_cell, fused_cell = both("GRUCell")
    x, hx = GRU_CELL_CASES[case]()
    assert_same_error(lambda: torch_cell(x, hx), lambda: fused_cell(x, hx))
