"""The one script from the result files of experiments/why_lstm.py to the plots and docs/why_lstm.md.

docs/why_lstm.md is rendered from experiments/why_lstm_template.md: every number in it is a
``{{function:arguments}}`` field computed here from runs.csv, curves.csv, state_gradients.csv and
run_info.json, so the doc cannot disagree with the committed data (tests/test_experiments.py renders
it again and compares).

    python -m experiments.report            # plots and docs/why_lstm.md from experiments/results/
    python -m experiments.report --check    # exit 1 if docs/why_lstm.md differs from a fresh rendering
"""

import argparse
import csv
import json
import math
import os
import re
import sys
from collections import defaultdict

from experiments.stats import bootstrap_median_interval, fisher_exact_two_sided, median, wilson_interval
from experiments.plots import steps_or_inf, write_plots
from experiments.why_lstm import ARMS, DEFAULT_OUT, REPO_ROOT

DOC_PATH = os.path.join(REPO_ROOT, "docs", "why_lstm.md")
TEMPLATE_PATH = os.path.join(REPO_ROOT, "experiments", "why_lstm_template.md")


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def number(text):
    return float(text) if text not in ("", None) else None


class Results:
    """The result files, indexed by (task, arm, T)."""

    def __init__(self, results_dir):
        self.runs = read_csv(os.path.join(results_dir, "runs.csv"))
        with open(os.path.join(results_dir, "run_info.json")) as handle:
            self.info = json.load(handle)
        self.main = defaultdict(list)
        for run in self.runs:
            if run["phase"] == "main":
                self.main[(run["task"], run["arm"], int(run["T"]))].append(run)
        self.sweep = [run for run in self.runs if run["phase"] == "sweep"]
        self.curves = defaultdict(list)  # (task, arm, T, seed) -> rows in step order
        for row in read_csv(os.path.join(results_dir, "curves.csv")):
            self.curves[(row["task"], row["arm"], int(row["T"]), int(row["seed"]))].append(row)
        self.gradients = defaultdict(dict)  # (task, arm, T, seed, stage) -> {lag: norm}
        for row in read_csv(os.path.join(results_dir, "state_gradients.csv")):
            key = (row["task"], row["arm"], int(row["T"]), int(row["seed"]), row["stage"])
            self.gradients[key][int(row["lag"])] = float(row["state_grad_norm"])
        self.budget = int(self.runs[0]["steps_budget"]) if self.runs else 0

    def lengths(self, task):
        return sorted({T for (group_task, _, T) in self.main if group_task == task})

    def arms(self, task):
        present = {arm for (group_task, arm, _) in self.main if group_task == task}
        return [arm for arm in ARMS if arm in present]

    def group(self, task, arm, seq_len):
        runs = self.main.get((task, arm, int(seq_len)))
        if not runs:
            raise KeyError(f"no runs for {task} {arm} T={seq_len}")
        return runs


# ----------------------------------------------------------------------------------------------
# Per-group statistics




def solved_summary(runs):
    solved = sum(int(run["solved"]) for run in runs)
    low, high = wilson_interval(solved, len(runs))
    steps = [steps_or_inf(run) for run in runs]
    steps_low, steps_high = bootstrap_median_interval(steps)
    return {"solved": solved, "runs": len(runs), "rate_low": low, "rate_high": high, "median_steps": median(steps),
            "steps_low": steps_low, "steps_high": steps_high}


def decay_per_step(profile, lag):
    """Geometric mean factor per step of the state gradient from lag 0 to ``lag``."""
    if profile[0] <= 0 or profile[lag] <= 0:
        return 0.0
    return (profile[lag] / profile[0]) ** (1.0 / lag)


def median_of(values):
    values = [value for value in values if value is not None]
    return median(values) if values else None


# ----------------------------------------------------------------------------------------------
# Formatting


def format_rate(low, high):
    return f"{100 * low:.0f}–{100 * high:.0f}%"


def format_steps(value, budget):
    return f">{budget}" if math.isinf(value) else f"{value:.0f}"


def format_number(value, digits=2):
    """Two significant digits; scientific notation below 0.01 and from 1000 up."""
    if value is None:
        return "–"
    if value == 0:
        return "0"
    if abs(value) < 0.01 or abs(value) >= 1000:
        mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.{max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))}f}"


def format_learning_rate(value):
    mantissa, exponent = f"{float(value):.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The fields of the template


