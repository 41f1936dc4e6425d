"""The why-LSTM experiments (experiments/): the cells compute what they claim, the statistics are right,
the quick run produces every result file, and docs/why_lstm.md is exactly what the committed results render to."""

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

from experiments import report  # noqa: E402
from experiments.cells import (STATE_NETWORK_MODES, LibraryRecurrent, NoForgetGateLSTM, StateNetworkCell)  # noqa: E402
from experiments.stats import bootstrap_median_interval, fisher_exact_two_sided, median, wilson_interval  # noqa: E402
from experiments.tasks import TASKS, make_adding_batch, make_temporal_order_batch, solved_loss  # noqa: E402
from experiments.measures import probe_statistics  # noqa: E402
from experiments.why_lstm import (CURVE_COLUMNS, GRADIENT_COLUMNS, RUN_COLUMNS, Config, build_recurrent,  # noqa: E402
                                  choose_learning_rates, SequenceModel)

RESULTS_DIR = os.path.join(REPO_ROOT, "experiments", "results")


def fused_lstm_importable():
    try:
        import fused_lstm

        return hasattr(fused_lstm, "LSTM") and hasattr(fused_lstm, "GRU")
    except ImportError:
        return False


# ----------------------------------------------------------------------------------------------
# Cells


HAND_WRITTEN_CELLS = [lambda: StateNetworkCell(2, 5, mode, 7) for mode in STATE_NETWORK_MODES] + [
    lambda: NoForgetGateLSTM(2, 5), lambda: NoForgetGateLSTM(2, 5, input_gate_bias=-3.0)]


@pytest.mark.parametrize("make_cell", HAND_WRITTEN_CELLS, ids=[*STATE_NETWORK_MODES, "nfg", "nfg_input_bias"])
def test_hand_written_backward_matches_autograd_through_the_readable_loop(make_cell):
    torch.manual_seed(0)
    cell = make_cell().double()
    inputs = torch.randn(3, 7, 2, dtype=torch.double, requires_grad=True)
    torch.autograd.gradcheck(cell, (inputs,))
    gradients = []
    for forward in (cell, lambda x: cell.unroll(x).last_hidden):
        hidden = forward(inputs)
        loss = (hidden ** 2).sum() + hidden.sum()
        gradients.append(torch.autograd.grad(loss, [inputs, *cell.parameters()]))
    for hand_written, reference in zip(*gradients):
        torch.testing.assert_close(hand_written, reference)


def state_network_step(cell, x, hidden, state):
    """One step of the three state updates written out from their definitions."""
    z = torch.cat([x, hidden, state], 1)
    first = cell.first_layer(z)
    network = cell.second_layer(torch.tanh(first[:, :cell.mlp_width]))
    if cell.mode == "generic":
        new_state = network
    elif cell.mode == "additive":
        new_state = state + network
    else:
        forget, write = torch.sigmoid(first[:, cell.mlp_width:]).chunk(2, 1)
        new_state = forget * state + write * network
    return torch.tanh(cell.readout_layer(torch.cat([x, hidden, new_state], 1))), new_state


@pytest.mark.parametrize("mode", STATE_NETWORK_MODES)
def test_state_network_cells_compute_their_stated_update(mode):
    torch.manual_seed(1)
    cell = StateNetworkCell(2, 4, mode, 6, forget_bias=1.0)
    inputs = torch.randn(3, 5, 2)
    hidden = state = torch.zeros(3, 4)
    for t in range(5):
        hidden, state = state_network_step(cell, inputs[:, t], hidden, state)
    torch.testing.assert_close(cell(inputs), hidden)
    unrolled = cell.unroll(inputs)
    torch.testing.assert_close(unrolled.states[-1], state)
    assert (unrolled.keep_gates is not None) == (mode == "gated")
    if mode == "gated":  # the forget-gate bias is set, the rest keep nn.Linear's U(+-1/sqrt(fan_in))
        assert torch.all(cell.first_layer.bias[6:10] == 1.0)
    bound = 1 / math.sqrt(2 + 2 * 4)
    assert cell.first_layer.weight.abs().max() <= bound and cell.readout_layer.weight.abs().max() <= bound


