"""Why the LSTM works, v2: which part of the gated, additive cell update makes long lags learnable.

Trains every arm (see ARMS) on the adding problem at T = 50, 100, 200 (and 500 for the arms that solve
T = 200) and the main arms on the temporal order problem, 10 seeds each, at a learning rate chosen per
arm by a small sweep; records per run the steps to solve, the test loss curve, the pre-clip gradient
norm, the keep-gate values and the state gradients ||dL/ds_{T-k}|| at initialisation and after training.
experiments/report.py turns the CSV files into the plots and docs/why_lstm.md.

Training runs on the modules as built (fused_lstm.LSTM / fused_lstm.GRU for the LSTM and GRU arms);
the measurements rerun the same weights through each cell's readable ``unroll`` (experiments/cells.py),
in float64 so that gradients below float32's range show as numbers, not 0.

Run from the repository root:
    python -m experiments.why_lstm --workers 2   # the full run, results in experiments/results/
    python -m experiments.why_lstm --quick       # seconds-long smoke run of the whole pipeline (tests)
"""

import argparse
import csv
import json
import math
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from experiments.cells import LibraryRecurrent, NoForgetGateLSTM, StateNetworkCell
from experiments.measures import gradient_lags, probe_statistics, state_gradient_profile
from experiments.stats import median
from experiments.tasks import TASKS, solved_loss

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "experiments", "results")


@dataclass(frozen=True)
class Arm:
    label: str
    update: str  # the state update, for the doc's setup table


# In plotting and table order.
ARMS = {
    "rnn": Arm("tanh RNN", "h' = tanh(W x + U h + b)  (torch.nn.RNN)"),
    "generic": Arm("generic network", "c' = MLP([x, h, c])"),
    "additive": Arm("additive, ungated", "c' = c + MLP([x, h, c])"),
    "gated": Arm("gated additive network", "c' = s(f) c + s(i) MLP([x, h, c]),  b_f = 1"),
    "nfg": Arm("LSTM, no forget gate", "c' = c + s(i) tanh(g)  (f = 1)"),
    "nfg_ib3": Arm("LSTM, no forget gate, b_i = -3", "as above, input-gate bias -3 (the 1997 remedy)"),
    "lstm_bf0": Arm("LSTM, b_f = 0", "c' = s(f) c + s(i) tanh(g), forget bias 0  (fused_lstm.LSTM)"),
    "lstm_bf1": Arm("LSTM, b_f = 1", "forget bias 1  (fused_lstm.LSTM)"),
    "lstm_chrono": Arm("LSTM, chrono init", "b_f ~ log U(1, T-1), b_i = -b_f  (fused_lstm.LSTM)"),
    "gru": Arm("GRU", "h' = (1-z) n + z h  (fused_lstm.GRU)"),
}
STATE_NETWORK_ARMS = {"generic": "generic", "additive": "additive", "gated": "gated"}
# The cells whose Python time loop costs several times a fused step: ordering jobs by cost.
SLOW_ARMS = {"generic", "additive", "gated", "nfg", "nfg_ib3"}
GATED_STATE_NETWORK_FORGET_BIAS = 1.0
NFG_1997_INPUT_GATE_BIAS = -3.0


@dataclass
class Config:
    hidden_size: int = 32
    mlp_width: int = 64  # hidden layer of the state networks: 2H, so they have more parameters than the LSTM
    batch_size: int = 32
    step_budget: int = 3000
    eval_every: int = 50
    test_batch_size: int = 256
    probe_batch_size: int = 64  # the fixed batch of the gate and state-gradient measurements
    grad_clip_norm: float = 1.0
    learning_rates: list = field(default_factory=lambda: [1e-3, 3e-3, 1e-2])
    sweep_length: int = 50  # the shortest length, where every arm has its best chance
    sweep_seeds: list = field(default_factory=lambda: [100, 101])
    seeds: list = field(default_factory=lambda: list(range(10)))
    lengths: list = field(default_factory=lambda: [50, 100, 200])
    # T = 500 (2.5x the cost per step) only for the arms whose median steps to solve at the longest length
    # was at most this: the rest would mostly run out of budget there, at the highest cost of the run.
    long_length: int = 500
    long_max_median_steps: float = 1000
    order_length: int = 100
    order_arms: list = field(default_factory=lambda: ["generic", "gated", "lstm_bf1", "lstm_chrono", "gru"])
    arms: list = field(default_factory=lambda: list(ARMS))
    # An arm that solved no seed at a length is not run at the next one (it could only cost budget).
    skip_after_unsolved: bool = True
    library: str = "fused"
    workers: int = 1


