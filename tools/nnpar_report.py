#!/usr/bin/env python3
"""Figures, a Markdown and a self-contained HTML report from a folder of nnpar results.

    nnpar_report.py RESULTS_DIR -o REPORT_DIR [--overwrite] [--predictions FILE]

Run by `nnpar report` (docs/reports.md). Reads every results JSON under RESULTS_DIR (written
by nnpar train, compare or sweep), sweep.json indexes and Chrome traces (--trace), and writes
REPORT_DIR/report.md, report.html (figures embedded), manifest.json (every figure, its files
and the series it draws, and every figure left out with the reason) and figures/*.png|svg.
A figure whose data is missing is left out with a note, never an error. --predictions (what
`nnpar report --profile` passes: `nnpar plan --compare-results --json` of the same folder) adds a
section of predicted beside measured samples/s, a table and a figure. Exit status 0, or 2 with
a message naming the problem.

Debian packages: python3, python3-matplotlib, python3-numpy.
"""

import argparse
import base64
import datetime
import html
import json
import math
import os
import re
import shutil
import sys
import tempfile
import textwrap
import traceback
from collections import defaultdict


def fail(message):
    print(f"nnpar report: {message}", file=sys.stderr)
    sys.exit(2)


try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np
except ImportError as error:
    fail(f"needs matplotlib and numpy ({error}); on Debian: apt-get install python3-matplotlib python3-numpy")

