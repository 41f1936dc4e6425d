"""Step-by-step speed: fused_lstm.LSTMCell / GRUCell against torch.nn's, one call at a time as decoders and RL
rollouts call them (python -m benchmarks.run --cells).

Rows: LSTMCell and GRUCell, B ∈ {1, 8, 64}, H ∈ {64, 256, 1024} (input size H), float32, in two modes:
  - inference: one call under torch.no_grad() (µs per call; each sample times a loop of calls);
  - training: 50 calls carrying the state (an unrolled sequence), then the backward of Σ h_t² (ms per unroll).
Both candidates share weights and inputs; rounds run them alternately (each round starts with the other), and the
table shows the median of the rounds, with min and max. A correctness column gives the largest difference of
the outputs (and, in training, the gradients) from torch's.
"""

import math
import statistics
import time
from dataclasses import asdict, dataclass, fields

import torch

import fused_lstm

BATCHES = (1, 8, 64)
HIDDEN_SIZES = (64, 256, 1024)
UNROLL_STEPS = 50
CELLS = {"LSTMCell": (fused_lstm.LSTMCell, torch.nn.LSTMCell), "GRUCell": (fused_lstm.GRUCell, torch.nn.GRUCell)}
CANDIDATES = ("fused_lstm", "torch.nn")


@dataclass
class CellRow:
    cell: str
    batch: int
    hidden_size: int
    mode: str
    dtype: str
    candidate: str
    repeats: int
    median_us: float
    min_us: float
    max_us: float
    speedup_vs_torch: float = math.nan
    max_abs_diff: float = math.nan


def _states(cell, batch, hidden, dtype):
    if cell == "LSTMCell":
        return tuple(torch.randn(batch, hidden, dtype=dtype) for _ in range(2))
    return torch.randn(batch, hidden, dtype=dtype)


def _unroll(module, xs, hx):
    """UNROLL_STEPS calls carrying the state; returns the outputs h_t."""
    outputs = []
    for x in xs:
        hx = module(x, hx)
        outputs.append(hx[0] if isinstance(hx, tuple) else hx)
    return outputs


def _train(module, xs, hx):
    outputs = _unroll(module, xs, hx)
    loss = sum((h * h).sum() for h in outputs)
    return torch.autograd.grad(loss, list(module.parameters()))


def _seconds_per_call(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def benchmark_row(cell, batch, hidden, mode, dtype, repeats, target_seconds=0.02):
    """The two candidates on one row: timing samples in µs, and the correctness of fused_lstm's results."""
    torch.manual_seed(0)
    fused_class, torch_class = CELLS[cell]
    baseline = torch_class(hidden, hidden, dtype=dtype)
    fused = fused_class(hidden, hidden, dtype=dtype)
    fused.load_state_dict(baseline.state_dict())
    modules = {"fused_lstm": fused, "torch.nn": baseline}
    xs = [torch.randn(batch, hidden, dtype=dtype) for _ in range(UNROLL_STEPS)]
    hx = _states(cell, batch, hidden, dtype)

    if mode == "inference":
        def call(module):
            with torch.no_grad():
                module(xs[0], hx)

        with torch.no_grad():
            results = {name: module(xs[0], hx) for name, module in modules.items()}
        flat = {name: list(r) if isinstance(r, tuple) else [r] for name, r in results.items()}
    else:
        def call(module):
            _train(module, xs, hx)

        results = {name: _unroll(module, xs, hx) + list(_train(module, xs, hx)) for name, module in modules.items()}
        flat = results
    difference = max((a - b).abs().max().item() for a, b in zip(flat["fused_lstm"], flat["torch.nn"]))

    # Calls per sample: enough for target_seconds, from a warm-up sample of each candidate.
    single = max(_seconds_per_call(lambda: call(module), 3) for module in modules.values())
    calls = max(1, int(target_seconds / single))
    samples = {name: [] for name in CANDIDATES}
    for repeat in range(repeats):
        order = CANDIDATES if repeat % 2 == 0 else CANDIDATES[::-1]
        for name in order:
            samples[name].append(_seconds_per_call(lambda: call(modules[name]), calls) * 1e6)
    rows = []
    for name in CANDIDATES:
        values = samples[name]
        rows.append(CellRow(cell, batch, hidden, mode, str(dtype).replace("torch.", ""), name, repeats,
                            statistics.median(values), min(values), max(values),
                            max_abs_diff=difference if name == "fused_lstm" else math.nan))
    rows[0].speedup_vs_torch = rows[1].median_us / rows[0].median_us
    rows[1].speedup_vs_torch = 1.0
    return rows


def run(dtype=torch.float32, repeats=15, batches=BATCHES, hidden_sizes=HIDDEN_SIZES, modes=("inference", "training"),
        progress=print):
    rows = []
    for cell in CELLS:
        for mode in modes:
            for batch in batches:
                for hidden in hidden_sizes:
                    rows += benchmark_row(cell, batch, hidden, mode, dtype, repeats)
                    fused, baseline = rows[-2], rows[-1]
                    progress(f"{cell} {mode} B={batch} H={hidden}: fused {_time(fused)}, torch {_time(baseline)}, "
                             f"{fused.speedup_vs_torch:.2f}x")
    return rows


def _time(row):
    unit = "us" if row.mode == "inference" else "ms"
    value = row.median_us if row.mode == "inference" else row.median_us / 1e3
    return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"


def geometric_mean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summary(rows):
    speedups = [row.speedup_vs_torch for row in rows if row.candidate == "fused_lstm"]
    return (f"speedup vs torch: geometric mean {geometric_mean(speedups):.2f}x, lowest {min(speedups):.2f}x, "
            f"highest {max(speedups):.2f}x over {len(speedups)} rows")


def write_csv(rows, path):
    import csv

    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([field.name for field in fields(CellRow)])
        for row in rows:
            writer.writerow(list(asdict(row).values()))


def markdown(rows, header_lines):
    lines = [*header_lines, "", "| cell | mode | B | H | fused_lstm | torch.nn | speedup | max abs diff |",
             "|---|---|---|---|---|---|---|---|"]
    for fused, baseline in zip(rows[0::2], rows[1::2]):
        lines.append(f"| {fused.cell} | {fused.mode} | {fused.batch} | {fused.hidden_size} | {_time(fused)} | "
                     f"{_time(baseline)} | **{fused.speedup_vs_torch:.2f}×** | {fused.max_abs_diff:.1e} |")
    lines += ["", summary(rows)]
    return "\n".join(lines) + "\n"