def quick_config():
    return Config(hidden_size=8, mlp_width=16, batch_size=8, step_budget=20, eval_every=10, test_batch_size=32,
                  probe_batch_size=8, learning_rates=[1e-2, 3e-2], sweep_length=8, sweep_seeds=[100], seeds=[0, 1],
                  lengths=[8, 12], long_length=16, long_max_median_steps=math.inf, order_length=12,
                  order_arms=["generic", "gated", "lstm_bf1", "gru"], skip_after_unsolved=False)


@dataclass(frozen=True)
class Job:
    phase: str  # "sweep" (learning-rate choice), "main" (the reported runs)
    task: str
    arm: str
    T: int
    seed: int
    learning_rate: float


# ----------------------------------------------------------------------------------------------
# Models


def import_fused_lstm():
    import fused_lstm  # the built extension, importable from the repository root

    return fused_lstm


def make_library_core(kind, input_size, hidden_size, library):
    if kind == "rnn":
        return nn.RNN(input_size, hidden_size, nonlinearity="tanh", batch_first=True)
    module = import_fused_lstm() if library == "fused" else nn
    return (module.LSTM if kind == "lstm" else module.GRU)(input_size, hidden_size, batch_first=True)


def set_lstm_gate_biases(lstm, forget_bias, input_bias=None):
    """Gate order i, f, g, o; the effective bias is bias_ih + bias_hh, so bias_hh's rows are zeroed."""
    hidden_size = lstm.hidden_size
    with torch.no_grad():
        lstm.bias_ih_l0[hidden_size:2 * hidden_size].copy_(forget_bias)
        lstm.bias_hh_l0[hidden_size:2 * hidden_size].zero_()
        if input_bias is not None:
            lstm.bias_ih_l0[:hidden_size].copy_(input_bias)
            lstm.bias_hh_l0[:hidden_size].zero_()


def build_recurrent(arm, input_size, seq_len, config):
    hidden_size = config.hidden_size
    if arm in STATE_NETWORK_ARMS:
        return StateNetworkCell(input_size, hidden_size, STATE_NETWORK_ARMS[arm], config.mlp_width,
                                forget_bias=GATED_STATE_NETWORK_FORGET_BIAS)
    if arm == "nfg":
        return NoForgetGateLSTM(input_size, hidden_size)
    if arm == "nfg_ib3":
        return NoForgetGateLSTM(input_size, hidden_size, input_gate_bias=NFG_1997_INPUT_GATE_BIAS)
    if arm == "rnn":
        return LibraryRecurrent(make_library_core("rnn", input_size, hidden_size, config.library), "rnn")
    if arm == "gru":
        return LibraryRecurrent(make_library_core("gru", input_size, hidden_size, config.library), "gru")
    lstm = make_library_core("lstm", input_size, hidden_size, config.library)
    if arm == "lstm_bf0":
        set_lstm_gate_biases(lstm, torch.zeros(hidden_size))
    elif arm == "lstm_bf1":
        set_lstm_gate_biases(lstm, torch.ones(hidden_size))
    elif arm == "lstm_chrono":
        # Tallec & Ollivier 2018: b_f ~ log U(1, T_max - 1), b_i = -b_f, with T_max the longest lag (here T).
        forget_bias = torch.log(torch.empty(hidden_size).uniform_(1.0, max(2.0, seq_len - 1.0)))
        set_lstm_gate_biases(lstm, forget_bias, -forget_bias)
    else:
        raise ValueError(f"unknown arm {arm!r}")
    return LibraryRecurrent(lstm, "lstm")


class SequenceModel(nn.Module):
    """A recurrent cell and a linear read-out of its last hidden state."""

    def __init__(self, recurrent, hidden_size, output_size):
        super().__init__()
        self.recurrent = recurrent
        self.readout = nn.Linear(hidden_size, output_size)

    def forward(self, inputs):
        return self.readout(self.recurrent(inputs))


def implementation_name(model):
    core = getattr(model.recurrent, "core", model.recurrent)
    return f"{type(core).__module__}.{type(core).__name__}"


