#!/usr/bin/env python3
"""Every GPU parallelism form side by side on one multi-GPU host (issues 14 and 15): for each
model shape, per-worker batch and GPU count N, ONE `nnpar compare` at the global batch b*N with

  cuda (1 GPU, the reference), nccl-data sync and local SGD on N GPUs, nccl-pipeline with N
  stages (where the model has >= N layers), nccl-hybrid grids (data x stages = N, both > 1),
  nccl-tensor on N GPUs,

all from the same initial weights and sample order, so the single GPU is the baseline for the
same global batch, and parity is checked against it. Writes nnpar's results (one JSON per run,
with every rank's time split) under --out and prints Markdown tables: samples/s (median of the
epochs after the first), speedup over one GPU, efficiency, time to --target accuracy, parity,
and the per-rank compute / communication / idle / data split.

    python3 bench/gpu_grid.py --gpus 2,4 --batch 128,1024 --models small,deep
"""
import argparse
import os
import subprocess
import sys
import time

from compare_results import compare_results, median_rate  # bench/, beside this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {
    "small": [784, 256, 256, 26],
    "deep": [784] + [1024] * 8 + [26],  # 8 hidden layers of 1024
}


def entries(layers, n):
    """(label, TOML block) for every form on n GPUs."""
    linear = len(layers) - 1
    out = [("cuda", '[[strategy]]\nname = "cuda"\n')]
    out.append((f"data-sync-{n}", f'[[strategy]]\nname = "nccl-data"\nlabel = "data-sync-{n}"\nranks = {n}\nmode = "sync"\n'))
    out.append((f"data-local-{n}", f'[[strategy]]\nname = "nccl-data"\nlabel = "data-local-{n}"\nranks = {n}\n'
                                   'mode = "local_sgd"\nperiod = 8\n'))
    if linear >= n:
        out.append((f"pipeline-{n}", f'[[strategy]]\nname = "nccl-pipeline"\nlabel = "pipeline-{n}"\nranks = {n}\n'
                                     f'schedule = "1f1b"\nmicro_batches = {2 * n}\n'))
    for data in range(2, n):
        if n % data == 0 and linear >= n // data:
            out.append((f"hybrid-{data}x{n // data}",
                        f'[[strategy]]\nname = "nccl-hybrid"\nlabel = "hybrid-{data}x{n // data}"\nranks = {n}\n'
                        f'data = {data}\nschedule = "1f1b"\nmicro_batches = {2 * (n // data)}\n'))
    out.append((f"tensor-{n}", f'[[strategy]]\nname = "nccl-tensor"\nlabel = "tensor-{n}"\nranks = {n}\n'))
    return out


def split(phases):
    compute = phases["forward"] + phases["backward"] + phases["update"]
    total = compute + phases["communication"] + phases["idle"] + phases["data"]
    if total <= 0:
        return "-"
    return "/".join(f"{100 * x / total:.0f}" for x in (compute, phases["communication"], phases["idle"], phases["data"]))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--gpus", default="2,4")
    p.add_argument("--batch", default="128,1024", help="per data-parallel worker; the global batch is batch x GPUs")
    p.add_argument("--models", default="small,deep")
    p.add_argument("--epochs", default="small:4,deep:2")
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--target", type=float, default=0.40, help="test accuracy for time-to-accuracy")
    p.add_argument("--limit", type=int, default=0, help="training samples (0 = all)")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "gpu-grid"))
    p.add_argument("--set", action="append", default=[], help="extra nnpar --set overrides")
    args = p.parse_args()
    epochs = dict(e.split(":") for e in args.epochs.split(","))
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"# nnpar GPU grid\n\nmachine: {gpu} x{subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True).stdout.count('GPU ')}, "
          f"{os.cpu_count()} CPU cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print(f"samples/s: median over epochs 2+; split per rank = compute/communication/idle/data % of the rank's "
          f"host time; time to {100 * args.target:.0f}% = training time until the first epoch-end test accuracy >= it\n")
    status = 0
    for model in args.models.split(","):
        layers = MODELS[model]
        for b in [int(x) for x in args.batch.split(",")]:
            for n in [int(x) for x in args.gpus.split(",")]:
                out = os.path.join(args.out, f"{model}-b{b}-g{n}")
                os.makedirs(out, exist_ok=True)
                config = os.path.join(out, "grid.toml")
                e = int(epochs.get(model, 2))
                text = (f"[data]\nlimit = {args.limit}\ntest_limit = 5000\n[model]\nlayers = {layers}\nseed = 42\n"
                        f"[train]\nepochs = {e}\nbatch_size = {b * n}\nlr = {args.lr}\nseed = 1\n"
                        f"eval_every = {1 if model == 'small' else 0}\n"
                        f'[output]\ndir = "{out}"\n[parity]\nreference = "cuda"\n')
                for _, block in entries(layers, n):
                    text += block
                open(config, "w").write(text)
                cmd = [os.path.join(args.build, "bin", "nnpar"), "compare", config, "--quiet"]
                for s in args.set:
                    cmd += ["--set", s]
                print(f"## {model} {layers}, {b} per worker, {n} GPUs (global batch {b * n})\n\n`{' '.join(cmd)}`\n", flush=True)
                t0 = time.time()
                run = subprocess.run(cmd, capture_output=True, text=True)
                if run.returncode not in (0, 1):
                    print("```\n" + run.stdout[-3000:] + run.stderr[-3000:] + "\n```\n", flush=True)
                    status = 1
                    continue
                status |= run.returncode
                table = []
                for r, j in compare_results(out):
                    rate = median_rate(j)
                    reached = next((x["elapsed_seconds"] for x in j["epochs"]
                                    if x["test_accuracy"] is not None and x["test_accuracy"] >= args.target), None)
                    ranks = j["totals"].get("rank_phases") or [j["totals"]["phases"]]
                    table.append((r, j, rate, reached, ranks))
                base = table[0][2]
                print("| form | GPUs | samples/s | speedup | efficiency | test acc | time to target | parity (max abs dw) | split per rank (compute/comm/idle/data %) |")
                print("|---|---|---|---|---|---|---|---|---|")
                for r, j, rate, reached, ranks in table:
                    g = j["strategy"]["ranks"]
                    sp = rate / base
                    tt = f"{reached:.2f} s" if reached is not None else "not reached"
                    print(f"| {r['label']} | {g} | {rate:,.0f} | {sp:.2f}x | {100 * sp / g:.0f}% | "
                          f"{100 * float(r['test_accuracy']):.2f}% | {tt} | {r['verdict']} ({r.get('max_abs_diff', '-')}) | "
                          f"{' '.join(split(x) for x in ranks)} |")
                print(f"\n({time.time() - t0:.0f} s)\n", flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
