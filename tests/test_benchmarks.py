"""Smoke test of the benchmark suite on tiny shapes: it runs end to end and writes sane files.
No timing is asserted; timings of tiny shapes on a shared machine mean nothing."""

import csv
import math
import os

import pytest
import torch

import fused_lstm
from benchmarks.measure import ISA_CAPS
from benchmarks.run import main
from conftest import DEVICES, cpu_flags

# Plain, multi-layer bidirectional, and projected: every branch of the FLOP count and the plots.
TINY_SIZES = "5x3x4x6x1,4x2x6x6x2xbi,3x2x4x8x1xp4"
SHAPES, MODES, CANDIDATES = 3, 2, 3

POSITIVE_COLUMNS = ("median_ms", "min_ms", "max_ms", "tokens_per_s", "gflop_per_call", "gflops",
                    "ceiling_gflops", "ceiling_fraction", "speedup_vs_torch")
# Can be 0: identical results, or (on the CPU) memory the allocator already held.
NON_NEGATIVE_COLUMNS = ("peak_memory_mb",)


@pytest.mark.parametrize("device", DEVICES)
def test_benchmark_writes_table_csv_and_plots(device, tmp_path, capsys):
    exit_code = main(["--device", device, "--sizes", TINY_SIZES, "--repeats", "2", "--out", str(tmp_path)])
    assert exit_code == 0

    with open(tmp_path / "results.csv", newline="") as csv_file:
        rows = list(csv.DictReader(csv_file))
    assert len(rows) == SHAPES * MODES * CANDIDATES
    assert {row["candidate"] for row in rows} == {"fused_lstm", "torch.nn", "reference"}
    assert {row["cell"] for row in rows} == {"lstm"}
    for row in rows:
        assert row["status"] == "ok", row
        assert int(row["repeats"]) == 2
        for column in POSITIVE_COLUMNS:
            value = float(row[column])
            assert math.isfinite(value) and value > 0, (column, row)
        for column in NON_NEGATIVE_COLUMNS:
            value = float(row[column])
            assert math.isfinite(value) and value >= 0, (column, row)
        assert float(row["min_ms"]) <= float(row["median_ms"]) <= float(row["max_ms"])
        if row["candidate"] != "torch.nn":
            # Same weights and inputs as nn.LSTM: the differences are rounding, finite and small.
            differences = [float(row["max_abs_diff_output"])]
            if row["mode"] == "training":
                differences.append(float(row["max_abs_diff_grad"]))
            assert all(math.isfinite(value) and 0 <= value < 1e-3 for value in differences), row

    markdown = (tmp_path / "results.md").read_text()
    assert "Ceilings" in markdown and "torch " in markdown
    # The header names the instruction sets in use and the caps in force (none here unless the caller set some).
    caps = [f"{name}={os.environ[name]}" for name in ISA_CAPS if os.environ.get(name)]
    assert f"instruction sets: fused_lstm's best {fused_lstm.settings.best_cpu_isa()}" in markdown
    assert f"caps: {', '.join(caps) or 'none'}" in markdown
    assert markdown.count("| fused_lstm |") == SHAPES * MODES
    for plot in ("speedup_vs_batch.png", "speedup_vs_hidden.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "speedup vs torch.nn" in capsys.readouterr().out


@pytest.mark.parametrize("device", DEVICES)
def test_gru_benchmark_runs_against_nn_gru(device, tmp_path, capsys):
    """--cell gru: the GRUs on the same machinery; GRU FLOPs count 3 gates, not 4."""
    sizes = "5x3x4x6x1,4x2x6x6x2xbi"
    exit_code = main(["--device", device, "--cell", "gru", "--sizes", sizes, "--repeats", "2", "--out",
                      str(tmp_path)])
    assert exit_code == 0
    with open(tmp_path / "results.csv", newline="") as csv_file:
        rows = list(csv.DictReader(csv_file))
    assert len(rows) == 2 * MODES * CANDIDATES
    assert {row["cell"] for row in rows} == {"gru"}
    for row in rows:
        assert row["status"] == "ok", row
        if row["candidate"] != "torch.nn":
            assert 0 <= float(row["max_abs_diff_output"]) < 1e-3, row
    first = next(row for row in rows if row["seq_len"] == "5" and row["mode"] == "inference")
    assert float(first["gflop_per_call"]) == pytest.approx(2 * 5 * 3 * (4 + 6) * 3 * 6 / 1e9)
    assert "torch.nn.GRU" in (tmp_path / "results.md").read_text()
    assert "GRU T=5" in capsys.readouterr().out


def test_gru_benchmark_rejects_a_projection(tmp_path):
    with pytest.raises(SystemExit):
        main(["--cell", "gru", "--sizes", "3x2x4x8x1xp4", "--out", str(tmp_path)])


def test_cpu_ceilings_are_measured_with_the_probe_built_into_the_extension():
    from benchmarks.ceilings import CpuCeilings, cpu_probe_gflops
    rate = cpu_probe_gflops("float32_fma", threads=1, seconds=0.05)
    assert math.isfinite(rate) and rate > 0
    ceilings = CpuCeilings(threads=1).measure(trials=2, seconds=0.02)
    # bfloat16 work is bounded by the fastest arithmetic for it, at least the float32 FMA rate.
    assert ceilings.gflops("bfloat16") >= ceilings.gflops("float32") > 0
    flags = cpu_flags()
    assert (ceilings.best["bfloat16_dot"] > 0) == ("avx512_bf16" in flags)
    assert (ceilings.best["bfloat16_amx"] > 0) == ({"amx_bf16", "amx_tile"} <= flags)
    assert (ceilings.best["float16_fma"] > 0) == ("avx512_fp16" in flags)


def test_cpu_peak_probe_rejects_an_unknown_kind():
    with pytest.raises(RuntimeError, match="kind must be float32_fma, bfloat16_dot"):
        torch.ops.fused_lstm.cpu_peak_probe("int8", 1, 1)


def test_benchmark_training_with_a_data_input(tmp_path):
    """The opt-in mode: training where the input needs no gradient; it runs and checks the gradients."""
    exit_code = main(["--device", "cpu", "--sizes", "5x3x4x6x1,4x2x6x6x2xbi", "--modes", "training-data-input",
                      "--repeats", "2", "--out", str(tmp_path)])
    assert exit_code == 0
    with open(tmp_path / "results.csv", newline="") as csv_file:
        rows = list(csv.DictReader(csv_file))
    assert {row["mode"] for row in rows} == {"training-data-input"}
    for row in rows:
        assert row["status"] == "ok", row
        if row["candidate"] != "torch.nn":
            assert float(row["max_abs_diff_grad"]) < 1e-4, row


def test_cells_mode_runs_from_the_command_line_and_writes_its_files(tmp_path, capsys):
    from benchmarks import run

    assert run.main(["--cells", "--quick", "--repeats", "2", "--out", str(tmp_path)]) == 0
    assert {path.name for path in tmp_path.iterdir()} == {"results.csv", "results.md"}
    assert "LSTMCell" in (tmp_path / "results.md").read_text() and "Machine:" in capsys.readouterr().out


def test_cells_mode_times_both_cells_against_torch_and_writes_the_table(tmp_path):
    """--cells on tiny sizes: LSTMCell and GRUCell, inference and unrolled training, one row per candidate."""
    from benchmarks import cells

    rows = cells.run(repeats=2, batches=(2,), hidden_sizes=(8,), progress=lambda line: None)
    assert {(row.cell, row.mode, row.candidate) for row in rows} == {
        (cell, mode, candidate) for cell in cells.CELLS for mode in ("inference", "training")
        for candidate in cells.CANDIDATES}
    for row in rows:
        assert 0 < row.min_us <= row.median_us <= row.max_us and row.speedup_vs_torch > 0
        if row.candidate == "fused_lstm":
            assert 0 <= row.max_abs_diff < 1e-4, row  # same weights and inputs as torch's cell
    cells.write_csv(rows, tmp_path / "results.csv")
    with open(tmp_path / "results.csv", newline="") as csv_file:
        assert len(list(csv.DictReader(csv_file))) == len(rows)
    assert "geometric mean" in cells.markdown(rows, ["header"])


def test_a_result_far_from_torch_nn_fails_the_run(tmp_path, monkeypatch, capsys):
    """The demo's correctness check can fail: fused_lstm's output off by 1% (far above float32 rounding) fails its
    rows and the run's exit code, and the message says how far it was."""
    import benchmarks.run

    collect = benchmarks.run.collect_results

    def collect_with_fused_output_off(candidate, inputs, run_result, mode):
        outputs, grads = collect(candidate, inputs, run_result, mode)
        if candidate.name == "fused_lstm":
            outputs = dict(outputs, output=outputs["output"] * 1.01)
        return outputs, grads

    monkeypatch.setattr(benchmarks.run, "collect_results", collect_with_fused_output_off)
    exit_code = main(["--device", "cpu", "--sizes", "5x3x4x6x1", "--repeats", "1", "--out", str(tmp_path)])
    assert exit_code == 1
    with open(tmp_path / "results.csv", newline="") as csv_file:
        statuses = {(row["candidate"], row["mode"]): row["status"] for row in csv.DictReader(csv_file)}
    for mode in ("inference", "training"):
        assert statuses[("fused_lstm", mode)].startswith("error: outputs differ from torch.nn's"), statuses
        assert statuses[("torch.nn", mode)] == "ok" and statuses[("reference", mode)] == "ok"
    assert "FAILED: fused_lstm" in capsys.readouterr().err


def test_the_demo_at_a_training_size_of_hidden_size_256_passes_its_correctness_check(tmp_path):
    """One size of make demo's sweep, small in T: float32 training at H = 256 is where the library GEMMs of the
    backward are large enough for the automatic GEMM choice (it raised on AVX2-only CPUs)."""
    exit_code = main(["--device", "cpu", "--sizes", "4x16x256x256x1", "--repeats", "1", "--out", str(tmp_path)])
    assert exit_code == 0
    with open(tmp_path / "results.csv", newline="") as csv_file:
        rows = list(csv.DictReader(csv_file))
    assert {(row["candidate"], row["mode"]) for row in rows if row["status"] == "ok"} == {
        (candidate, mode) for candidate in ("fused_lstm", "torch.nn", "reference") for mode in ("inference", "training")}