# Deterministic SVG: the same data gives the same file; text stays text.
plt.rcParams.update({"svg.hashsalt": "nnpar", "svg.fonttype": "none", "figure.dpi": 110,
                     "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})

PHASE_GROUPS = [  # stacked breakdown: (series name, phases summed, colour)
    ("compute", ("forward", "backward", "update"), "#4878d0"),
    ("communication", ("communication",), "#ee854a"),
    ("idle", ("idle",), "#c44e52"),
    ("data", ("data",), "#8c8c8c"),
]
PIPELINE_PLUGINS = ("mpi-pipeline", "nccl-pipeline", "mpi-hybrid", "nccl-hybrid")


def slug(text):
    """A series or file id: letters, digits, '-' and '_' only ('.' separates an id's parts)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(text)).strip("_") or "x"


# ---------------------------------------------------------------------------------------------
# Loading


class Run:
    """One results JSON, with what the figures group and compare by."""

    def __init__(self, path, data, sweep_row=None):
        self.path = path
        self.data = data
        strategy = data["strategy"]
        config = data.get("config", {})
        self.label = strategy["label"]
        self.plugin = strategy["name"]
        self.ranks = int(strategy.get("ranks", 1))
        self.options = strategy.get("options", {})
        self.machine = data.get("machine", {})
        self.device = self.machine.get("device", "")
        self.date = data.get("date", "")
        self.commit = data.get("git_commit", "")
        self.config_file = data.get("config_file", "")
        train = config.get("train", {})
        # 0 for what an older or hand-made file leaves out, so that runs still sort and group.
        self.batch = int(train.get("batch_size") or 0)
        self.epochs_configured = int(train.get("epochs") or 0)
        self.layers = tuple(config.get("model", {}).get("layers", []))
        hidden = self.layers[1:-1]
        self.width = max(hidden) if hidden else None
        self.limit = int(config.get("data", {}).get("limit") or 0)
        self.epochs = data.get("epochs", [])
        totals = data.get("totals", {})
        self.train_seconds = totals.get("train_seconds")
        self.samples_per_second = totals.get("samples_per_second")
        self.phases = totals.get("phases", {})
        self.rank_phases = totals.get("rank_phases", [])
        self.test_accuracy = data.get("final", {}).get("test_accuracy")
        self.parity = data.get("parity")
        self.workers, self.workers_are = self._workers(sweep_row)

    def _workers(self, row):
        if row is not None and row.get("workers"):
            return int(row["workers"]), row.get("workers_are", "")
        if self.ranks > 1:
            return self.ranks, "ranks"
        threads = self.options.get("threads")
        if isinstance(threads, int) and threads > 0:
            return threads, "threads"
        found = re.search(r"(\d+) threads?", self.device)
        if threads is not None and found:
            return int(found.group(1)), "threads"
        return 1, "single"

    @property
    def point(self):
        """Runs at one point share everything that changes the time per sample but the workers."""
        return (self.batch, self.layers, self.epochs_configured, self.limit)

    @property
    def name(self):
        return f"{self.label} (w={self.workers})"

    @property
    def series_id(self):
        return f"{slug(self.label)}_w{self.workers}"

    @property
    def verdict(self):
        return (self.parity or {}).get("verdict", "")

    def phase_seconds(self, phases):
        return {group: sum(float(phases.get(p) or 0) for p in members) for group, members, _ in PHASE_GROUPS}


def layers_text(layers):
    """784-256-256-26, or 784-1024x8-26 when a width repeats more than twice."""
    parts, i = [], 0
    while i < len(layers):
        j = i
        while j < len(layers) and layers[j] == layers[i]:
            j += 1
        parts += [f"{layers[i]}x{j - i}"] if j - i > 2 else [str(n) for n in layers[i:j]]
        i = j
    return "-".join(parts) or "?"


def point_text(point):
    batch, layers, epochs, limit = point
    text = f"batch {batch or '?'}, layers {layers_text(layers)}"
    if epochs:
        text += f", {epochs} epochs"
    return text


def hidden_slug(layers):
    """32x32 for two hidden layers of 32; 1024-d8 for eight of 1024 (file names stay short)."""
    hidden = list(layers[1:-1])
    if len(hidden) > 3 and len(set(hidden)) == 1:
        return f"{hidden[0]}-d{len(hidden)}"
    return "x".join(str(n) for n in hidden) or "none"


def point_slug(point):
    batch, layers, _, _ = point
    return f"b{batch}-h{hidden_slug(layers)}"


def load(results_dir, exclude):
    runs, traces, sweeps, notes = [], [], [], []
    exclude = os.path.realpath(exclude)
    for root, dirs, files in os.walk(results_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and ".tmp-" not in d
                         and os.path.realpath(os.path.join(root, d)) != exclude)
        for name in sorted(files):
            if not name.endswith(".json"):
                continue
            path = os.path.join(root, name)
            try:
                with open(path) as f:
                    data = json.load(f)
            except (OSError, ValueError) as error:
                notes.append(f"skipped `{os.path.relpath(path, results_dir)}`: not readable JSON ({error})")
                continue
            if isinstance(data, dict) and "traceEvents" in data:
                traces.append((path, data))
            elif isinstance(data, dict) and "runs" in data and "grid" in data:
                sweeps.append((path, data))
            elif isinstance(data, dict) and "strategy" in data and "epochs" in data and "totals" in data:
                runs.append((path, data))
            elif name != "manifest.json":
                notes.append(f"skipped `{os.path.relpath(path, results_dir)}`: not an nnpar results file")
    # A sweep says how many workers each of its runs had, and which runs did not complete.
    sweep_rows, incomplete = {}, []
    for path, sweep in sweeps:
        base = os.path.dirname(path)
        for row in sweep.get("runs", []):
            if row.get("results_file"):
                sweep_rows[os.path.realpath(os.path.join(base, row["results_file"]))] = row
            if row.get("status") in ("failed", "skipped"):
                incomplete.append(row)
    loaded = []
    for path, data in runs:
        try:
            loaded.append(Run(path, data, sweep_rows.get(os.path.realpath(path))))
        except (KeyError, TypeError, ValueError) as error:
            notes.append(f"skipped `{os.path.relpath(path, results_dir)}`: missing field {error}")
    return loaded, traces, incomplete, notes


def newest_per_key(runs, notes):
    """One run per (point, label, workers): the newest; repeats are noted."""
    chosen = {}
    for run in sorted(runs, key=lambda r: (r.date, r.path)):
        key = (run.point, run.label, run.workers)
        if key in chosen:
            notes.append(f"`{run.name}` at {point_text(run.point)} ran more than once; the newest "
                         f"(`{os.path.basename(run.path)}`) is used")
        chosen[key] = run
    return list(chosen.values())


def reference_of(runs):
    refs = [r for r in runs if r.verdict == "reference"]
    if not refs:
        refs = [r for r in runs if r.plugin == "serial"]
    return max(refs, key=lambda r: (r.date, r.path)) if refs else None


# ---------------------------------------------------------------------------------------------
# Figures


class Skip(Exception):
    pass


def provenance(runs):
    machines = sorted({f"{r.machine.get('host', '?')} ({r.machine.get('cpu', '?')}, "
                       f"{r.machine.get('cores', '?')} cores)" for r in runs})
    dates = sorted({r.date[:16].replace("T", " ") for r in runs if r.date})
    configs = sorted({os.path.basename(r.config_file) for r in runs if r.config_file})
    commits = sorted({r.commit for r in runs if r.commit})
    when = dates[0] if len(dates) == 1 else f"{dates[0]} .. {dates[-1]}" if dates else "?"
    return (f"machine: {'; '.join(machines)}   date: {when} UTC   config: {', '.join(configs) or '?'}"
            f"   nnpar {', '.join(commits) or '?'}")


class Figures:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.figures, self.skipped = [], []
        os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)

    def skip(self, figure_id, title, reason):
        self.skipped.append({"id": figure_id, "title": title, "reason": reason})

    def save(self, fig, figure_id, title, runs, series, caption, extra=None):
        taken = {f["id"] for f in self.figures}
        unique, n = figure_id, 2
        while unique in taken:  # two labels with the same file-name form
            unique, n = f"{figure_id}-{n}", n + 1
        figure_id = unique
        fig.text(0.01, 0.005, provenance(runs), fontsize=6.5, color="#555555", ha="left", va="bottom", wrap=True)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        files = {}
        for ext in ("png", "svg"):
            path = os.path.join("figures", f"{figure_id}.{ext}")
            fig.savefig(os.path.join(self.out_dir, path), format=ext)
            files[ext] = path
        plt.close(fig)
        entry = {"id": figure_id, "title": title, "caption": caption, "png": files["png"], "svg": files["svg"],
                 "series": series, "runs": [os.path.basename(r.path) for r in runs]}
        entry.update(extra or {})
        self.figures.append(entry)


class Styles:
    """A colour per strategy label and a marker per worker count, the same in every figure."""

    MARKERS = "os^Dv<>ph*"

    def __init__(self, runs):
        labels = sorted({r.label for r in runs})
        workers = sorted({r.workers for r in runs})
        cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        palette = cycle if len(labels) <= len(cycle) else [plt.cm.tab20(i % 20) for i in range(len(labels))]
        self.colour = {label: palette[i % len(palette)] for i, label in enumerate(labels)}
        self.marker = {w: self.MARKERS[i % len(self.MARKERS)] for i, w in enumerate(workers)}

    def of(self, label, workers=None):
        return {"color": self.colour.get(label), "marker": self.marker.get(workers, "o")}


STYLES = None


def plot_line(ax, x, y, series_id, label, style):
    (line,) = ax.plot(x, y, label=label, **style)
    line.set_gid(f"series-{series_id}")
    return line


def thousands(ax):
    ax.get_yaxis().set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))


def worker_axis(ax, workers):
    if max(workers) >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(workers)))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("workers (MPI ranks, or threads for openmp)")


def speedup_figures(figs, points):
    for point, runs in points.items():
        figure_id = f"speedup-{point_slug(point)}"
        title = f"Speedup vs workers ({point_text(point)})"
        reference = reference_of(runs)
        counts = sorted({r.workers for r in runs})
        if reference is None or not reference.train_seconds:
            figs.skip(figure_id, title, f"no reference run (parity reference or serial) at {point_text(point)}")
            figs.skip(f"efficiency-{point_slug(point)}", title.replace("Speedup", "Efficiency"),
                      f"no reference run at {point_text(point)}")
            continue
        if len(counts) < 2:
            reason = f"every run at {point_text(point)} used {counts[0]} worker(s): nothing to scale over"
            figs.skip(figure_id, title, reason)
            figs.skip(f"efficiency-{point_slug(point)}", title.replace("Speedup", "Efficiency"), reason)
            continue
        by_label = defaultdict(list)
        for r in runs:
            if r.train_seconds:
                by_label[r.label].append(r)
        for kind in ("speedup", "efficiency"):
            fig, ax = plt.subplots(figsize=(7, 4.6))
            series = []
            for label, group in sorted(by_label.items()):
                group.sort(key=lambda r: r.workers)
                x = [r.workers for r in group]
                s = [reference.train_seconds / r.train_seconds for r in group]
                y = s if kind == "speedup" else [v / w for v, w in zip(s, x)]
                sid = slug(label)
                plot_line(ax, x, y, sid, label, STYLES.of(label))
                series.append(label)
            top = max(counts)
            if kind == "speedup":
                (ideal,) = ax.plot([1, top], [1, top], "k--", linewidth=1, label="ideal (linear)")
                ax.set_ylabel(f"speedup over {reference.label} (its time / run time)")
            else:
                (ideal,) = ax.plot([1, top], [1, 1], "k--", linewidth=1, label="ideal (100%)")
                ax.set_ylabel("parallel efficiency (speedup / workers)")
            ideal.set_gid("ideal")
            worker_axis(ax, counts)
            ax.set_title(f"{kind.capitalize()} vs workers: {point_text(point)}")
            ax.legend(fontsize=7)
            caption = (f"Training time of {html.escape(reference.label)} ({reference.train_seconds:.3f} s) divided by each run's "
                       f"training time (evaluation excluded); the dashed line is linear scaling. Single-worker "
                       f"strategies appear once.")
            figs.save(fig, f"{kind}-{point_slug(point)}", f"{kind.capitalize()} vs workers ({point_text(point)})",
                      runs, series, caption)


def throughput_figures(figs, runs):
    """samples/s against batch size (layers fixed) and against hidden width (batch fixed)."""
    for axis in ("batch", "width"):
        groups = defaultdict(list)
        for r in runs:
            if r.samples_per_second is None:
                continue
            fixed = (r.layers, r.epochs_configured) if axis == "batch" else (r.batch, len(r.layers), r.epochs_configured)
            groups[fixed].append(r)
        made = False
        for fixed, group in sorted(groups.items(), key=lambda kv: str(kv[0])):
            values = sorted({getattr(r, axis) for r in group if getattr(r, axis) is not None})
            if len(values) < 2:
                continue
            made = True
            if axis == "batch":
                fixed_text = f"layers {layers_text(fixed[0])}"
                figure_id = f"throughput-vs-batch-h{hidden_slug(fixed[0])}"
            else:
                fixed_text = f"batch {fixed[0]}, {fixed[1] - 2} hidden layer(s)"
                figure_id = f"throughput-vs-width-b{fixed[0]}-d{fixed[1] - 2}"
            # One panel per strategy (shared y axis), a line per worker count: readable at 20+ series.
            labels = sorted({r.label for r in group})
            ncols = min(3, len(labels))
            nrows = math.ceil(len(labels) / ncols)
            fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 0.8 + 3.0 * nrows), sharey=True,
                                     squeeze=False)
            series = []
            by_series = defaultdict(list)
            for r in group:
                by_series[(r.label, r.workers)].append(r)
            for ax, label in zip(axes.flat, labels):
                for (series_label, workers), members in sorted(by_series.items()):
                    if series_label != label:
                        continue
                    members.sort(key=lambda r: getattr(r, axis))
                    sid = f"{slug(label)}_w{workers}"
                    plot_line(ax, [getattr(r, axis) for r in members], [r.samples_per_second for r in members], sid,
                              f"w={workers}", STYLES.of(label, workers))
                    series.append(f"{label} (w={workers})")
                ax.set_title(label, fontsize=9)
                ax.set_xscale("log", base=2)
                ax.set_xticks(values)
                ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
                ax.tick_params(axis="x", labelsize=7)
                ax.legend(fontsize=6.5)
            for ax in axes.flat[len(labels):]:
                ax.set_visible(False)
            for ax in axes[:, 0]:
                ax.set_ylabel("training samples / s")
                thousands(ax)
            for ax in axes[-1, :]:
                ax.set_xlabel("global batch size" if axis == "batch" else "hidden width (widest hidden layer)")
            title = f"Throughput vs {'batch size' if axis == 'batch' else 'hidden width'} ({fixed_text})"
            fig.suptitle(title, fontsize=10)
            figs.save(fig, figure_id, title, group, series,
                      "Training samples per second (evaluation excluded): a panel per strategy, a line per "
                      "worker count (w).")
        if not made:
            what = "batch sizes" if axis == "batch" else "hidden widths"
            figs.skip(f"throughput-vs-{axis}", f"Throughput vs {what}",
                      f"the results hold only one {axis} value per setting (run nnpar sweep with --{axis} a,b,...)")


def breakdown_figures(figs, points):
    for point, runs in points.items():
        figure_id = f"breakdown-{point_slug(point)}"
        title = f"Time breakdown per rank ({point_text(point)})"
        bars = []  # (name, {group: seconds})
        for r in sorted(runs, key=lambda r: (r.label, r.workers)):
            per_rank = r.rank_phases if r.rank_phases else ([r.phases] if r.phases else [])
            for rank, phases in enumerate(per_rank):
                name = r.name if len(per_rank) == 1 else f"{r.name} rank {rank}"
                bars.append((name, r.phase_seconds(phases)))
        if not bars or all(sum(v.values()) == 0 for _, v in bars):
            figs.skip(figure_id, title, f"no per-phase times recorded at {point_text(point)}")
            continue
        fig, ax = plt.subplots(figsize=(8, 1.2 + 0.32 * len(bars)))
        y = np.arange(len(bars))
        left = np.zeros(len(bars))
        series = []
        for group, _, colour in PHASE_GROUPS:
            widths = np.array([v[group] for _, v in bars])
            patches = ax.barh(y, widths, left=left, color=colour, label=group, height=0.7)
            for i, patch in enumerate(patches):
                patch.set_gid(f"series-{group}.bar{i}")
            left += widths
            series.append(group)
        ax.set_yticks(y)
        ax.set_yticklabels([name for name, _ in bars], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("seconds, summed over the epochs (compute = forward + backward + update)")
        ax.set_title(title)
        ax.legend(fontsize=7, loc="lower right")
        caption = ("Each rank's own phase times (multi-rank runs recorded by this nnpar carry every rank; older "
                   "results only rank 0). Idle is waiting for other workers: the pipeline bubble, stragglers.")
        figs.save(fig, figure_id, title, runs, series, caption, {"bars": [name for name, _ in bars]})


def convergence_figures(figs, points):
    for point, runs in points.items():
        figure_id = f"convergence-{point_slug(point)}"
        title = f"Loss and test accuracy vs training time ({point_text(point)})"
        usable = [r for r in sorted(runs, key=lambda r: (r.label, r.workers))
                  if any(e.get("elapsed_seconds") for e in r.epochs)]
        if not usable:
            figs.skip(figure_id, title, f"no per-epoch times at {point_text(point)}")
            continue
        fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4.4))
        series = []
        for r in usable:
            t = [e.get("elapsed_seconds") or 0 for e in r.epochs]
            loss = [e.get("loss") for e in r.epochs]
            (line,) = loss_ax.plot(t, [v if v is not None else float("nan") for v in loss], label=r.name,
                                   **STYLES.of(r.label, r.workers))
            line.set_gid(f"series-{r.series_id}.loss")
            tested = [(e.get("elapsed_seconds") or 0, e["test_accuracy"]) for e in r.epochs
                      if e.get("test_accuracy") is not None]
            (acc,) = acc_ax.plot([a for a, _ in tested], [100 * b for _, b in tested], label=r.name,
                                 **STYLES.of(r.label, r.workers))
            acc.set_gid(f"series-{r.series_id}.accuracy")
            series.append(r.name)
        loss_ax.set_xlabel("training time, s (evaluation excluded)")
        loss_ax.set_ylabel("mean training loss of the epoch")
        acc_ax.set_xlabel("training time, s (evaluation excluded)")
        acc_ax.set_ylabel("test accuracy, %")
        loss_ax.set_title("loss")
        acc_ax.set_title("test accuracy (time to accuracy)")
        acc_ax.legend(fontsize=7)
        fig.suptitle(title, fontsize=10)
        figs.save(fig, figure_id, title, usable, series,
                  "One point per epoch at the training time elapsed when it ended; test accuracy where evaluated.")


# --- pipeline timelines ----------------------------------------------------------------------


def schedule_ops(schedule, stage, stages, micro):
    """The order a stage runs its forwards (True, m) and backwards (False, m): plugins/common/pipeline.hpp."""
    if schedule == "gpipe":
        return [(True, m) for m in range(micro)] + [(False, m) for m in range(micro)]
    warmup = min(stages - stage - 1, micro)
    ops = [(True, m) for m in range(warmup)]
    for i in range(micro - warmup):
        ops += [(True, warmup + i), (False, i)]
    return ops + [(False, m) for m in range(micro - warmup, micro)]


def ideal_timeline(schedule, stages, micro, forward, backward):
    """Every op as early as its stage and its inputs allow; no communication cost."""
    done = {}
    free = [0.0] * stages
    pending = [list(schedule_ops(schedule, s, stages, micro)) for s in range(stages)]
    bars = [[] for _ in range(stages)]
    progress = True
    while progress and any(pending):
        progress = False
        for s in range(stages):
            while pending[s]:
                is_forward, m = pending[s][0]
                need = (True, m, s - 1) if is_forward else (False, m, s + 1)
                if is_forward and s == 0:
                    ready = 0.0
                elif not is_forward and s == stages - 1:
                    ready = done.get((True, m, s))
                else:
                    ready = done.get(need)
                if ready is None:
                    break
                start = max(free[s], ready)
                end = start + (forward[s] if is_forward else backward[s])
                done[(is_forward, m, s)] = end
                free[s] = end
                bars[s].append((start, end, "forward" if is_forward else "backward", m))
                pending[s].pop(0)
                progress = True
    return bars


def pipeline_geometry(run):
    micro = int(run.options.get("micro_batches", 1) or 1)
    schedule = str(run.options.get("schedule", "1f1b"))
    stages = run.ranks
    if run.plugin.endswith("hybrid"):
        data = int(run.options.get("data", 1) or 1)
        stages = int(run.options.get("stages", 0) or 0) or max(1, run.ranks // data)
    return schedule, stages, micro


def parse_date(text):
    try:
        return datetime.datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")
    except (TypeError, ValueError):
        return None


def trace_for(run, traces, owned):
    """The trace of this run: <results stem>.trace.json beside it (nnpar sweep --trace), else a trace
    that belongs to no results file (nnpar compare/train --trace FILE) naming its label on as many
    ranks, written closest to it in time and within an hour."""
    sibling = os.path.realpath(run.path[: -len(".json")] + ".trace.json")
    best, best_gap = None, None
    run_date = parse_date(run.date)
    for path, data in traces:
        real = os.path.realpath(path)
        if real != sibling and real in owned:
            continue
        processes = [p for p in data.get("otherData", {}).get("processes", []) if p.get("label") == run.label]
        ranks = {p.get("rank"): p.get("pid") for p in processes}
        if len(ranks) != run.ranks or set(ranks) != set(range(run.ranks)):
            continue
        if real == sibling:
            return path, data, ranks
        trace_date = parse_date(data.get("otherData", {}).get("date"))
        if run_date is None or trace_date is None:
            continue
        gap = abs((trace_date - run_date).total_seconds())
        if gap <= 3600 and (best_gap is None or gap < best_gap):
            best, best_gap = (path, data, ranks), gap
    return best


def traced_timeline(data, pids, stages):
    """One step of the last epoch of every stage (the middle one), from the recorded laps."""
    per_pid = defaultdict(list)
    for e in data.get("traceEvents", []):
        if e.get("ph") == "X" and e.get("pid") in pids.values():
            per_pid[e["pid"]].append(e)
    steps_by_stage = []
    for stage in range(stages):
        events = sorted(per_pid[pids[stage]], key=lambda e: e["ts"])
        epochs = [e for e in events if e.get("cat") == "harness" and str(e.get("name", "")).startswith("epoch ")]
        if epochs:
            last = max(epochs, key=lambda e: e["ts"])
            events = [e for e in events if last["ts"] <= e["ts"] <= last["ts"] + last["dur"]]
        phases = [e for e in events if e.get("cat") == "phase"]
        updates = [i for i, e in enumerate(phases) if e["name"] == "update"]
        # run_step laps "update" twice a step: after zeroing the gradients and after the SGD step.
        steps = [(updates[k], updates[k + 1]) for k in range(0, len(updates) - 1, 2)]
        steps_by_stage.append((phases, steps))
    count = min(len(steps) for _, steps in steps_by_stage)
    if count == 0:
        raise Skip("the trace has no complete pipeline step (no 'update' laps)")
    k = count // 2
    bars, origin = [], None
    for phases, steps in steps_by_stage:
        first, last = steps[k]
        window = phases[first: last + 1]
        origin = min(origin, window[0]["ts"]) if origin is not None else window[0]["ts"]
        stage_bars, seen = [], defaultdict(int)
        for e in window:
            kind = e["name"]
            if kind in ("forward", "backward"):
                m = seen[kind]
                seen[kind] += 1
            elif kind in ("idle", "communication"):
                m = None
            else:
                continue
            stage_bars.append((e["ts"], e["ts"] + e["dur"], kind, m))
        bars.append(stage_bars)
    scale = 1e-3  # us -> ms
    return [[((a - origin) * scale, (b - origin) * scale, kind, m) for a, b, kind, m in stage] for stage in bars], k


def gantt_figures(figs, runs, traces):
    owned = {os.path.realpath(r.path[: -len(".json")] + ".trace.json") for r in runs}
    pipelines = [r for r in runs if r.plugin in PIPELINE_PLUGINS and r.ranks > 1]
    if not pipelines:
        figs.skip("gantt", "Pipeline timeline", "no pipeline run with more than one rank in the results")
        return
    colours = {"forward": "#4878d0", "backward": "#ee854a", "idle": "#dddddd", "communication": "#6acc64"}
    for r in sorted(pipelines, key=lambda r: (r.point, r.label, r.workers)):
        figure_id = f"gantt-{point_slug(r.point)}-{r.series_id}"
        schedule, stages, micro = pipeline_geometry(r)
        title = f"Pipeline timeline: {r.name}, {schedule}, {stages} stages x {micro} micro-batches"
        found = trace_for(r, traces, owned)
        bars, why_not_traced = None, "no trace: run with --trace for the measured one"
        if found:
            path, data, pids = found
            try:
                bars, step = traced_timeline(data, pids, stages)
                source = "trace"
                subtitle = (f"measured: step {step + 1} of the last epoch, from {os.path.basename(path)} "
                            f"(replica 0 for hybrid runs)")
                unit = "ms from the start of the step"
            except (Skip, KeyError, TypeError, ValueError, AttributeError, IndexError) as why:
                why_not_traced = f"{os.path.basename(path)} unusable: {why}"
        if bars is None:
            try:
                steps = sum(int(e.get("steps") or 0) for e in r.epochs)
                if steps == 0:
                    raise Skip("no steps recorded")
                per_stage = r.rank_phases[:stages] if len(r.rank_phases) >= stages else [r.phases] * stages
                forward = [1e3 * float(p.get("forward") or 0) / (steps * micro) for p in per_stage]
                backward = [1e3 * float(p.get("backward") or 0) / (steps * micro) for p in per_stage]
                if not any(forward) and not any(backward):
                    raise Skip("no forward/backward times recorded")
            except Skip as why:
                figs.skip(figure_id, title, f"{why} ({why_not_traced})")
                continue
            bars = ideal_timeline(schedule, stages, micro, forward, backward)
            source = "ideal"
            subtitle = (f"ideal schedule ({why_not_traced}) from the mean forward and backward time per "
                        "micro-batch of " + ("each stage" if len(r.rank_phases) >= stages else "rank 0, for every stage")
                        + "; communication not drawn")
            unit = "ms"
        fig, ax = plt.subplots(figsize=(10, 1.6 + 0.55 * stages))
        series = []
        for s, stage_bars in enumerate(bars):
            spans = [(a, max(b - a, 1e-9)) for a, b, _, _ in stage_bars]
            collection = ax.broken_barh(spans, (s - 0.38, 0.76), facecolors=[colours[k] for _, _, k, _ in stage_bars],
                                        edgecolor="white", linewidth=0.4)
            collection.set_gid(f"series-stage{s}")
            series.append(f"stage {s}")
            for a, b, kind, m in stage_bars:
                if m is not None and (b - a) > 0:
                    ax.text((a + b) / 2, s, f"{'F' if kind == 'forward' else 'B'}{m}", ha="center", va="center",
                            fontsize=6, clip_on=True)
        ax.set_yticks(range(stages))
        ax.set_yticklabels([f"stage {s}" for s in range(stages)])
        ax.invert_yaxis()
        ax.set_xlabel(unit)
        ax.set_title(f"{title}\n" + textwrap.fill(subtitle, 130), fontsize=9)
        handles = [matplotlib.patches.Patch(color=c, label=k) for k, c in colours.items()
                   if source == "trace" or k in ("forward", "backward")]
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0))
        figs.save(fig, figure_id, title, [r], series,
                  f"F<i>m</i>/B<i>m</i>: forward/backward of micro-batch <i>m</i>. Source: {source}.",
                  {"source": source})


def load_predictions(path):
    """The rows of `nnpar plan --compare-results --json` (schema nnpar-plan-compare/1)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as error:
        fail(f"--predictions {path}: not readable JSON ({error})")
    if not isinstance(data, dict) or data.get("schema") != "nnpar-plan-compare/1" or "rows" not in data:
        fail(f"--predictions {path}: not the output of nnpar plan --compare-results --json")
    return data


def predicted_rows(predictions):
    return [r for r in predictions["rows"] if "skipped" not in r]


def prediction_figures(figs, runs, predictions, results_dir):
    rows = predicted_rows(predictions)
    if not rows:
        figs.skip("predicted-vs-measured", "Predicted beside measured", "no run could be predicted")
        return
    by_path = {os.path.realpath(r.path): r for r in runs}
    drawn = [by_path[p] for p in (os.path.realpath(os.path.join(results_dir, row["file"])) for row in rows) if p in by_path]
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    measured = [row["measured_samples_per_second"] for row in rows]
    predicted = [row["predicted_samples_per_second"] for row in rows]
    low, high = min(measured + predicted) / 1.5, max(measured + predicted) * 1.5
    line = np.geomspace(low, high, 50)
    ax.fill_between(line, line / 1.15, line * 1.15, color="#dddddd", label="within 15%")
    ax.plot(line, line, color="#888888", linewidth=0.8)
    plugins = sorted({row["plugin"] for row in rows})
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, plugin in enumerate(plugins):
        mine = [row for row in rows if row["plugin"] == plugin]
        ax.scatter([row["measured_samples_per_second"] for row in mine],
                   [row["predicted_samples_per_second"] for row in mine],
                   color=cycle[i % len(cycle)], marker=Styles.MARKERS[i % len(Styles.MARKERS)], label=plugin, zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("measured samples/s")
    ax.set_ylabel("predicted samples/s")
    ax.legend(fontsize=7)
    summary = predictions.get("summary", {})
    profile = predictions.get("profile", {})
    ax.set_title(f"{summary.get('within_15_percent', '?')} of {summary.get('predicted', '?')} runs within 15%",
                 fontsize=9)
    caption = (f"Each run's samples/s as measured (x) and as <i>nnpar plan</i> predicts it (y) from the profile "
               f"<i>{html.escape(str(profile.get('file', '?')))}</i> ({html.escape(str(profile.get('description', '')))}). "
               "On the diagonal the prediction is exact; the band is the 15% of the cost model's goal.")
    figs.save(fig, "predicted-vs-measured", "Predicted beside measured", drawn or runs,
              [{"id": slug(row["file"]), "measured": row["measured_samples_per_second"],
                "predicted": row["predicted_samples_per_second"]} for row in rows], caption)


def prediction_table(predictions):
    rows = []
    for row in sorted(predicted_rows(predictions), key=lambda r: r["file"]):
        note = row.get("predicted", {}).get("note", "") or ""
        rows.append([row["file"], row.get("label", row["plugin"]), str(row["workers"]),
                     f"{row['measured_samples_per_second']:,.0f}", f"{row['predicted_samples_per_second']:,.0f}",
                     f"{100 * row['error']:+.0f}%", note])
    return ["run", "strategy", "workers", "measured samples/s", "predicted", "error", "note"], rows


def prediction_summary(predictions):
    s, profile = predictions.get("summary", {}), predictions.get("profile", {})
    skipped = [r for r in predictions["rows"] if "skipped" in r]
    text = (f"{s.get('predicted', 0)} runs predicted with the profile `{profile.get('file', '?')}` "
            f"({profile.get('description', '')}): {s.get('within_15_percent', 0)} within 15%; |error| mean "
            f"{100 * s.get('mean_abs_error', 0):.0f}%, median {100 * s.get('median_abs_error', 0):.0f}%, worst "
            f"{100 * s.get('worst_abs_error', 0):.0f}%. Error = predicted / measured samples/s - 1 (docs/plan.md).")
    if skipped:
        text += f" Not predicted: {len(skipped)} ({'; '.join(r['file'] + ': ' + r['skipped'] for r in skipped[:5])})."
    return text


# ---------------------------------------------------------------------------------------------
# Tables and documents


def runs_table(runs, points):
    rows = []
    for point, members in points.items():
        reference = reference_of(members)
        for r in sorted(members, key=lambda r: (r.label, r.workers)):
            speedup = (reference.train_seconds / r.train_seconds
                       if reference and reference.train_seconds and r.train_seconds else None)
            rows.append([point_text(point), r.label, r.plugin, str(r.workers), r.workers_are,
                         f"{r.train_seconds:.3f}" if r.train_seconds is not None else "-",
                         f"{r.samples_per_second:,.0f}" if r.samples_per_second is not None else "-",
                         f"{speedup:.2f}x" if speedup else "-",
                         f"{100 * r.test_accuracy:.2f}%" if r.test_accuracy is not None else "-",
                         r.verdict or "-", r.device])
    return ["point", "strategy", "plugin", "workers", "workers are", "time s", "samples/s", "speedup",
            "test acc", "parity", "device"], rows


def parity_table(runs):
    rows = []
    for r in sorted(runs, key=lambda r: (r.point, r.label, r.workers)):
        p = r.parity
        if not p:
            continue

        def number(key, fmt):
            v = p.get(key)
            return format(v, fmt) if isinstance(v, (int, float)) else "-"

        rows.append([point_text(r.point), r.name, r.data["strategy"].get("parity_class", "?"), p.get("verdict", "?"),
                     p.get("reference", "?"), number("max_abs_diff", ".2e"), number("max_rel_diff", ".2e"),
                     number("accuracy_diff_pp", "+.2f"), p.get("reason", "") or ""])
    return ["point", "run", "class", "verdict", "reference", "max |dw|", "rel", "acc diff pp", "reason"], rows


def markdown_table(header, rows):
    def cell(v):
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header, rows):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def documents(out_dir, results_dir, runs, figs, incomplete, notes, predictions=None):
    machines = provenance(runs)
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    points = group_points(runs)
    run_header, run_rows = runs_table(runs, points)
    parity_header, parity_rows = parity_table(runs)
    incomplete_rows = [[point_text((r.get("batch"), tuple(r.get("layers") or []), 0, 0)), r.get("label", "?"),
                        str(r.get("workers", "?")), r.get("status", "?"), r.get("reason", "")] for r in incomplete]
    incomplete_header = ["point", "strategy", "workers", "status", "reason"]

    md = [f"# nnpar report", "", f"Results: `{os.path.abspath(results_dir)}` ({len(runs)} runs). Generated {generated}.",
          "", f"Provenance: {machines}", ""]
    md += ["## Runs", "", markdown_table(run_header, run_rows), ""]
    if incomplete_rows:
        md += ["Runs of the sweep that did not complete:", "", markdown_table(incomplete_header, incomplete_rows), ""]
    md += ["## Parity verdicts", ""]
    md += [markdown_table(parity_header, parity_rows) if parity_rows else
           "No run in these results was checked for parity (only `nnpar compare` and `nnpar sweep` check it).", ""]
    if predictions is not None:
        prediction_header, prediction_rows = prediction_table(predictions)
        md += ["## Predicted beside measured", "", prediction_summary(predictions), "",
               markdown_table(prediction_header, prediction_rows), ""]
    md += ["## Figures", ""]
    for f in figs.figures:
        md += [f"### {f['title']}", "", f"![{f['title']}]({f['png']})", "",
               re.sub(r"</?i>", "*", f["caption"]) + f" ([SVG]({f['svg']}))", ""]
    if figs.skipped or notes:
        md += ["## Not drawn, and notes", ""]
        md += [f"- {f['title']}: not drawn, {f['reason']}." for f in figs.skipped]
        md += [f"- {n}" for n in notes]
        md += [""]
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(md))

    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
             "th{background:#f0f0f0}img{max-width:100%;border:1px solid #eee}figure{margin:2em 0}"
             "figcaption{font-size:13px;color:#444}.note{color:#666}")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>nnpar report</title><style>{style}</style>"
             "</head><body>", "<h1>nnpar report</h1>",
             f"<p>Results: <code>{html.escape(os.path.abspath(results_dir))}</code> ({len(runs)} runs). "
             f"Generated {generated}.</p><p>Provenance: {html.escape(machines)}</p>",
             "<h2>Runs</h2>", html_table(run_header, run_rows)]
    if incomplete_rows:
        parts += ["<p>Runs of the sweep that did not complete:</p>", html_table(incomplete_header, incomplete_rows)]
    parts += ["<h2>Parity verdicts</h2>",
              html_table(parity_header, parity_rows) if parity_rows else
              "<p>No run in these results was checked for parity.</p>"]
    if predictions is not None:
        prediction_header, prediction_rows = prediction_table(predictions)
        parts += ["<h2>Predicted beside measured</h2>", f"<p>{html.escape(prediction_summary(predictions))}</p>",
                  html_table(prediction_header, prediction_rows)]
    parts += ["<h2>Figures</h2>"]
    for f in figs.figures:
        with open(os.path.join(out_dir, f["png"]), "rb") as png:
            data = base64.b64encode(png.read()).decode("ascii")
        parts.append(f"<figure id='{html.escape(f['id'])}'><img alt='{html.escape(f['title'])}' "
                     f"src='data:image/png;base64,{data}'><figcaption><b>{html.escape(f['title'])}.</b> "
                     f"{f['caption']}</figcaption></figure>")
    if figs.skipped or notes:
        parts.append("<h2>Not drawn, and notes</h2><ul>")
        parts += [f"<li class='note'>{html.escape(f['title'])}: not drawn, {html.escape(f['reason'])}.</li>"
                  for f in figs.skipped]
        parts += [f"<li class='note'>{html.escape(n)}</li>" for n in notes]
        parts.append("</ul>")
    parts.append("</body></html>\n")
    with open(os.path.join(out_dir, "report.html"), "w") as f:
        f.write("\n".join(parts))

    manifest = {"generated": generated, "results_dir": os.path.abspath(results_dir), "runs": len(runs),
                "figures": figs.figures, "skipped": figs.skipped, "notes": notes,
                "tables": {"runs": len(run_rows), "parity": len(parity_rows), "incomplete": len(incomplete_rows),
                           "predictions": len(predicted_rows(predictions)) if predictions is not None else 0}}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


