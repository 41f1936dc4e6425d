"""Turns result rows into the terminal table, results.csv, results.md and the speedup plots."""

import csv
import math
import sys
from dataclasses import asdict, dataclass, fields

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib import ticker  # noqa: E402

from .candidates import BASELINE, FUSED  # noqa: E402
from .cases import shape_label  # noqa: E402

NAN = float("nan")


@dataclass
class ResultRow:
    """One candidate on one shape, dtype and mode; also the CSV's columns, in this order."""
    sweeps: str
    cell: str  # "lstm" or "gru"
    seq_len: int
    batch: int
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    proj_size: int
    dtype: str
    mode: str
    candidate: str
    status: str  # "ok", "skipped: why" or "error: what"
    repeats: int = 0
    median_ms: float = NAN
    min_ms: float = NAN
    max_ms: float = NAN
    tokens_per_s: float = NAN
    gflop_per_call: float = NAN
    gflops: float = NAN
    ceiling_gflops: float = NAN  # the machine's ceiling for this dtype (benchmarks/ceilings.py)
    ceiling_fraction: float = NAN
    peak_memory_mb: float = NAN
    speedup_vs_torch: float = NAN  # torch.nn.LSTM's (or GRU's) median time over this candidate's
    max_abs_diff_output: float = NAN  # against torch.nn: output, h_n (and c_n)
    max_abs_diff_grad: float = NAN  # against torch.nn: input and parameter gradients (training)

    def shape_label(self):
        return shape_label(self)


def _significant(value, digits=3):
    """3 significant digits without scientific notation: 0.0123, 1.23, 123, 12345."""
    if math.isnan(value):
        return "—"
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def _with_suffix(value):
    if math.isnan(value):
        return "—"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return _significant(value / scale) + suffix
    return _significant(value)


def _or_dash(value, formatted):
    return "—" if math.isnan(value) else formatted


# (header, formatter); the terminal table and the markdown file share these.
COLUMNS = [
    ("shape", lambda row: row.shape_label()),
    ("dtype", lambda row: row.dtype),
    ("mode", lambda row: row.mode),
    ("candidate", lambda row: row.candidate),
    ("median ms", lambda row: _significant(row.median_ms)),
    ("min–max ms", lambda row: _or_dash(row.min_ms, f"{_significant(row.min_ms)}–{_significant(row.max_ms)}")),
    ("tokens/s", lambda row: _with_suffix(row.tokens_per_s)),
    ("GFLOP/s", lambda row: _significant(row.gflops)),
    ("% of ceiling", lambda row: _or_dash(row.ceiling_fraction, f"{100 * row.ceiling_fraction:.1f}%")),
    ("peak mem MB", lambda row: _significant(row.peak_memory_mb)),
    ("speedup vs torch.nn", lambda row: _or_dash(row.speedup_vs_torch, f"{row.speedup_vs_torch:.2f}×")),
    ("max|Δ| out", lambda row: _or_dash(row.max_abs_diff_output, f"{row.max_abs_diff_output:.1e}")),
    ("max|Δ| grad", lambda row: _or_dash(row.max_abs_diff_grad, f"{row.max_abs_diff_grad:.1e}")),
    ("note", lambda row: "" if row.status == "ok" else row.status),
]
# Columns that say which case a row belongs to; the terminal prints them once per case.
CASE_COLUMNS = 3


def fill_speedups(rows):
    """speedup_vs_torch = torch.nn.LSTM's (GRU's) median time / the candidate's, within each case and mode."""
    baseline_ms = {(row.shape_label(), row.dtype, row.mode): row.median_ms
                   for row in rows if row.candidate == BASELINE and row.status == "ok"}
    for row in rows:
        reference_ms = baseline_ms.get((row.shape_label(), row.dtype, row.mode), NAN)
        if row.status == "ok":
            row.speedup_vs_torch = reference_ms / row.median_ms


def format_terminal_table(rows):
    cells = []
    previous_case = None
    for row in rows:
        line = [formatter(row) for _, formatter in COLUMNS]
        case = tuple(line[:CASE_COLUMNS])
        if case == previous_case:
            line[:CASE_COLUMNS] = [""] * CASE_COLUMNS
        previous_case = case
        cells.append(line)
    headers = [header for header, _ in COLUMNS]
    widths = [max([len(header)] + [len(line[index]) for line in cells]) for index, header in enumerate(headers)]
    numeric = {"median ms", "min–max ms", "tokens/s", "GFLOP/s", "% of ceiling", "peak mem MB",
               "speedup vs torch.nn", "max|Δ| out", "max|Δ| grad"}

    def render(line):
        return "  ".join(cell.rjust(width) if header in numeric else cell.ljust(width)
                         for cell, width, header in zip(line, widths, headers)).rstrip()

    separator = "  ".join("-" * width for width in widths)
    return "\n".join([render(headers), separator] + [render(line) for line in cells])