class Fields:
    """``{{name:arg:arg}}`` in the template calls ``field_name(arg, arg)``; every one returns text."""

    def __init__(self, results):
        self.results = results

    # --- run facts
    def field_info(self, key):
        info = self.results.info
        if key == "commit":
            return info["commit"][:10]
        if key == "wall_minutes":
            return f"{info['wall_seconds'] / 60:.0f}"
        if key == "uncommitted":
            return "none" if not info["uncommitted_changes"] else ", ".join(info["uncommitted_changes"])
        if key in info["config"]:
            value = info["config"][key]
            return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        return str(info[key])

    def field_runs(self, phase):
        return str(sum(run["phase"] == phase for run in self.results.runs))

    def field_lr(self, arm):
        return format_learning_rate(self.results.info["learning_rates"][arm])

    def field_params(self, task, arm):
        runs = [run for run in self.results.runs if run["task"] == task and run["arm"] == arm]
        return f"{int(runs[0]['parameters']):,}"

    def field_cpu_minutes(self):
        """CPU time of all runs together: the run's length on two otherwise idle cores is about half of it."""
        return f"{sum(float(run['cpu_seconds']) for run in self.results.runs) / 60:.0f}"

    def field_idle_minutes(self):
        return f"{sum(float(run['cpu_seconds']) for run in self.results.runs) / 60 / self.results.info['config']['workers']:.0f}"

    def field_max_load(self):
        return f"{max(phase['load_average_1_5_15'][0] for phase in self.results.info['phases']):.1f}"

    def field_sweep_solved(self, arm):
        runs = [run for run in self.results.sweep if run["arm"] == arm]
        return f"{sum(int(run['solved']) for run in runs)}/{len(runs)}"

    def field_unroll_difference(self):
        return format_number(max(float(run["unroll_max_abs_difference"]) for run in self.results.runs))

    # --- outcomes
    def summary(self, task, arm, seq_len):
        return solved_summary(self.results.group(task, arm, seq_len))

    def field_solved(self, task, arm, seq_len):
        summary = self.summary(task, arm, seq_len)
        return f"{summary['solved']}/{summary['runs']}"

    def field_rate_ci(self, task, arm, seq_len):
        summary = self.summary(task, arm, seq_len)
        return format_rate(summary["rate_low"], summary["rate_high"])

    def field_median_steps(self, task, arm, seq_len):
        return format_steps(self.summary(task, arm, seq_len)["median_steps"], self.results.budget)

    def field_steps_ci(self, task, arm, seq_len):
        summary = self.summary(task, arm, seq_len)
        return f"{format_steps(summary['steps_low'], self.results.budget)}–{format_steps(summary['steps_high'], self.results.budget)}"

    def field_fisher(self, task, arm, other_arm, seq_len):
        """Two-sided Fisher exact p for the solved counts of two arms at one length."""
        a, b = self.summary(task, arm, seq_len), self.summary(task, other_arm, seq_len)
        return f"{fisher_exact_two_sided(a['solved'], a['runs'], b['solved'], b['runs']):.2g}"

    def field_trained_solved_range(self, task):
        """Range over every solved run (all arms and lengths) of ||dL/ds|| at lag T/2 over lag 0 after training."""
        values = []
        for (group_task, arm, seq_len) in self.results.main:
            if group_task == task:
                values += [profile[seq_len // 2] / profile[0] for profile in self.profiles(task, arm, seq_len, "trained", "solved")]
        return f"{format_number(min(values))}–{format_number(max(values))}"

    def field_arm_range(self, task, seq_len, column, position, *arms):
        """Range over the given arms of the per-arm medians of a curves.csv column."""
        values = [median_of(self.curve_values(task, arm, seq_len, column, position)) for arm in arms]
        return f"{format_number(min(values))}–{format_number(max(values))}"

    def field_accuracy(self, task, arm, seq_len):
        """Median final test accuracy over seeds (temporal order)."""
        return f"{100 * median([float(run['final_test_accuracy']) for run in self.results.group(task, arm, seq_len)]):.0f}%"

    # --- mechanism
    def profiles(self, task, arm, seq_len, stage, which="all"):
        runs = self.results.group(task, arm, seq_len)
        if which != "all":
            runs = [run for run in runs if int(run["solved"]) == (which == "solved")]
        return [self.results.gradients[(task, arm, int(seq_len), int(run["seed"]), stage)] for run in runs]

    def field_decay(self, task, arm, seq_len, stage, which="all"):
        """Median over seeds of the per-step factor of ||dL/ds|| from lag 0 to lag T/2."""
        lag = int(seq_len) // 2
        values = [decay_per_step(profile, lag) for profile in self.profiles(task, arm, seq_len, stage, which)]
        return format_number(median_of(values)) if values else "–"

    def field_grad_ratio(self, task, arm, seq_len, stage, lag, which="all"):
        """Median over seeds of ||dL/ds_{T-lag}|| / ||dL/ds_T||."""
        lag = int(seq_len) - 1 if lag == "last" else int(seq_len) // 2 if lag == "half" else int(lag)
        values = [profile[lag] / profile[0] for profile in self.profiles(task, arm, seq_len, stage, which) if profile[0] > 0]
        return format_number(median_of(values)) if values else "–"

    def field_orders(self, task, arm, other_arm, seq_len, stage, lag):
        """The ratio of two arms' grad_ratio medians as a power of ten, e.g. 10⁷."""
        ratios = []
        for name in (arm, other_arm):
            lag_index = int(seq_len) // 2 if lag == "half" else int(lag)
            ratios.append(median_of([profile[lag_index] / profile[0] for profile in self.profiles(task, name, seq_len, stage)
                                     if profile[0] > 0]))
        exponent = round(math.log10(ratios[0] / ratios[1]))
        return "10" + str(exponent).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))

    def curve_values(self, task, arm, seq_len, column, position):
        values = []
        for run in self.results.group(task, arm, seq_len):
            rows = self.results.curves[(task, arm, int(seq_len), int(run["seed"]))]
            if position == "max":  # the largest value over the run
                values.append(max(number(row[column]) for row in rows[1:]))
                continue
            row = rows[0] if position == "init" else rows[1] if position == "first" else rows[-1]
            values.append(number(row[column]))
        return values

    def field_curve(self, task, arm, seq_len, column, position):
        """Median over seeds of a curves.csv column at step 0 (init), the first eval (first), the end, or its
        largest value over the run (max)."""
        return format_number(median_of(self.curve_values(task, arm, seq_len, column, position)))

    def field_curve_range(self, task, arm, seq_len, column, position):
        values = [value for value in self.curve_values(task, arm, seq_len, column, position) if value is not None]
        return f"{format_number(min(values))}–{format_number(max(values))}" if values else "–"

    def field_clipped(self, task, arm, seq_len):
        """Fraction of all training steps whose pre-clip gradient norm exceeded the clip threshold."""
        clipped = total = 0.0
        for run in self.results.group(task, arm, seq_len):
            rows = self.results.curves[(task, arm, int(seq_len), int(run["seed"]))]
            for previous, row in zip(rows, rows[1:]):
                steps = int(row["step"]) - int(previous["step"])
                clipped += steps * float(row["clipped_fraction"])
                total += steps
        return f"{100 * clipped / total:.0f}%"

    # --- tables
    def field_table(self, name, *args):
        return getattr(self, f"table_{name}")(*args)

    def table_setup(self):
        rows = [[ARMS[arm].label, f"`{ARMS[arm].update}`", self.field_params("adding", arm), self.field_lr(arm)]
                for arm in self.results.arms("adding")]
        return markdown_table(["arm", "state update", "parameters (adding)", "learning rate"], rows)

    def table_sweep(self):
        learning_rates = sorted({float(run["learning_rate"]) for run in self.results.sweep})
        rows = []
        for arm in [arm for arm in ARMS if any(run["arm"] == arm for run in self.results.sweep)]:
            row = [ARMS[arm].label]
            for learning_rate in learning_rates:
                runs = [run for run in self.results.sweep if run["arm"] == arm and float(run["learning_rate"]) == learning_rate]
                solved = sum(int(run["solved"]) for run in runs)
                steps = median([steps_or_inf(run) for run in runs])
                loss = median([float(run["final_test_loss"]) for run in runs])
                text = f"{solved}/{len(runs)}, " + (f"median {format_steps(steps, self.results.budget)} steps" if solved
                                                    else f"loss {format_number(loss)}")
                chosen = float(self.results.info["learning_rates"][arm]) == learning_rate
                row.append(f"**{text}**" if chosen else text)
            rows.append(row)
        return markdown_table(["arm"] + [f"lr {format_learning_rate(lr)}" for lr in learning_rates], rows)

    def outcome_table(self, task, cell):
        lengths = self.results.lengths(task)
        rows = []
        for arm in self.results.arms(task):
            rows.append([ARMS[arm].label] + [cell(task, arm, T) if (task, arm, T) in self.results.main else "not run"
                                             for T in lengths])
        return markdown_table(["arm"] + [f"T = {T}" for T in lengths], rows)

    def table_solved(self, task):
        return self.outcome_table(task, lambda *key: f"{self.field_solved(*key)} ({self.field_rate_ci(*key)})")

    def table_steps(self, task):
        return self.outcome_table(task, lambda *key: f"{self.field_median_steps(*key)} ({self.field_steps_ci(*key)})")

    def table_order(self, task="temporal_order"):
        rows = []
        for arm in self.results.arms(task):
            for T in self.results.lengths(task):
                key = (task, arm, T)
                rows.append([ARMS[arm].label, T, f"{self.field_solved(*key)} ({self.field_rate_ci(*key)})",
                             f"{self.field_median_steps(*key)} ({self.field_steps_ci(*key)})", self.field_accuracy(*key)])
        return markdown_table(["arm", "T", "solved (95% CI)", "median steps (95% CI)", "median final accuracy"], rows)

    def table_gradients(self, task, seq_len):
        rows = []
        for arm in self.results.arms(task):
            if (task, arm, int(seq_len)) not in self.results.main:
                continue
            key = (task, arm, seq_len)
            rows.append([ARMS[arm].label, self.field_decay(*key, "init"), self.field_grad_ratio(*key, "init", "half"),
                         self.field_grad_ratio(*key, "trained", "half", "solved"),
                         self.field_grad_ratio(*key, "trained", "half", "unsolved"),
                         f"{self.field_solved(*key)}, {self.field_median_steps(*key)}"])
        half = int(seq_len) // 2
        return markdown_table(["arm", f"factor per step at init (lags 0–{half})", f"init, lag {half} / lag 0",
                               f"trained, solved runs, lag {half} / lag 0", f"trained, unsolved runs, lag {half} / lag 0",
                               "solved, median steps"], rows)

    def table_gates(self, task, seq_len):
        rows = []
        for arm in self.results.arms(task):
            if (task, arm, int(seq_len)) not in self.results.main:
                continue
            key = (task, arm, seq_len)
            if self.curve_values(*key, "keep_gate_mean", "init")[0] is None:
                continue
            rows.append([ARMS[arm].label, self.field_curve(*key, "keep_gate_mean", "init"),
                         self.field_curve(*key, "keep_gate_mean", "end"),
                         self.field_curve(*key, "retention_best_unit", "init"),
                         self.field_curve(*key, "retention_best_unit", "end")])
        return markdown_table(["arm", "mean keep gate, init", "end", "best-unit retention, init", "end"], rows)

    def table_training_signals(self, task, seq_len):
        rows = []
        for arm in self.results.arms(task):
            if (task, arm, int(seq_len)) not in self.results.main:
                continue
            key = (task, arm, seq_len)
            rows.append([ARMS[arm].label, self.field_curve(*key, "grad_norm_median", "first"),
                         self.field_curve(*key, "grad_norm_max", "max"), self.field_clipped(*key),
                         self.field_curve(*key, "state_abs_mean", "init"), self.field_curve(*key, "state_abs_mean", "end"),
                         self.field_curve(*key, "state_tanh_grad_mean", "end")])
        return markdown_table(["arm", "pre-clip gradient norm, median of steps 1–50", "largest in the run", "steps clipped",
                               "mean abs(s_T), init", "end", "mean tanh'(s_t), end"], rows)