def group_points(runs):
    points = defaultdict(list)
    for r in runs:
        points[r.point].append(r)
    return dict(sorted(points.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results_dir")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--predictions", help="nnpar plan --compare-results --json of the same folder")
    args = parser.parse_args()
    results_dir, out = args.results_dir, os.path.abspath(args.output)
    if not os.path.isdir(results_dir):
        fail(f"results folder '{results_dir}' does not exist or is not a folder")
    if os.path.exists(out) and os.listdir(out) and not args.overwrite:
        fail(f"'{args.output}' already holds files; choose another -o or pass --overwrite")

    predictions = load_predictions(args.predictions) if args.predictions else None
    runs, traces, incomplete, notes = load(results_dir, out)
    if not runs:
        fail(f"no nnpar results JSON in '{results_dir}'" + (f" ({'; '.join(notes)})" if notes else ""))
    runs = newest_per_key(runs, notes)
    points = group_points(runs)
    global STYLES
    STYLES = Styles(runs)

    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        figs = Figures(work)
        families = [("speedup", lambda: speedup_figures(figs, points)),
                    ("throughput", lambda: throughput_figures(figs, runs)),
                    ("breakdown", lambda: breakdown_figures(figs, points)),
                    ("convergence", lambda: convergence_figures(figs, points)),
                    ("gantt", lambda: gantt_figures(figs, runs, traces))]
        if predictions is not None:
            families.append(("predictions", lambda: prediction_figures(figs, runs, predictions, results_dir)))
        for family, draw in families:
            try:
                draw()
            except Exception as error:  # data no figure foresaw: the rest of the report still comes
                traceback.print_exc()
                plt.close("all")
                figs.skip(family, f"{family} figures", f"drawing failed: {type(error).__name__}: {error}")
        documents(work, results_dir, runs, figs, incomplete, notes, predictions)
        os.chmod(work, 0o755)
        # Into place in one rename: a report folder is either the old one or the new one.
        old = None
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.rmdir(old)
            os.rename(out, old)
        os.rename(work, out)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    print(f"report: {os.path.join(args.output, 'report.html')} and report.md, {len(figs.figures)} figures"
          + (f" ({len(figs.skipped)} not drawn: see the report)" if figs.skipped else ""))


if __name__ == "__main__":
    main()
