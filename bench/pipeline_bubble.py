#!/usr/bin/env python3
"""The pipeline bubble, measured against the formula: mpi-pipeline on S stages with M
micro-batches and both schedules, one `nnpar compare` per stage count.

    python3 bench/pipeline_bubble.py --stages 2,4 --micro 1,2,4,8 --batch 128

For each run, rank 0's (the first stage's) idle time over its total phase time in the epochs
after the first is the measured bubble; the GPipe formula (S-1)/(M+S-1) assumes every stage
and every pass takes the same time. Speedup is against serial in the same compare run.
"""
import argparse
import os
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import subprocess

from compare_results import compare_results  # bench/, beside this script

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--stages", default="2,4")
    p.add_argument("--micro", default="1,2,4,8")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--layers", default="784,512,512,512,26")
    p.add_argument("--limit", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", default=os.path.join(ROOT, "results", "bubble"))
    args = p.parse_args()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"# pipeline bubble: model {args.layers}, batch {args.batch}, {args.limit} samples x {args.epochs} epochs\n")
    print(f"machine: {cpu}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| stages | micro-batches | schedule | formula (S-1)/(M+S-1) | measured idle / total (rank 0) | samples/s | speedup vs serial | parity |")
    print("|---|---|---|---|---|---|---|---|")
    for s in [int(x) for x in args.stages.split(",")]:
        out = os.path.join(args.out, f"s{s}")
        os.makedirs(out, exist_ok=True)
        text = (f"[data]\nlimit = {args.limit}\ntest_limit = 2000\n[model]\nlayers = [{args.layers}]\n"
                f"[train]\nepochs = {args.epochs}\nbatch_size = {args.batch}\nlr = 1.0\neval_every = 0\n"
                f'[output]\ndir = "{out}"\n[[strategy]]\nname = "serial"\n')
        for m in [int(x) for x in args.micro.split(",")]:
            for sched in ("gpipe", "1f1b"):
                text += (f'[[strategy]]\nname = "mpi-pipeline"\nlabel = "{sched}-m{m}"\nranks = {s}\n'
                         f'schedule = "{sched}"\nmicro_batches = {m}\n')
        config = os.path.join(out, "bubble.toml")
        open(config, "w").write(text)
        subprocess.run([os.path.join(args.build, "bin", "nnpar"), "compare", config, "--quiet"],
                       capture_output=True, text=True)
        base = None
        for r, j in compare_results(out):
            later = j["epochs"][1:] or j["epochs"]
            rate = sorted(e["samples_per_second"] for e in later)[len(later) // 2]
            if r["label"] == "serial":
                base = rate
                continue
            idle = sum(e["phases"]["idle"] for e in later)
            total = sum(sum(e["phases"].values()) for e in later)
            sched, m = r["label"].split("-m")
            m = int(m)
            print(f"| {s} | {m} | {sched} | {(s - 1) / (m + s - 1):.2f} | {idle / total:.2f} | {rate:,.0f} | "
                  f"{rate / base:.2f}x | {r['verdict']} |", flush=True)


if __name__ == "__main__":
    main()
