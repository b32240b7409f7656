#!/usr/bin/env python3
"""Validates `nnpar plan` on this machine's CPU: calibrates a profile (or takes --profile), runs
every CPU form (serial, OpenMP both modes, mpi-data sync with and without overlap and local SGD,
mpi-pipeline GPipe and 1F1B, mpi-hybrid grids, mpi-tensor) on each worker count and shape in one
`nnpar compare` per point, then prints predicted beside measured (`nnpar plan --compare-results`).

    python3 bench/plan_validate.py --workers 2,4,8 --out results/plan-validate

Shapes: small 784-256-256-26 at batch 128, wide 784-1024-1024-26 at 1024, deep
784-512-512-512-26 at 256 (--shapes picks some). Results, the generated configs, the profile and
the table (validation.md) go under --out. Run it on an otherwise idle machine: a neighbour's
load changes kernel speed between the calibration and the runs, and the model cannot know that.
Each point runs the serial reference at its start and again at its end ("serial-end"); the
report's host-drift table compares the two, and a last table repeats the comparison with each
point's predictions scaled by its measured serial speed (a diagnosis). On a shared or virtual machine, --repeat R runs every point R times (the repeats interleaved
point by point) and keeps, per strategy, the run with the median samples/s under --out; the
other runs go to --out's sibling folder `<out>-repeats/` so the table compares one run each.
The table's last column is each run's host steal (the CPU time a hypervisor gave to other
guests while it trained); on the lent KVM hosts it stays near 0 even while their speed drifts
(docs/results/2026-11-27-plan-validation-9.md).
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = {
    "small": ([784, 256, 256, 26], 128),
    "wide": ([784, 1024, 1024, 26], 1024),
    "deep": ([784, 512, 512, 512, 26], 256),
}


def config_text(layers, batch, n, out, args):
    L = len(layers) - 1
    t = (f"[data]\nlimit = {args.limit}\ntest_limit = 2000\n[model]\nlayers = {layers}\n"
         f"[train]\nepochs = {args.epochs}\nbatch_size = {batch}\nlr = 1.0\neval_every = 0\n"
         f'[output]\ndir = "{out}"\n[[strategy]]\nname = "serial"\n')
    def value(v):
        return ("true" if v else "false") if isinstance(v, bool) else f'"{v}"' if isinstance(v, str) else str(v)

    def entry(name, label, **opts):
        return f'[[strategy]]\nname = "{name}"\nlabel = "{label}"\n' + "".join(f"{k} = {value(v)}\n" for k, v in opts.items())

    if n <= (os.cpu_count() or 1):
        t += entry("openmp", f"openmp-intra-{n}", mode="intra_op", threads=n)
        t += entry("openmp", f"openmp-dp-{n}", mode="data_parallel", threads=n)
    t += entry("mpi-data", f"data-sync-{n}", ranks=n, mode="sync")
    t += entry("mpi-data", f"data-sync-nooverlap-{n}", ranks=n, mode="sync", overlap=False)
    t += entry("mpi-data", f"data-local-{n}", ranks=n, mode="local_sgd", period=8)
    for d in range(1, n):
        if n % d or n // d > L or n // d < 2:
            continue
        s = n // d
        if d == 1:
            for schedule in ("1f1b", "gpipe"):
                t += entry("mpi-pipeline", f"pipeline-{schedule}-{s}", ranks=n, schedule=schedule, micro_batches=args.micro)
        else:
            t += entry("mpi-hybrid", f"hybrid-{d}x{s}", ranks=n, data=d, micro_batches=args.micro)
    t += entry("mpi-tensor", f"tensor-{n}", ranks=n)
    # The serial reference again at the end: the two bracket the point, so a host whose speed
    # changed meanwhile (a shared or virtual machine) shows in the drift table.
    t += entry("serial", "serial-end")
    return t


def host_drift(out, points):
    """Markdown: each point's serial samples/s at its start and at its end, and their ratio."""
    lines = ["| point | serial at start | serial at end | end / start |", "|---|---|---|---|"]
    drifted = 0
    for shape, n in points:
        rates = {}
        for path in glob.glob(os.path.join(out, f"{shape}-{n}", "*.json")):
            with open(path) as f:
                result = json.load(f)
            if "strategy" in result and result["strategy"].get("name") == "serial":
                rates[result["strategy"]["label"]] = result["totals"]["samples_per_second"]
        if "serial" not in rates or "serial-end" not in rates:
            continue
        ratio = rates["serial-end"] / rates["serial"]
        flag = "" if abs(ratio - 1) <= 0.10 else " (drifted)"
        drifted += bool(flag)
        lines.append(f"| {shape}-{n} | {rates['serial']:,.0f} | {rates['serial-end']:,.0f} | {ratio:.2f}{flag} |")
    return ("\n## Host drift\n\nThe same serial run at the start and the end of each point; more than 10% apart "
            f"means the machine's speed changed during the point ({drifted} point(s)).\n\n" + "\n".join(lines) + "\n")