def write_csv(rows, path):
    with open(path, "w", newline="") as csv_file:
        writer = csv.DictWriter(csv_file, fieldnames=[field.name for field in fields(ResultRow)])
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)


def write_markdown(rows, path, header_lines):
    headers = [header for header, _ in COLUMNS]
    lines = list(header_lines) + ["", "| " + " | ".join(header.replace("|", "\\|") for header in headers) + " |",
                                  "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(formatter(row).replace("|", "\\|") for _, formatter in COLUMNS) + " |")
    with open(path, "w") as markdown_file:
        markdown_file.write("\n".join(lines) + "\n")


# The plots' x axes: (row field on the x axis, axis label).
PLOT_AXES = {
    "batch": ("batch", "batch size B"),
    "hidden": ("hidden_size", "hidden size H"),
}


def _series_key(row, axis):
    """What a line holds fixed: mode, dtype, and the shape without the axis' own dimension. Along the
    hidden axis a shape with I = H keeps I = H (the sweeps grow both); other shapes keep their I."""
    dropped = {"batch": ("B=",), "hidden": ("H=", "I=")}[axis]
    parts = [part for part in row.shape_label().split() if not part.startswith(dropped)]
    if axis == "hidden":
        parts.insert(1, "I=H" if row.input_size == row.hidden_size else f"I={row.input_size}")
    return row.mode, row.dtype, " ".join(parts)


def plot_speedup(rows, axis, path):
    """fused_lstm's speedup over torch.nn.LSTM (or GRU) against batch or hidden size, one line per mode.

    A line joins rows that differ only along the axis (same mode, dtype and other dimensions), so a
    line never mixes shapes; when no two rows form such a line (e.g. a hand-picked --sizes list), each
    row is drawn as a lone point instead."""
    x_field, axis_label = PLOT_AXES[axis]
    fused_rows = [row for row in rows if row.candidate == FUSED and not math.isnan(row.speedup_vs_torch)]
    series = {}
    for row in fused_rows:
        series.setdefault(_series_key(row, axis), []).append(row)

    figure, axes = plt.subplots(figsize=(8, 5))
    lines = {key: members for key, members in series.items() if len(members) >= 2}
    if lines:
        for (mode, dtype, fixed_shape), members in sorted(lines.items()):
            members.sort(key=lambda row: getattr(row, x_field))
            axes.plot([getattr(row, x_field) for row in members], [row.speedup_vs_torch for row in members],
                      marker="o", label=f"{mode} · {dtype} · {fixed_shape}")
    else:
        for mode in sorted({row.mode for row in fused_rows}):
            members = [row for row in fused_rows if row.mode == mode]
            axes.plot([getattr(row, x_field) for row in members], [row.speedup_vs_torch for row in members],
                      marker="o", linestyle="none", label=f"{mode} (separate shapes)")
            for row in members:
                axes.annotate(f"{row.shape_label()} {row.dtype}", (getattr(row, x_field), row.speedup_vs_torch),
                              fontsize=6, xytext=(4, 4), textcoords="offset points")
    axes.axhline(1.0, color="gray", linewidth=1, linestyle="--")
    if fused_rows:
        axes.set_xscale("log", base=2)
        # Tick at the measured sizes, written as plain numbers rather than powers of two.
        axes.set_xticks(sorted({getattr(row, x_field) for row in fused_rows}))
        axes.xaxis.set_major_formatter(ticker.ScalarFormatter())
        axes.xaxis.set_minor_locator(ticker.NullLocator())
        axes.legend(fontsize=7)
    else:
        axes.text(0.5, 0.5, "no fused_lstm results", ha="center", va="center", transform=axes.transAxes)
    axes.set_xlabel(axis_label)
    baseline = " / ".join(f"{BASELINE}.{cell.upper()}" for cell in sorted({row.cell for row in rows})) or BASELINE
    axes.set_ylabel(f"speedup of {FUSED} over {baseline} (×)")
    axes.set_title(f"{FUSED} vs {baseline}: speedup against {axis_label}")
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


class ProgressBar:
    """A text progress bar on stderr: redrawn in place on a terminal, one line per step otherwise."""

    def __init__(self, total, width=30):
        self.total, self.width, self.done = total, width, 0
        self.stream = sys.stderr  # looked up now, not at import, so redirections (pytest's too) apply
        self.in_place = self.stream.isatty()

    def start(self, description):
        """Shows the step about to run, with the steps finished so far."""
        filled = self.width * self.done // max(self.total, 1)
        text = f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {description}"
        self.stream.write("\r\033[K" + text if self.in_place else text + "\n")
        self.stream.flush()

    def finish(self):
        self.done += 1

    def close(self):
        self.start("done" if self.done == self.total else "stopped")
        if self.in_place:
            self.stream.write("\n")
            self.stream.flush()
