"""Times fused_lstm.LSTM, torch.nn.LSTM and the reference loop side by side in one process (or the GRUs).

    python -m benchmarks.run --device cpu|cuda [--cell lstm|gru] [--dtype float32[,bfloat16,...]] [--quick]
                             [--sizes TxBxIxHxL[xbi][xpP],...] [--modes inference,training,...]
                             [--repeats N] [--warmup N] [--allow-tf32] [--out DIR]
    python -m benchmarks.run --cells [--repeats N] [--out DIR]     (LSTMCell/GRUCell step by step: cells.py)

Writes results.csv, results.md, speedup_vs_batch.png and speedup_vs_hidden.png to --out (default
benchmarks/results/<device>/, or <device>-quick/ for --quick so a demo never overwrites a full sweep;
with a -gru suffix for --cell gru),
and prints the table. Exits 1 if any candidate failed on any row (the table says which and why).
"""

import argparse
import contextlib
import datetime
import math
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from . import cases as case_sets
from .candidates import (BASELINE, CANDIDATE_NAMES, MODULE_NAMES, REFERENCE, build_candidates, clear_grads,
                         collect_results, make_inputs, max_abs_difference, reference_skip_reason, run_once,
                         RELATIVE_DIFFERENCE_BOUND, relative_difference)
from . import ceilings as machine_ceilings
from .measure import PeakMemoryProbe, describe_machine, time_call_ms
from .report import (ProgressBar, ResultRow, fill_speedups, format_terminal_table, plot_speedup, write_csv,
                     write_markdown)

# "training-data-input": training where the input is data and needs no gradient (a first layer over
# features); opt-in, the default sweeps time the harder case where it does.
MODES = ("inference", "training", "training-data-input")
DEFAULT_MODES = ("inference", "training")
RESULTS_ROOT = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class RepeatPolicy:
    """Without --repeats, each case runs about target_seconds of timed rounds, within these bounds."""
    target_seconds: float
    min_repeats: int
    max_repeats: int

    def repeats_for(self, round_ms):
        wanted = math.ceil(self.target_seconds * 1e3 / max(round_ms, 1e-3))
        return min(self.max_repeats, max(self.min_repeats, wanted))


REPEAT_POLICIES = {  # (device type, quick)
    ("cpu", False): RepeatPolicy(2.0, 5, 20),
    ("cpu", True): RepeatPolicy(0.5, 3, 10),
    ("cuda", False): RepeatPolicy(1.0, 10, 100),
    ("cuda", True): RepeatPolicy(0.3, 5, 50),
}