def scaled_by_serial(rows):
    """Markdown: the comparison again with every prediction at a point scaled by that point's
    measured / predicted serial speed (the mean of its start and end runs). A diagnosis of what
    the model gets wrong once the host's speed at that moment is known, not the validation."""
    points = {}
    for r in rows:
        points.setdefault(os.path.basename(os.path.dirname(r["file"])), []).append(r)
    lines = ["| point | serial measured / predicted | within 15% after scaling | largest errors after scaling |",
             "|---|---|---|---|"]
    within = total = 0
    for point, runs in sorted(points.items()):
        serial = [r for r in runs if r["plugin"] == "serial"]
        others = [r for r in runs if r["plugin"] != "serial"]
        if not serial or not others:
            continue
        scale = sum(r["measured_samples_per_second"] for r in serial) / len(serial) / serial[0]["predicted_samples_per_second"]
        errors = sorted(((r["predicted_samples_per_second"] * scale / r["measured_samples_per_second"] - 1, r["label"])
                         for r in others), key=lambda e: -abs(e[0]))
        ok = sum(abs(e) <= 0.15 for e, _ in errors)
        within += ok
        total += len(errors)
        worst = ", ".join(f"{label} {100 * e:+.0f}%" for e, label in errors[:3])
        lines.append(f"| {point} | {scale:.2f} | {ok} of {len(errors)} | {worst} |")
    return ("\n## Scaled by each point's serial speed (a diagnosis, not the validation)\n\n"
            "Every prediction at a point times that point's measured / predicted serial samples/s: what the "
            f"model gets wrong once it knows how fast the host ran then. {within} of {total} within 15%.\n\n"
            + "\n".join(lines) + "\n")


def keep_median_runs(runs_dir, out):
    """Copies, for every strategy label, the run with the median samples/s of the repeats in
    runs_dir/run*/ into out (for an even count, the slower of the two middle runs)."""
    by_label = {}
    for path in glob.glob(os.path.join(runs_dir, "run*", "*.json")):
        with open(path) as f:
            result = json.load(f)
        by_label.setdefault(result["strategy"]["label"], []).append(
            (result["totals"]["samples_per_second"], path))
    os.makedirs(out, exist_ok=True)
    for runs in by_label.values():
        runs.sort()
        shutil.copy2(runs[(len(runs) - 1) // 2][1], out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--workers", default="2")
    p.add_argument("--shapes", default="small,wide,deep")
    p.add_argument("--limit", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--micro", type=int, default=4, help="micro-batches for pipeline and hybrid")
    p.add_argument("--profile", help="an existing profile (default: calibrate one into --out first)")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "plan-validate"))
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per point; the median run of each strategy is compared (default 1)")
    args = p.parse_args()
    if args.repeat < 1:
        sys.exit("--repeat must be at least 1")
    nnpar = os.path.join(args.build, "bin", "nnpar")
    os.makedirs(args.out, exist_ok=True)
    points = [(shape, int(n)) for shape in args.shapes.split(",") for n in args.workers.split(",")]
    for shape, _ in points:
        if shape not in SHAPES:
            sys.exit(f"--shapes: unknown shape '{shape}' (known: {', '.join(SHAPES)})")
    profile = args.profile
    if not profile:
        profile = os.path.join(args.out, "profile.json")
        if os.path.exists(profile):
            sys.exit(f"{profile} exists: pass it with --profile or choose another --out")
        subprocess.run([nnpar, "calibrate", "-o", profile,
                        "--mpi-ranks", ",".join(w for w in args.workers.split(",") if int(w) >= 2) or "2"], check=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    repeats_dir = os.path.abspath(args.out.rstrip("/") + "-repeats")
    for rep in range(args.repeat):
        for shape, n in points:
            layers, batch = SHAPES[shape]
            out = os.path.abspath(os.path.join(args.out, f"{shape}-{n}"))
            if args.repeat > 1:
                out = os.path.join(repeats_dir, f"{shape}-{n}", f"run{rep + 1}")
            os.makedirs(out, exist_ok=True)
            cfg = os.path.join(out, "config.toml")
            with open(cfg, "w") as f:
                f.write(config_text(layers, batch, n, out, args))
            # Exit 1 is a parity verdict (e.g. local SGD below the accuracy margin on a short
            # run); the timings are still valid for this validation. Exit 2 is an error.
            rc = subprocess.run([nnpar, "compare", cfg, "--quiet"]).returncode
            if rc not in (0, 1):
                sys.exit(f"nnpar compare {cfg} failed with exit {rc}")
    if args.repeat > 1:
        for shape, n in points:
            keep_median_runs(os.path.join(repeats_dir, f"{shape}-{n}"),
                             os.path.abspath(os.path.join(args.out, f"{shape}-{n}")))
    table = subprocess.run([nnpar, "plan", "--profile", profile, "--compare-results", args.out],
                           check=True, capture_output=True, text=True).stdout
    rows = json.loads(subprocess.run([nnpar, "plan", "--profile", profile, "--compare-results", args.out, "--json"],
                                     check=True, capture_output=True, text=True).stdout)["rows"]
    report = (f"# nnpar plan against CPU runs\n\nmachine: {os.cpu_count()} cores; runs from {started}, "
              f"load average {load_before[0]:.1f} before and {os.getloadavg()[0]:.1f} after; "
              f"profile {profile}\n\n{table}{host_drift(args.out, points)}{scaled_by_serial(rows)}")
    with open(os.path.join(args.out, "validation.md"), "w") as f:
        f.write(report)
    print(report)


if __name__ == "__main__":
    main()