def count_parameters(module):
    return sum(parameter.numel() for parameter in module.parameters())


# ----------------------------------------------------------------------------------------------
# Training


def data_generator(kind, task_name, seq_len, seed):
    """Independent fixed streams: every arm sees the same training data for a given (task, T, seed), and
    the same test and probe batches for a given (task, T)."""
    offsets = {"train": 0, "test": 1, "probe": 2}
    task_index = list(TASKS).index(task_name)
    return torch.Generator().manual_seed(((seed + 1) * 1_000_003 + seq_len * 101 + task_index) * 3 + offsets[kind])


def train_run(job, config):
    task = TASKS[job.task]
    torch.manual_seed(job.seed)
    model = SequenceModel(build_recurrent(job.arm, task.input_size, job.T, config), config.hidden_size, task.output_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=job.learning_rate)
    train_stream = data_generator("train", job.task, job.T, job.seed)
    test_inputs, test_targets, _ = task.make_batch(config.test_batch_size, job.T, data_generator("test", job.task, job.T, 0))
    probe_inputs, probe_targets, probe_first = task.make_batch(config.probe_batch_size, job.T,
                                                               data_generator("probe", job.task, job.T, 0))
    measure = job.phase == "main"
    threshold = solved_loss(task)
    start, cpu_start = time.perf_counter(), time.process_time()
    gradients = {"init": state_gradient_profile(model, task, probe_inputs, probe_targets)} if measure else {}

    curve, grad_norms = [], []

    def evaluate(step):
        with torch.no_grad():
            predictions = model(test_inputs)
        test_loss = task.loss(predictions, test_targets).item()
        accuracy = task.accuracy(predictions, test_targets)
        row = {"step": step, "test_loss": test_loss, "test_accuracy": "" if accuracy is None else accuracy,
               "grad_norm_median": statistics.median(grad_norms) if grad_norms else "",
               "grad_norm_max": max(grad_norms) if grad_norms else "",
               "clipped_fraction": sum(n > config.grad_clip_norm for n in grad_norms) / len(grad_norms) if grad_norms else ""}
        row.update(probe_statistics(model, probe_inputs, probe_first))
        curve.append(row)
        grad_norms.clear()
        return test_loss

    evaluate(0)
    solved_step, diverged, step = None, False, 0
    for step in range(1, config.step_budget + 1):
        inputs, targets, _ = task.make_batch(config.batch_size, job.T, train_stream)
        loss = task.loss(model(inputs), targets)
        if not math.isfinite(loss.item()):
            diverged = True
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # The total norm before clipping: how large the raw gradient is, recorded per eval interval.
        grad_norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm).item())
        optimizer.step()
        if step % config.eval_every == 0 or step == config.step_budget:
            if evaluate(step) < threshold:
                solved_step = step
                break
    if measure:
        gradients["trained"] = state_gradient_profile(model, task, probe_inputs, probe_targets)
    final = curve[-1]
    with torch.no_grad():
        # The measurements read the weights through unroll; this records that it computes what trained.
        unroll_difference = (model.recurrent(probe_inputs) - model.recurrent.unroll(probe_inputs).last_hidden).abs().max().item()
    run = {**asdict(job), "steps_budget": config.step_budget, "solved": int(solved_step is not None),
           "steps_to_solve": solved_step if solved_step is not None else "", "steps_trained": step,
           "diverged": int(diverged), "final_test_loss": final["test_loss"], "final_test_accuracy": final["test_accuracy"],
           "parameters": count_parameters(model), "implementation": implementation_name(model),
           "unroll_max_abs_difference": unroll_difference,
           "seconds": round(time.perf_counter() - start, 2), "cpu_seconds": round(time.process_time() - cpu_start, 2)}
    return run, curve, gradients


# ----------------------------------------------------------------------------------------------
# Learning-rate choice


def choose_learning_rates(sweep_runs, learning_rates):
    """Per arm, the learning rate with the most solved sweep runs, then the fewest median steps to solve,
    then the lowest mean final test loss."""
    choice = {}
    for arm in dict.fromkeys(run["arm"] for run in sweep_runs):
        def key(learning_rate):
            runs = [run for run in sweep_runs if run["arm"] == arm and float(run["learning_rate"]) == learning_rate]
            steps = [float(run["steps_to_solve"]) if int(run["solved"]) else math.inf for run in runs]
            losses = [float(run["final_test_loss"]) for run in runs]
            mean_loss = sum(losses) / len(losses) if all(map(math.isfinite, losses)) else math.inf
            return (-sum(int(run["solved"]) for run in runs), median(steps), mean_loss)
        choice[arm] = min(learning_rates, key=key)
    return choice