def parse_arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--cell", choices=case_sets.CELLS, default="lstm",
                        help="benchmark the LSTMs (default) or the GRUs, on the same sizes")
    parser.add_argument("--dtype", default=None,
                        help="comma-separated dtypes among float32,bfloat16,float16; the size sweeps use the "
                             "first, the dtype sweep all (default: float32 on cpu; on cuda "
                             "float32,bfloat16,float16, or float32,bfloat16 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a handful of sizes instead of the full sweep")
    parser.add_argument("--sizes", default=None,
                        help="custom sizes instead of a sweep: TxBxIxHxLayers, optionally xbi (bidirectional) "
                             "and xp<proj_size>, comma-separated, e.g. 100x64x512x512x1,50x8x128x128x2xbi")
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES),
                        help=f"comma-separated among {','.join(MODES)} (default: {','.join(DEFAULT_MODES)})")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds per case (default: enough for a time budget, within bounds)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds after the correctness call, before timing (at least 1)")
    parser.add_argument("--allow-tf32", action="store_true",
                        help="let cuBLAS and cuDNN use TF32 for float32 (default: IEEE float32 for all)")
    parser.add_argument("--out", default=None, help="results folder")
    parser.add_argument("--cells", action="store_true",
                        help="LSTMCell and GRUCell one call at a time against torch's (benchmarks/cells.py)")
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    if args.cells:
        args.out = Path(args.out) if args.out else RESULTS_ROOT / "cpu-cells"
        return args

    default_dtypes = ("float32",) if args.device.type == "cpu" else (
        ("float32", "bfloat16") if args.quick else case_sets.DTYPE_NAMES)
    args.dtypes = tuple(args.dtype.split(",")) if args.dtype else default_dtypes
    args.modes = tuple(args.modes.split(","))
    for dtype in args.dtypes:
        if dtype not in case_sets.DTYPE_NAMES:
            parser.error(f"unknown dtype {dtype!r}; choose among {', '.join(case_sets.DTYPE_NAMES)}")
    for mode in args.modes:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}; choose among {', '.join(MODES)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (its last round sizes the number of repeats)")
    if args.sizes:
        try:
            args.cases = case_sets.parse_sizes(args.sizes, args.dtypes)
        except ValueError as error:
            parser.error(str(error))
    else:
        sweep = case_sets.quick_sweep if args.quick else case_sets.full_sweep
        args.cases = sweep(args.device.type, args.dtypes)
    try:
        args.cases = case_sets.for_cell(args.cases, args.cell)
    except ValueError as error:
        parser.error(str(error))
    default_folder = (args.device.type + ("-quick" if args.quick else "") +
                      ("-gru" if args.cell == "gru" else ""))
    args.out = Path(args.out) if args.out else RESULTS_ROOT / default_folder
    return args


@contextlib.contextmanager
def float32_precision(device, allow_tf32):
    """Puts cuBLAS (fused_lstm's GEMMs, the reference's, the GEMM peak) and cuDNN's LSTM on the same
    float32 precision for the run, then restores the settings: PyTorch lets cuDNN use TF32 by default
    but not cuBLAS, which would compare TF32 against IEEE float32. Yields a note for the header.

    These are the allow_tf32 flags rather than the newer per-op fp32_precision ones: setting the
    latter for cuDNN RNNs alone makes PyTorch refuse later reads of cuDNN's overall TF32 flag."""
    if device.type != "cuda":
        yield "CPU GEMMs in their native precision"
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow_tf32
    try:
        yield f"float32 GEMMs in {'TF32' if allow_tf32 else 'IEEE float32'} for cuBLAS and cuDNN alike"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _error_status(error):
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"error: {type(error).__name__}: {message[:120]}"


def benchmark_case(case, mode, args, memory_probe):
    """One shape, dtype and mode: a correctness and memory call per candidate, warm-up rounds, then timed
    rounds, the candidates in a random order each round. Returns a row per candidate, skipped and failed ones
    included."""
    device = args.device
    rows = {name: ResultRow(sweeps="+".join(case.sweeps), cell=case.cell, seq_len=case.seq_len, batch=case.batch,
                            input_size=case.input_size, hidden_size=case.hidden_size,
                            num_layers=case.num_layers, bidirectional=case.bidirectional,
                            proj_size=case.proj_size, dtype=case.dtype, mode=mode, candidate=name, status="ok")
            for name in CANDIDATE_NAMES}
    skip_reason = reference_skip_reason(case, device)
    if skip_reason:
        rows[REFERENCE].status = skip_reason
    names = [name for name in CANDIDATE_NAMES if rows[name].status == "ok"]

    torch.manual_seed(0)
    try:
        candidates = build_candidates(case, device, names)
        inputs = make_inputs(case, device, mode)
    except Exception as error:  # e.g. a dtype this device cannot build torch.nn's module in
        for name in names:
            rows[name].status = _error_status(error)
        return list(rows.values())
    for candidate in candidates:
        candidate.module.train(mode != "inference")

    # The first call of each candidate: its peak memory, and its results for the correctness check.
    # It also absorbs one-time costs (kernel selection, allocator growth) before any timing.
    collected, active = {}, []
    for candidate in candidates:
        clear_grads(candidate, inputs)
        run_results = []
        try:
            peak_bytes = memory_probe.measure(lambda: run_results.append(run_once(candidate, inputs, mode)))
        except Exception as error:
            rows[candidate.name].status = _error_status(error)
            continue
        rows[candidate.name].peak_memory_mb = peak_bytes / 2**20
        collected[candidate.name] = collect_results(candidate, inputs, run_results[0], mode)
        active.append(candidate)
    if BASELINE in collected:
        expected_outputs, expected_grads = collected[BASELINE]
        for name, (outputs, grads) in collected.items():
            if name != BASELINE:
                rows[name].max_abs_diff_output = max_abs_difference(outputs, expected_outputs)
                rows[name].max_abs_diff_grad = max_abs_difference(grads, expected_grads)
                # The correctness check: a result too far from torch.nn's fails the row, and the run.
                bound = RELATIVE_DIFFERENCE_BOUND[case.dtype]
                for what, difference in (("outputs", relative_difference(outputs, expected_outputs)),
                                         ("gradients", relative_difference(grads, expected_grads) if grads else 0.0)):
                    if not difference <= bound:
                        rows[name].status = (f"error: {what} differ from torch.nn's: max|Δ|/max|torch.nn| = "
                                             f"{difference:.2g} > {bound:g}")
    del collected  # free the saved outputs and gradients before timing

    def timed_call(candidate):
        clear_grads(candidate, inputs)
        return time_call_ms(lambda: run_once(candidate, inputs, mode), device)

    round_ms = 0.0
    for _ in range(args.warmup):
        round_ms = sum(timed_call(candidate) for candidate in active)
    policy = REPEAT_POLICIES[(device.type, args.quick)]
    repeats = args.repeats or policy.repeats_for(round_ms)

    # Interleaved: each round runs every candidate once, in an order drawn at random (seeded), so that drifting
    # clocks, temperature or background load hit all candidates alike, and so does what the call before leaves
    # behind. (A rotation did not: with three candidates one follows the same neighbour in two rounds of three,
    # and after the slow Python reference the threads of the next call have gone to sleep.)
    samples_ms = {candidate.name: [] for candidate in active}
    order = random.Random(0)
    for _ in range(repeats):
        for candidate in order.sample(active, len(active)):
            samples_ms[candidate.name].append(timed_call(candidate))

    flops = case.flops(mode)
    for name, samples in samples_ms.items():
        row = rows[name]
        row.repeats = len(samples)
        row.median_ms, row.min_ms, row.max_ms = statistics.median(samples), min(samples), max(samples)
        row.tokens_per_s = case.tokens / (row.median_ms / 1e3)
        row.gflop_per_call = flops / 1e9
        row.gflops = flops / row.median_ms / 1e6
    return list(rows.values())


def header_lines(args, ceilings, memory_probe, precision_note):
    sweep = "custom sizes" if args.sizes else ("quick sweep" if args.quick else "full sweep")
    clock = "CUDA events" if args.device.type == "cuda" else "wall clock (time.perf_counter)"
    module = MODULE_NAMES[args.cell]
    return [
        f"**fused_lstm.{module} benchmark on {args.device.type}** ({sweep}, "
        f"{datetime.datetime.now().isoformat(timespec='minutes')})",
        "",
        f"- Machine: {describe_machine(args.device)}",
        f"- Ceilings (measured before and between the cases, the best of every trial): {ceilings.description()}",
        f"- Timing: {clock}; one untimed correctness call and {args.warmup} warm-up round(s), then the median "
        "(min–max) of the repeats, candidates interleaved in a random order each round; inference under "
        "torch.no_grad(), "
        "training = forward + backward of a randomly weighted sum of the output (training-data-input: the "
        "same with an input that needs no gradient)",
        "- GFLOP/s: GEMM FLOPs only, 2·T·B·(I+P)·G·H (G = 4 gates for the LSTM, 3 for the GRU; "
        "+ 2·T·B·H·P with a projection) per layer and direction, "
        "3× for training (less the first layer's input gradient for training-data-input); % of ceiling is "
        "against the ceiling above for the row's dtype (CPU: arithmetic peaks that no kernel exceeds; GPU: a large "
        "matmul's rate)",
        f"- Peak memory: {memory_probe.description()}",
        f"- Precision: {precision_note}",
        f"- max|Δ|: largest absolute difference from torch.nn.{module} with the same weights and inputs "
        "(output and final states; in training also the input and parameter gradients)",
    ]


def run_cells(args):
    from . import cells

    args.out.mkdir(parents=True, exist_ok=True)
    header = [f"**fused_lstm.LSTMCell / GRUCell against torch.nn, one call at a time** "
              f"({datetime.datetime.now().isoformat(timespec='minutes')})", "",
              f"- Machine: {describe_machine(args.device)}",
              f"- float32, input size = H; inference: µs per call under no_grad; training: ms per {cells.UNROLL_STEPS}"
              "-call unroll and the backward of Σ h_t²; median (min–max in the CSV) of "
              f"{args.repeats or 15} alternating rounds; speedup = torch's median / ours"]
    # --quick: one small case of each kind (a check that the mode runs, not a measurement).
    sizes = dict(batches=(1,), hidden_sizes=(16,)) if args.quick else {}
    rows = cells.run(repeats=args.repeats or 15, **sizes)
    cells.write_csv(rows, args.out / "results.csv")
    text = cells.markdown(rows, header)
    (args.out / "results.md").write_text(text)
    print(text)
    print(f"wrote results.csv and results.md to {args.out}")
    return 0


def main(argv=None):
    args = parse_arguments(argv)
    if args.cells:
        return run_cells(args)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA GPU is available", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with float32_precision(args.device, args.allow_tf32) as precision_note:
        rows, header = run_benchmarks(args, precision_note)

    fill_speedups(rows)
    print("\n".join(line for line in header if line))
    print(format_terminal_table(rows))
    write_csv(rows, args.out / "results.csv")
    write_markdown(rows, args.out / "results.md", header)
    for axis in ("batch", "hidden"):
        plot_speedup(rows, axis, args.out / f"speedup_vs_{axis}.png")
    print(f"\nwrote results.csv, results.md, speedup_vs_batch.png, speedup_vs_hidden.png to {args.out}")

    failures = [row for row in rows if row.status.startswith("error")]
    for row in failures:
        print(f"FAILED: {row.candidate} {row.shape_label()} {row.dtype} {row.mode}: {row.status}", file=sys.stderr)
    return 1 if failures else 0


def run_benchmarks(args, precision_note):
    """The ceilings, then every case and mode, re-measuring the ceilings between cases (a busy moment must not
    lower them: the best of every trial counts); Ctrl-C stops early and keeps the finished rows."""
    memory_probe = PeakMemoryProbe(args.device)
    dtypes_in_use = [dtype for dtype in case_sets.DTYPE_NAMES if any(case.dtype == dtype for case in args.cases)]
    ceilings = machine_ceilings.for_device(args.device)
    refresh = dict(dtypes=dtypes_in_use) if args.device.type == "cuda" else {}
    ceilings.measure(**refresh)
    progress = ProgressBar(len(args.cases) * len(args.modes))
    rows = []
    try:
        for case in args.cases:
            ceilings.measure(trials=1, seconds=0.05, **refresh)
            for mode in args.modes:
                progress.start(f"{case.label()} {case.dtype} {mode}")
                rows += benchmark_case(case, mode, args, memory_probe)
                progress.finish()
    except KeyboardInterrupt:
        print("\ninterrupted: reporting the cases that finished", file=sys.stderr)
    progress.close()
    for row in rows:
        row.ceiling_gflops = ceilings.gflops(row.dtype)
        row.ceiling_fraction = row.gflops / row.ceiling_gflops
    return rows, header_lines(args, ceilings, memory_probe, precision_note)


if __name__ == "__main__":
    sys.exit(main())
