"""Smoke tests for experiments/why_lstm.py: the --quick run end to end, and the hand-written
backward passes of its pure-PyTorch cells against plain autograd."""

import csv
import json
import math
import os
import subprocess
import sys

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from experiments.why_lstm import NoForgetGateLSTM, SingleNetworkCell, make_adding_batch  # noqa: E402

EXPECTED_FILES = ["results.json", "final_mse.csv", "learning_curves.csv", "gradient_flow.csv",
                  "learning_curves.png", "gradient_flow_loss.png", "gradient_flow_output.png"]


def fused_lstm_importable():
    try:
        import fused_lstm

        return hasattr(fused_lstm, "LSTM")
    except ImportError:
        return False


def run_quick(out_dir, *extra_args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")])))
    completed = subprocess.run([sys.executable, "-m", "experiments.why_lstm", "--quick", "--out", str(out_dir), *extra_args],
                               cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def check_outputs(out_dir, expected_lstm_module):
    for name in EXPECTED_FILES:
        path = os.path.join(out_dir, name)
        assert os.path.isfile(path) and os.path.getsize(path) > 0, name
    with open(os.path.join(out_dir, "results.json")) as handle:
        summary = json.load(handle)
    assert summary["finished"]
    assert summary["config"]["sequence_lengths"] == [10]
    cells = set(summary["config"]["cells"])
    assert {row["cell"] for row in summary["final_mse_table"]} == cells
    for row in summary["final_mse_table"]:
        assert math.isfinite(row["mean_final_mse"]) and row["mean_final_mse"] >= 0
    for counts in summary["parameter_counts"].values():
        assert counts["total"] > counts["recurrent"] > 0
    for cell in ("LSTM f-bias 0", "LSTM f-bias 1"):
        assert summary["implementations"][cell].startswith(expected_lstm_module), summary["implementations"][cell]
    with open(os.path.join(out_dir, "final_mse.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(cells)
    assert all(math.isfinite(float(row["final_test_mse"])) for row in rows)
    with open(os.path.join(out_dir, "gradient_flow.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(math.isfinite(float(row["mean_over_seeds"])) for row in rows)
    assert {int(row["lag"]) for row in rows} == set(range(10))


@pytest.mark.skipif(not fused_lstm_importable(), reason="fused_lstm extension not built")
def test_quick_run_with_fused_lstm(tmp_path):
    """The default --quick run: the LSTM cells must be fused_lstm's."""
    run_quick(tmp_path)
    check_outputs(tmp_path, "fused_lstm")


def test_quick_run_with_torch_lstm(tmp_path):
    """The same pipeline with torch.nn.LSTM, so it stays tested without the extension."""
    run_quick(tmp_path, "--lstm-impl", "torch")
    check_outputs(tmp_path, "torch.nn")


def test_adding_batch_has_one_marker_per_half():
    inputs, targets = make_adding_batch(32, 20, torch.Generator().manual_seed(0))
    markers = inputs[..., 1]
    assert torch.equal(markers[:, :10].sum(1), torch.ones(32))
    assert torch.equal(markers[:, 10:].sum(1), torch.ones(32))
    assert torch.allclose((inputs[..., 0] * markers).sum(1, keepdim=True), targets)


@pytest.mark.parametrize("cell_class", [SingleNetworkCell, NoForgetGateLSTM])
def test_hand_written_backward_matches_autograd(cell_class):
    torch.manual_seed(0)
    cell = cell_class(2, 5).double()
    inputs = torch.randn(3, 7, 2, dtype=torch.double, requires_grad=True)
    torch.autograd.gradcheck(cell, (inputs,))
    gradients = []
    for use_autograd_loop in (False, True):
        hidden = cell(inputs, use_autograd_loop=use_autograd_loop)
        loss = (hidden ** 2).sum() + hidden.sum()
        gradients.append(torch.autograd.grad(loss, [inputs, *cell.parameters()]))
    for fast, reference in zip(*gradients):
        torch.testing.assert_close(fast, reference)