# ----------------------------------------------------------------------------------------------
# Output files

RUN_COLUMNS = ["phase", "task", "arm", "T", "seed", "learning_rate", "steps_budget", "solved", "steps_to_solve",
               "steps_trained", "diverged", "final_test_loss", "final_test_accuracy", "parameters", "implementation",
               "unroll_max_abs_difference", "seconds", "cpu_seconds"]
CURVE_COLUMNS = ["task", "arm", "T", "seed", "step", "test_loss", "test_accuracy", "grad_norm_median", "grad_norm_max",
                 "clipped_fraction", "keep_gate_mean", "retention_best_unit", "state_abs_mean", "state_tanh_grad_mean"]
GRADIENT_COLUMNS = ["task", "arm", "T", "seed", "stage", "lag", "state_grad_norm"]


def format_value(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_csv(path, columns, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: format_value(row[key]) for key in columns})


def write_results(results, out_dir, info):
    os.makedirs(out_dir, exist_ok=True)
    write_csv(os.path.join(out_dir, "runs.csv"), RUN_COLUMNS, [run for run, _, _ in results])
    curve_rows, gradient_rows = [], []
    for run, curve, gradients in results:
        if run["phase"] != "main":  # sweep runs: only their outcome (runs.csv) is used
            continue
        key = {name: run[name] for name in ("task", "arm", "T", "seed")}
        curve_rows += [{**key, **row} for row in curve]
        lags = gradient_lags(run["T"])
        for stage, profile in gradients.items():
            gradient_rows += [{**key, "stage": stage, "lag": lag, "state_grad_norm": profile[lag]} for lag in lags]
    write_csv(os.path.join(out_dir, "curves.csv"), CURVE_COLUMNS, curve_rows)
    write_csv(os.path.join(out_dir, "state_gradients.csv"), GRADIENT_COLUMNS, gradient_rows)
    with open(os.path.join(out_dir, "run_info.json"), "w") as handle:
        json.dump(info, handle, indent=1)
        handle.write("\n")


def git_state():
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
               if not line[3:].startswith("experiments/results/")]
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": changed}


# ----------------------------------------------------------------------------------------------
# Orchestration


def worker_init():
    torch.set_num_threads(1)


def run_job(job_and_config):
    job, config = job_and_config
    return train_run(job, config)


def job_cost(job, config):
    """Relative cost for ordering (longest first keeps both workers busy to the end of a phase)."""
    return job.T * (4 if job.arm in SLOW_ARMS else 1) * (1 if job.phase == "main" else 0.9)


def run_phase(name, jobs, config, pool, results, log, info):
    jobs = sorted(jobs, key=lambda job: -job_cost(job, config))
    log(f"phase {name}: {len(jobs)} runs")
    started = time.time()
    work = [(job, config) for job in jobs]
    outcomes = pool.imap_unordered(run_job, work) if pool is not None else map(run_job, work)
    phase_results = []
    for run, curve, gradients in outcomes:
        phase_results.append((run, curve, gradients))
        log(f"  {run['task']:14s} T={run['T']:4d} {run['arm']:12s} seed={run['seed']:3d} lr={run['learning_rate']:.0e} "
            f"{'solved at ' + str(run['steps_to_solve']) if run['solved'] else 'unsolved':16s} "
            f"loss {run['final_test_loss']:.4f}  {run['seconds']:.1f}s")
    key = lambda result: (result[0]["task"], result[0]["T"], config.arms.index(result[0]["arm"]), result[0]["seed"],
                          result[0]["learning_rate"])
    results.extend(sorted(phase_results, key=key))
    # Load average at the end of the phase: above the worker count means the run shared the CPUs.
    info.setdefault("phases", []).append({"name": name, "runs": len(jobs), "wall_seconds": round(time.time() - started, 1),
                                          "cpu_seconds": round(sum(run["cpu_seconds"] for run, _, _ in phase_results), 1),
                                          "load_average_1_5_15": [round(load, 2) for load in os.getloadavg()]})
    return phase_results


