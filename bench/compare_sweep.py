#!/usr/bin/env python3
"""Strategies x worker counts in ONE `nnpar compare` run per (batch, width): the table of
samples/s, speedup over serial and parity verdicts that nnpar itself prints, collected into
Markdown.

    python3 bench/compare_sweep.py --workers 1,2,4,8,16 --batch 128 --width 256 \
        --strategies openmp:data_parallel,openmp:intra_op,mpi-data:sync,mpi-data:local_sgd

Every run starts from the same initial weights and sample order; the first epoch is a
warm-up and samples/s is taken from the later ones (nnpar's JSON per epoch). Writes
--out DIR/<batch>-<width>/ (nnpar's results) and prints one Markdown table per shape.
"""
import argparse
import os
import platform
import subprocess
import sys
import time

from compare_results import compare_results, median_rate  # bench/, beside this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def entry(strategy, workers):
    name, _, mode = strategy.partition(":")
    label = f"{name}-{mode}-{workers}" if mode else f"{name}-{workers}"
    lines = ["[[strategy]]", f'name = "{name}"', f'label = "{label}"']
    if name == "openmp":
        lines += [f'mode = "{mode or "data_parallel"}"', f"threads = {workers}"]
    elif name in ("mpi-data", "nccl-data"):
        lines += [f"ranks = {workers}", f'mode = "{mode or "sync"}"']
        if mode == "local_sgd":
            lines.append("period = 8")
    elif name == "cuda":
        pass
    else:
        lines.append(f"ranks = {workers}")
    return label, "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--batch", default="128")
    p.add_argument("--width", default="256")
    p.add_argument("--strategies", default="openmp:data_parallel,openmp:intra_op,mpi-data:sync")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--limit", type=int, default=0, help="training samples (0 = all 124,800)")
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--out", default=os.path.join(ROOT, "results", "sweep"))
    p.add_argument("--set", action="append", default=[], help="extra nnpar --set overrides")
    args = p.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    strategies = [s for s in args.strategies.split(",") if s]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"# nnpar compare sweep\n\nmachine: {cpu}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    status = 0
    for batch in [int(b) for b in args.batch.split(",")]:
        for width in [int(w) for w in args.width.split(",")]:
            out = os.path.join(args.out, f"b{batch}-w{width}")
            os.makedirs(out, exist_ok=True)
            config = os.path.join(out, "sweep.toml")
            labels = ["serial"]
            text = (f"[data]\nlimit = {args.limit}\ntest_limit = 5000\n[model]\nlayers = [784, {width}, {width}, 26]\n"
                    f"[train]\nepochs = {args.epochs}\nbatch_size = {batch}\nlr = {args.lr}\neval_every = 0\n"
                    f'[output]\ndir = "{out}"\n[[strategy]]\nname = "serial"\n')
            for s in strategies:
                for w in workers:
                    label, block = entry(s, w)
                    labels.append(label)
                    text += block
            open(config, "w").write(text)
            cmd = [os.path.join(args.build, "bin", "nnpar"), "compare", config, "--quiet"]
            for s in args.set:
                cmd += ["--set", s]
            print(f"## batch {batch}, hidden width {width}\n\n`{' '.join(cmd)}`\n", flush=True)
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode not in (0, 1):
                print("```\n" + run.stdout[-4000:] + run.stderr[-4000:] + "\n```")
                status = 1
                continue
            if run.returncode == 1:
                status = 1
            runs = compare_results(out)
            rows = [r for r, _ in runs]
            rates = {r["label"]: median_rate(j) for r, j in runs}
            base = rates["serial"]
            print("| strategy | workers | samples/s | speedup vs serial | efficiency | test acc | parity |")
            print("|---|---|---|---|---|---|---|")
            for r in rows:
                label = r["label"]
                w = 1 if label == "serial" else int(label.rsplit("-", 1)[1])
                sp = rates[label] / base
                print(f"| {label.rsplit('-', 1)[0] if label != 'serial' else 'serial'} | {w} | {rates[label]:,.0f} | "
                      f"{sp:.2f}x | {100 * sp / w:.0f}% | {100 * float(r['test_accuracy']):.2f}% | {r['verdict']} |")
            print(flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
