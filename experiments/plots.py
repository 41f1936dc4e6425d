"""The plots of experiments/report.py (one line per seed everywhere), from its Results."""

import math
import os

from experiments.why_lstm import ARMS

ARM_COLORS = {"rnn": "tab:red", "generic": "tab:orange", "additive": "tab:brown", "gated": "tab:olive",
              "nfg": "tab:purple", "nfg_ib3": "tab:pink", "lstm_bf0": "tab:cyan", "lstm_bf1": "tab:blue",
              "lstm_chrono": "navy", "gru": "tab:green"}
TASK_TITLES = {"adding": "adding problem", "temporal_order": "temporal order"}


def steps_or_inf(run):
    return float(run["steps_to_solve"]) if int(run["solved"]) else math.inf


def plot_learning_curves(results, task, path):
    import matplotlib.pyplot as plt

    arms, lengths = results.arms(task), results.lengths(task)
    figure, axes = plt.subplots(len(arms), len(lengths), figsize=(3.1 * len(lengths) + 0.6, 1.55 * len(arms) + 0.8),
                                sharex="col", sharey=True, squeeze=False)
    baseline, threshold = results.info["solved_loss"][task] / 0.06, results.info["solved_loss"][task]
    for row, arm in enumerate(arms):
        for column, seq_len in enumerate(lengths):
            axis = axes[row][column]
            for seed_run in results.main.get((task, arm, seq_len), []):
                rows = results.curves[(task, arm, seq_len, int(seed_run["seed"]))]
                axis.plot([int(r["step"]) for r in rows], [float(r["test_loss"]) for r in rows],
                          color=ARM_COLORS[arm], alpha=0.6, linewidth=0.9)
            if (task, arm, seq_len) not in results.main:
                axis.text(0.5, 0.5, "not run", transform=axis.transAxes, ha="center", va="center", color="gray")
            axis.axhline(baseline, color="black", linestyle="--", linewidth=0.7)
            axis.axhline(threshold, color="gray", linestyle=":", linewidth=0.7)
            axis.set_yscale("log")
            axis.grid(True, alpha=0.25)
            if row == 0:
                axis.set_title(f"T = {seq_len}", fontsize=9)
            if column == 0:
                axis.set_ylabel(ARMS[arm].label, fontsize=7)
            axis.tick_params(labelsize=7)
        axes[-1][0].set_xlabel("training step", fontsize=8)
    figure.suptitle(f"{TASK_TITLES[task]}: test loss, one line per seed (dashed: predict the prior; dotted: solved)",
                    fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_state_gradients(results, task, seq_len, path):
    import matplotlib.pyplot as plt

    arms = [arm for arm in results.arms(task) if (task, arm, seq_len) in results.main]
    columns = min(5, len(arms))
    rows_count = math.ceil(len(arms) / columns)
    figure, axes = plt.subplots(rows_count, columns, figsize=(2.9 * columns, 2.4 * rows_count + 0.6), sharey=True, squeeze=False)
    for index, arm in enumerate(arms):
        axis = axes[index // columns][index % columns]
        for run in results.main[(task, arm, seq_len)]:
            for stage, color in (("init", "gray"), ("trained", ARM_COLORS[arm])):
                profile = results.gradients.get((task, arm, seq_len, int(run["seed"]), stage))
                if not profile:
                    continue
                lags = sorted(profile)
                values = [profile[lag] if profile[lag] > 0 else float("nan") for lag in lags]
                style = "-" if stage == "init" or int(run["solved"]) else "--"
                axis.plot(lags, values, style, color=color, alpha=0.6, linewidth=0.9)
        axis.set_yscale("log")
        axis.set_title(ARMS[arm].label, fontsize=8)
        axis.grid(True, alpha=0.25)
        axis.tick_params(labelsize=7)
    for index in range(len(arms), rows_count * columns):
        axes[index // columns][index % columns].axis("off")
    for axis in axes[-1]:
        axis.set_xlabel("lag k (steps before the end)", fontsize=8)
    figure.suptitle(f"{TASK_TITLES[task]}, T = {seq_len}: per-sample ||dL/ds_(T-k)|| (float64), one line per seed; "
                    "gray: at initialisation; colour: after training (dashed: unsolved runs)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_training_signals(results, task, seq_len, path):
    """Keep gate, best-unit retention and the pre-clip gradient norm against the training step."""
    import matplotlib.pyplot as plt

    arms = [arm for arm in results.arms(task) if (task, arm, seq_len) in results.main]
    panels = [("keep_gate_mean", "mean keep gate (f, or z)"), ("retention_best_unit", "best-unit retention"),
              ("grad_norm_median", "pre-clip gradient norm (median per 50 steps)"), ("state_abs_mean", "mean |s_T|")]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for axis, (column, title) in zip(axes[0], panels):
        for arm in arms:
            for index, run in enumerate(results.main[(task, arm, seq_len)]):
                rows = [row for row in results.curves[(task, arm, seq_len, int(run["seed"]))] if row[column] != ""]
                if rows:
                    axis.plot([int(r["step"]) for r in rows], [float(r[column]) for r in rows], color=ARM_COLORS[arm],
                              alpha=0.5, linewidth=0.8, label=ARMS[arm].label if index == 0 else None)
        if column in ("grad_norm_median", "state_abs_mean"):
            axis.set_yscale("log")
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("training step", fontsize=8)
        axis.grid(True, alpha=0.25)
        axis.tick_params(labelsize=7)
    handles, labels = [], []
    for axis in axes[0]:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    figure.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=7, frameon=False)
    figure.suptitle(f"{TASK_TITLES[task]}, T = {seq_len}: measured during training, one line per seed", fontsize=9)
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_initial_gradient_against_steps(results, task, seq_len, path):
    """Per run: the state gradient at lag T/2 relative to lag 0 at initialisation, against the steps to solve."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    budget = results.budget
    for arm in results.arms(task):
        runs = results.main.get((task, arm, seq_len), [])
        points = []
        for run in runs:
            profile = results.gradients[(task, arm, seq_len, int(run["seed"]), "init")]
            if profile[0] > 0:
                points.append((profile[seq_len // 2] / profile[0], steps_or_inf(run)))
        if not points:
            continue
        solved = [(x, y) for x, y in points if math.isfinite(y)]
        unsolved = [(x, budget * 1.15) for x, y in points if not math.isfinite(y)]
        if solved:
            axis.scatter(*zip(*solved), color=ARM_COLORS[arm], s=16, alpha=0.8, label=ARMS[arm].label)
        if unsolved:
            axis.scatter(*zip(*unsolved), color=ARM_COLORS[arm], s=22, marker="x", alpha=0.8,
                         label=None if solved else ARMS[arm].label)
    axis.axhline(budget, color="gray", linestyle=":", linewidth=0.8)
    axis.text(0.01, budget * 1.06, "x: not solved within the budget", fontsize=7, color="gray", transform=axis.get_yaxis_transform())
    axis.set_xscale("log")
    axis.set_xlabel(f"at initialisation: ||dL/ds|| at lag {seq_len // 2} / at lag 0 (one point per seed)", fontsize=8)
    axis.set_ylabel("training steps to solve", fontsize=8)
    axis.set_title(f"{TASK_TITLES[task]}, T = {seq_len}", fontsize=9)
    axis.grid(True, alpha=0.25)
    axis.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write_plots(results, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    for task in ("adding", "temporal_order"):
        if results.lengths(task):
            plot_learning_curves(results, task, os.path.join(out_dir, f"learning_curves_{task}.png"))
    lengths = results.lengths("adding")
    if lengths:
        # T = 100 where it was run (the middle length), else the shortest.
        seq_len = 100 if 100 in lengths else lengths[0]
        plot_state_gradients(results, "adding", lengths[0], os.path.join(out_dir, "state_gradients_adding_short.png"))
        plot_state_gradients(results, "adding", seq_len, os.path.join(out_dir, "state_gradients_adding.png"))
        plot_training_signals(results, "adding", seq_len, os.path.join(out_dir, "training_signals_adding.png"))
        plot_initial_gradient_against_steps(results, "adding", seq_len, os.path.join(out_dir, "initial_gradient_vs_steps_adding.png"))
