"""Smoke test of the benchmark suite on tiny shapes: it runs end to end and writes sane files.
No timing is asserted; timings of tiny shapes on a shared machine mean nothing."""

import csv
import math

import pytest

from benchmarks.run import main
from conftest import DEVICES

# Plain, multi-layer bidirectional, and projected: every branch of the FLOP count and the plots.
TINY_SIZES = "5x3x4x6x1,4x2x6x6x2xbi,3x2x4x8x1xp4"
SHAPES, MODES, CANDIDATES = 3, 2, 3

POSITIVE_COLUMNS = ("median_ms", "min_ms", "max_ms", "tokens_per_s", "gflop_per_call", "gflops",
                    "gemm_peak_gflops", "peak_fraction", "speedup_vs_torch")
# Can be 0: identical results, or (on the CPU) memory the allocator already held.
NON_NEGATIVE_COLUMNS = ("peak_memory_mb",)


@pytest.mark.parametrize("device", DEVICES)
def test_benchmark_writes_table_csv_and_plots(device, tmp_path, capsys):
    exit_code = main(["--device", device, "--sizes", TINY_SIZES, "--repeats", "2", "--out", str(tmp_path)])
    assert exit_code == 0

    with open(tmp_path / "results.csv", newline="") as csv_file:
        rows = list(csv.DictReader(csv_file))
    assert len(rows) == SHAPES * MODES * CANDIDATES
    assert {row["candidate"] for row in rows} == {"fused_lstm", "torch.nn.LSTM", "reference"}
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
        if row["candidate"] != "torch.nn.LSTM":
            # Same weights and inputs as nn.LSTM: the differences are rounding, finite and small.
            differences = [float(row["max_abs_diff_output"])]
            if row["mode"] == "training":
                differences.append(float(row["max_abs_diff_grad"]))
            assert all(math.isfinite(value) and 0 <= value < 1e-3 for value in differences), row

    markdown = (tmp_path / "results.md").read_text()
    assert "GEMM peak" in markdown and "torch " in markdown
    assert markdown.count("| fused_lstm |") == SHAPES * MODES
    for plot in ("speedup_vs_batch.png", "speedup_vs_hidden.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "speedup vs nn.LSTM" in capsys.readouterr().out
