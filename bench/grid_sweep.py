#!/usr/bin/env python3
"""For a fixed number of CPU workers, every way nnpar can use them, in one `nnpar compare` per
shape: data parallel, pipeline, hybrid data x pipeline grids, tensor parallel and OpenMP
threads, against serial; reports which wins for each model and batch.

    python3 bench/grid_sweep.py --workers 4 --batch 128,1024 --width 256,1024 --depth 4

--depth is the number of Linear layers (the pipeline needs at least one per stage).
"""
import argparse
import os
import subprocess
import time

from compare_results import compare_results, median_rate  # bench/, beside this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def grids(n):
    return [(d, n // d) for d in range(1, n + 1) if n % d == 0]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--batch", default="128,1024")
    p.add_argument("--width", default="256,1024")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--limit", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--micro", type=int, default=4, help="micro-batches for pipeline and hybrid")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "grid"))
    args = p.parse_args()
    n = args.workers
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"# {n} CPU workers, every form\n\nmachine: {cpu}, {os.cpu_count()} cores; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.limit} samples x {args.epochs} epochs, "
          f"samples/s from the epochs after the first; pipeline/hybrid with {args.micro} micro-batches, 1F1B\n")
    for batch in [int(b) for b in args.batch.split(",")]:
        for width in [int(w) for w in args.width.split(",")]:
            layers = [784] + [width] * (args.depth - 1) + [26]
            out = os.path.join(args.out, f"b{batch}-w{width}")
            os.makedirs(out, exist_ok=True)
            text = (f"[data]\nlimit = {args.limit}\ntest_limit = 2000\n[model]\nlayers = {layers}\n"
                    f"[train]\nepochs = {args.epochs}\nbatch_size = {batch}\nlr = 1.0\neval_every = 0\n"
                    f'[output]\ndir = "{out}"\n[[strategy]]\nname = "serial"\n'
                    f'[[strategy]]\nname = "openmp"\nlabel = "openmp {n} threads"\nthreads = {n}\nmode = "intra_op"\n'
                    f'[[strategy]]\nname = "mpi-tensor"\nlabel = "tensor {n}"\nranks = {n}\n')
            for d, s in grids(n):
                if s > args.depth:
                    continue
                label = f"data {d} x pipeline {s}"
                name = "mpi-data" if s == 1 else ("mpi-pipeline" if d == 1 else "mpi-hybrid")
                text += f'[[strategy]]\nname = "{name}"\nlabel = "{label}"\nranks = {n}\n'
                if name == "mpi-hybrid":
                    text += f"data = {d}\n"
                if name != "mpi-data":
                    text += f'micro_batches = {args.micro}\nschedule = "1f1b"\n'
            config = os.path.join(out, "grid.toml")
            open(config, "w").write(text)
            run = subprocess.run([os.path.join(args.build, "bin", "nnpar"), "compare", config, "--quiet"],
                                 capture_output=True, text=True)
            if run.returncode not in (0, 1):
                print(f"```\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}\n```")
                continue
            rates = {r["label"]: (median_rate(j), j["totals"]["phases"], r["verdict"]) for r, j in compare_results(out)}
            base = rates["serial"][0]
            print(f"## batch {batch}, model {layers}\n")
            print("| strategy | samples/s | speedup vs serial | rank-0 compute / comm / idle | parity |")
            print("|---|---|---|---|---|")
            best = max((v[0], k) for k, v in rates.items() if k != "serial")
            for label, (rate, ph, verdict) in rates.items():
                total = sum(ph.values()) or 1
                comp = ph["forward"] + ph["backward"] + ph["update"] + ph["data"]
                mark = " **(best)**" if label == best[1] else ""
                print(f"| {label}{mark} | {rate:,.0f} | {rate / base:.2f}x | {100 * comp / total:.0f}% / "
                      f"{100 * ph['communication'] / total:.0f}% / {100 * ph['idle'] / total:.0f}% | {verdict} |")
            print(flush=True)


if __name__ == "__main__":
    main()