FIELD = re.compile(r"\{\{([a-z_]+)((?::[^:{}]*)*)\}\}")


def render(template, results, lenient=False):
    fields = Fields(results)

    def substitute(match):
        name, arguments = match.group(1), [argument for argument in match.group(2).split(":")[1:]]
        try:
            return getattr(fields, f"field_{name}")(*arguments)
        except (KeyError, IndexError, ValueError, ZeroDivisionError) as error:
            if lenient:  # the --quick run has none of the full run's lengths
                return "n/a"
            raise ValueError(f"cannot render {match.group(0)}: {error!r}") from error

    return FIELD.sub(substitute, template)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=DEFAULT_OUT)
    parser.add_argument("--doc", default=DOC_PATH)
    parser.add_argument("--template", default=TEMPLATE_PATH)
    parser.add_argument("--lenient", action="store_true", help="write n/a for fields the results cannot fill")
    parser.add_argument("--check", action="store_true", help="only compare --doc with a fresh rendering")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    results = Results(args.results)
    with open(args.template) as handle:
        text = render(handle.read(), results, lenient=args.lenient)
    if args.check:
        with open(args.doc) as handle:
            same = handle.read() == text
        print(f"{args.doc}: {'matches' if same else 'DIFFERS from'} the rendering of {args.results}")
        return 0 if same else 1
    if not args.no_plots:
        write_plots(results, args.results)
    with open(args.doc, "w") as handle:
        handle.write(text)
    print(f"report: {args.doc} and the plots in {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