def main_runs(results, task, arm, seq_len):
    return [run for run, _, _ in results if run["phase"] == "main" and run["task"] == task and run["arm"] == arm and run["T"] == seq_len]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def run_all(config, out_dir, log):
    started = time.time()
    info = {"config": asdict(config), **git_state(), "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": cpu_model(), "cpu_count": os.cpu_count(),
            "threads_per_worker": 1, "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started)),
            "solved_loss": {name: solved_loss(task) for name, task in TASKS.items()}}
    results = []

    def checkpoint(finished=False):
        info["finished"] = finished
        info["wall_seconds"] = round(time.time() - started, 1)
        write_results(results, out_dir, info)

    context = multiprocessing.get_context("spawn")
    pool = context.Pool(config.workers, initializer=worker_init) if config.workers > 1 else None
    try:
        sweep = [Job("sweep", "adding", arm, config.sweep_length, seed, lr)
                 for arm in config.arms for lr in config.learning_rates for seed in config.sweep_seeds]
        sweep_results = run_phase("learning-rate sweep", sweep, config, pool, results, log, info)
        learning_rates = choose_learning_rates([run for run, _, _ in sweep_results], config.learning_rates)
        info["learning_rates"] = learning_rates
        log(f"learning rates: {learning_rates}")
        checkpoint()

        active = list(config.arms)
        for seq_len in config.lengths:
            jobs = [Job("main", "adding", arm, seq_len, seed, learning_rates[arm]) for arm in active for seed in config.seeds]
            run_phase(f"adding T={seq_len}", jobs, config, pool, results, log, info)
            checkpoint()
            if config.skip_after_unsolved:
                active = [arm for arm in active if any(run["solved"] for run in main_runs(results, "adding", arm, seq_len))]
        long_arms = [arm for arm in active if median([run["steps_to_solve"] if run["solved"] else math.inf
                                                      for run in main_runs(results, "adding", arm, config.lengths[-1])])
                     <= config.long_max_median_steps]
        jobs = [Job("main", "adding", arm, config.long_length, seed, learning_rates[arm]) for arm in long_arms for seed in config.seeds]
        run_phase(f"adding T={config.long_length}", jobs, config, pool, results, log, info)
        checkpoint()
        jobs = [Job("main", "temporal_order", arm, config.order_length, seed, learning_rates[arm])
                for arm in config.order_arms if arm in config.arms for seed in config.seeds]
        run_phase(f"temporal order T={config.order_length}", jobs, config, pool, results, log, info)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    info["finished_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    checkpoint(finished=True)
    return results


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run of the whole pipeline (seconds)")
    parser.add_argument("--out", help="output folder (default: experiments/results/, or a temporary folder with --quick)")
    parser.add_argument("--doc", help="where to write the rendered write-up (default: docs/why_lstm.md for a full run "
                                      "into the default folder, OUT/why_lstm.md otherwise)")
    parser.add_argument("--library", choices=["fused", "torch"], default="fused",
                        help="fused_lstm.LSTM/GRU (default) or torch.nn.LSTM/GRU for the LSTM and GRU arms")
    parser.add_argument("--workers", type=int, default=1, help="worker processes, one thread each (default 1)")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), help="subset of the arms")
    parser.add_argument("--no-report", action="store_true", help="write the CSV files only")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    config = quick_config() if args.quick else Config()
    if args.out is None:  # a quick run must never overwrite the committed results
        args.out = os.path.join(tempfile.gettempdir(), "why_lstm_quick") if args.quick else DEFAULT_OUT
    config.library, config.workers = args.library, args.workers
    if args.arms:
        config.arms = [arm for arm in ARMS if arm in args.arms]
    if config.library == "fused":
        import_fused_lstm()  # fail at once, not after the sweep, when the extension is not built
    log = lambda message: print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
    log(f"why_lstm: {asdict(config)}")
    start = time.perf_counter()
    run_all(config, args.out, log)
    log(f"why_lstm: runs done in {time.perf_counter() - start:.1f}s, results in {args.out}")
    if not args.no_report:
        from experiments import report

        doc = args.doc or (report.DOC_PATH if os.path.abspath(args.out) == DEFAULT_OUT else os.path.join(args.out, "why_lstm.md"))
        report.main(["--results", args.out, "--doc", doc] + ([] if os.path.abspath(args.out) == DEFAULT_OUT else ["--lenient"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