@pytest.mark.parametrize("library", ["fused", "torch"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_readable_unroll_reproduces_the_trained_module(kind, library):
    """The measurements rerun the weights through unroll: it must compute what the module computes."""
    if library == "fused" and not fused_lstm_importable():
        pytest.skip("fused_lstm extension not built")
    config = Config(hidden_size=6, library=library)
    arm = {"lstm": "lstm_chrono", "gru": "gru", "rnn": "rnn"}[kind]
    torch.manual_seed(2)
    recurrent = build_recurrent(arm, 2, 9, config)
    if library == "fused" and kind != "rnn":
        assert type(recurrent.core).__module__.startswith("fused_lstm")
    inputs = torch.randn(4, 9, 2)
    torch.testing.assert_close(recurrent(inputs), recurrent.unroll(inputs).last_hidden)


def test_lstm_gate_bias_initialisations():
    config = Config(hidden_size=8, library="torch")
    torch.manual_seed(3)
    hidden = config.hidden_size
    effective = lambda lstm: (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach()
    for arm, expected in (("lstm_bf0", 0.0), ("lstm_bf1", 1.0)):
        bias = effective(build_recurrent(arm, 2, 100, config).core)
        assert torch.all(bias[hidden:2 * hidden] == expected)
    bias = effective(build_recurrent("lstm_chrono", 2, 100, config).core)
    forget, write = bias[hidden:2 * hidden], bias[:hidden]
    assert torch.all(forget >= 0) and torch.all(forget <= math.log(99)) and forget.std() > 0
    torch.testing.assert_close(write, -forget)
    nfg = build_recurrent("nfg_ib3", 2, 100, config)
    assert torch.all((nfg.bias_ih + nfg.bias_hh)[hidden:2 * hidden] == -3.0)


def test_retention_is_the_product_of_keep_gates_after_the_first_relevant_step():
    """A forget gate of s(b) everywhere keeps s(b)^(T-1-t1) of c_{t1}; with b = 30 it is 1, with b = -30 it is 0."""
    config = Config(hidden_size=4, library="torch")
    inputs, _, first = make_adding_batch(5, 12, torch.Generator().manual_seed(0))
    for forget_bias, expected in ((30.0, 1.0), (-30.0, 0.0)):
        torch.manual_seed(4)
        model = SequenceModel(build_recurrent("lstm_bf1", 2, 12, config), 4, 1)
        with torch.no_grad():
            model.recurrent.core.weight_hh_l0[4:8].zero_()
            model.recurrent.core.weight_ih_l0[4:8].zero_()
            model.recurrent.core.bias_ih_l0[4:8].fill_(forget_bias)
        statistics = probe_statistics(model, inputs, first)
        assert statistics["retention_best_unit"] == pytest.approx(expected, abs=1e-6)
        assert statistics["keep_gate_mean"] == pytest.approx(expected, abs=1e-6)
    model = SequenceModel(build_recurrent("gru", 2, 12, config), 4, 1)
    model.recurrent.core.weight_hh_l0.data[4:8].zero_()
    model.recurrent.core.weight_ih_l0.data[4:8].zero_()
    model.recurrent.core.bias_ih_l0.data[4:8].fill_(0.0)
    model.recurrent.core.bias_hh_l0.data[4:8].fill_(0.0)
    expected = (0.5 ** (11 - first.double())).mean().item()  # z = 1/2 at every step after t1
    assert probe_statistics(model, inputs, first)["retention_best_unit"] == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# Tasks


def test_adding_batch_has_one_marker_per_half_and_sums_the_marked_values():
    inputs, targets, first = make_adding_batch(32, 20, torch.Generator().manual_seed(0))
    markers = inputs[..., 1]
    assert torch.equal(markers[:, :10].sum(1), torch.ones(32))
    assert torch.equal(markers[:, 10:].sum(1), torch.ones(32))
    assert torch.equal(markers[torch.arange(32), first], torch.ones(32))
    torch.testing.assert_close((inputs[..., 0] * markers).sum(1, keepdim=True), targets)


def test_temporal_order_batch_marks_two_positions_and_classifies_their_order():
    inputs, classes, first = make_temporal_order_batch(64, 100, torch.Generator().manual_seed(0))
    symbols = inputs.argmax(-1)
    assert torch.equal(inputs.sum(-1), torch.ones(64, 100))
    relevant = symbols >= 4
    assert torch.equal(relevant.sum(1), torch.full((64,), 2))
    positions = relevant.nonzero()[:, 1].view(64, 2)
    assert torch.equal(positions[:, 0], first)
    assert torch.all((positions[:, 0] >= 10) & (positions[:, 0] < 20) & (positions[:, 1] >= 50) & (positions[:, 1] < 60))
    rows = torch.arange(64)
    torch.testing.assert_close(classes, 2 * (symbols[rows, positions[:, 0]] - 4) + (symbols[rows, positions[:, 1]] - 4))
    assert set(classes.tolist()) == {0, 1, 2, 3}


def test_one_solved_criterion_six_percent_of_the_predict_the_prior_loss():
    assert solved_loss(TASKS["adding"]) == pytest.approx(0.01)
    assert solved_loss(TASKS["temporal_order"]) == pytest.approx(0.06 * math.log(4))
    # Predicting 1 on the adding problem does give the stated baseline.
    _, targets, _ = make_adding_batch(200_000, 4, torch.Generator().manual_seed(0))
    assert TASKS["adding"].loss(torch.ones_like(targets), targets).item() == pytest.approx(1 / 6, rel=0.01)


# ----------------------------------------------------------------------------------------------
# Statistics


@pytest.mark.parametrize("successes, trials, low, high", [
    (0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (1, 10, 0.0179, 0.4042), (8, 10, 0.4902, 0.9433)])
def test_wilson_interval_on_known_values(successes, trials, low, high):
    assert wilson_interval(successes, trials) == pytest.approx((low, high), abs=1e-4)


@pytest.mark.parametrize("table, p_value", [
    ((2, 2, 0, 2), 1 / 3), ((4, 10, 0, 10), 0.0867), ((10, 10, 0, 10), 1.0825e-5), ((5, 10, 5, 10), 1.0), ((1, 10, 0, 10), 1.0)])
def test_fisher_exact_on_known_values(table, p_value):
    assert fisher_exact_two_sided(*table) == pytest.approx(p_value, rel=1e-3)


def test_median_counts_unsolved_runs_as_above_the_budget():
    assert median([300, 100, 200]) == 200
    assert median([100, 200, 300, 400]) == 250
    assert median([100, 200, math.inf, math.inf, math.inf]) == math.inf
    assert median([100, 200, 300, math.inf]) == 250
    assert median([100, 200, math.inf, math.inf]) == math.inf


def test_bootstrap_interval_brackets_the_median():
    values = [250, 300, 300, 350, 400, 400, 450, 500, 900, math.inf]
    low, high = bootstrap_median_interval(values)
    assert low <= median(values) <= high
    assert 250 <= low < 400 < high
    assert bootstrap_median_interval([500] * 10) == (500, 500)
    assert bootstrap_median_interval([math.inf] * 10) == (math.inf, math.inf)


def test_learning_rate_choice_prefers_solved_then_fast_then_low_loss():
    def run(arm, learning_rate, steps, loss):
        return {"arm": arm, "learning_rate": learning_rate, "solved": int(steps is not None),
                "steps_to_solve": steps if steps is not None else "", "final_test_loss": loss}
    runs = [run("a", 1e-3, None, 0.1), run("a", 1e-3, 900, 0.005), run("a", 1e-2, 400, 0.005), run("a", 1e-2, None, 0.2),
            run("a", 3e-3, 500, 0.005), run("a", 3e-3, 600, 0.005),
            run("b", 1e-3, None, 0.12), run("b", 3e-3, None, 0.15), run("b", 1e-2, None, 0.17)]
    assert choose_learning_rates(runs, [1e-3, 3e-3, 1e-2]) == {"a": 3e-3, "b": 1e-3}


# ----------------------------------------------------------------------------------------------
# The pipeline and the doc


def test_quick_run_writes_every_result_file(tmp_path):
    library = "fused" if fused_lstm_importable() else "torch"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")])))
    completed = subprocess.run([sys.executable, "-m", "experiments.why_lstm", "--quick", "--out", str(tmp_path),
                                "--library", library], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    for name in ["runs.csv", "curves.csv", "state_gradients.csv", "run_info.json", "why_lstm.md",
                 "learning_curves_adding.png", "learning_curves_temporal_order.png", "state_gradients_adding.png",
                 "training_signals_adding.png", "initial_gradient_vs_steps_adding.png"]:
        assert (tmp_path / name).stat().st_size > 0, name
    for name, columns in (("runs.csv", RUN_COLUMNS), ("curves.csv", CURVE_COLUMNS), ("state_gradients.csv", GRADIENT_COLUMNS)):
        with open(tmp_path / name) as handle:
            reader = csv.DictReader(handle)
            assert reader.fieldnames == columns, name
            assert list(reader), name
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["finished"] and len(info["commit"]) == 40
    with open(tmp_path / "runs.csv") as handle:
        runs = list(csv.DictReader(handle))
    assert {run["phase"] for run in runs} == {"sweep", "main"}
    assert {run["task"] for run in runs} == {"adding", "temporal_order"}
    for run in runs:
        assert math.isfinite(float(run["final_test_loss"]))
        assert float(run["unroll_max_abs_difference"]) < 1e-4  # the measured weights are the trained ones
        if run["arm"].startswith("lstm") or run["arm"] == "gru":
            assert run["implementation"].startswith("fused_lstm" if library == "fused" else "torch.nn"), run
    # Every main run has a state-gradient profile at initialisation and after training.
    with open(tmp_path / "state_gradients.csv") as handle:
        stages = {(row["arm"], row["T"], row["seed"], row["stage"]) for row in csv.DictReader(handle)}
    for run in runs:
        if run["phase"] == "main" and run["task"] == "adding":
            assert {(run["arm"], run["T"], run["seed"], stage) for stage in ("init", "trained")} <= stages


def test_doc_is_the_rendering_of_the_committed_results():
    """Every number in docs/why_lstm.md comes from experiments/results/ through experiments/report.py."""
    with open(report.TEMPLATE_PATH) as handle:
        rendered = report.render(handle.read(), report.Results(RESULTS_DIR))
    with open(report.DOC_PATH) as handle:
        assert handle.read() == rendered, "docs/why_lstm.md is stale: run python -m experiments.report"


def test_doc_template_fields_all_resolve_to_numbers_from_the_results():
    """No field silently renders as n/a, and the doc has no field left unrendered."""
    with open(report.DOC_PATH) as handle:
        doc = handle.read()
    assert "{{" not in doc and "n/a" not in doc
