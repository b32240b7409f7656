#!/usr/bin/env python3
"""The hand-written ring allreduce (mpi-ring, the SDK tutorial's strategy) against MPI_Allreduce
(mpi-data) and NCCL (nccl-data), all three synchronous data parallel with overlap = false (one
allreduce of the whole gradient per step), for the same model and global batch:

    python3 bench/ring_vs_collectives.py --build build --ranks 2,4,8 --batch 1024

For each global batch B and rank count N: one `nnpar compare` of serial (the parity reference)
and the three strategies on N ranks. nccl-data needs one GPU per rank: where this machine has
fewer GPUs than N (or the build has no nccl-data plugin) it is skipped and the table says why.
samples/s is the median of the epochs after the first; "comm ms/step" is rank 0's time in
communication per optimizer step (the allreduce, the part the three differ in; for NCCL with
plain launches it also holds the wait for the GPU's backward, which the blocking allreduce
orders itself after; a CUDA-graph replay has no per-step clock, so n/a). NCCL's samples/s
includes GPU compute, so set it against the CPU rows as an end-to-end figure, not an allreduce
figure.
"""
import argparse
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time

from compare_results import compare_results  # bench/, beside this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (label prefix, plugin, extra options, what the table calls it)
KINDS = [("ring", "mpi-ring", "", "hand-written ring (isend/irecv)"),
         ("mpi", "mpi-data", "", "MPI_Allreduce"),
         ("nccl", "nccl-data", "graph = false", "NCCL, GPUs, plain launches"),
         ("nccl-graph", "nccl-data", "graph = true", "NCCL, GPUs, CUDA-graph replay")]


def gpu_count():
    if shutil.which("nvidia-smi") is None:
        return 0, "no nvidia-smi"
    run = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    gpus = [l for l in run.stdout.splitlines() if l.startswith("GPU ")]
    return len(gpus), "" if gpus else (run.stderr.strip() or "nvidia-smi lists no GPU")


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    n, _ = gpu_count()
    gpus = ""
    if n:
        names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                               capture_output=True, text=True).stdout.split("\n")[0].strip()
        gpus = f", {n} x {names}"
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores{gpus}"


def run_compare(args, out, batch, entries, commands):
    os.makedirs(out, exist_ok=True)
    config = os.path.join(out, "config.toml")
    data_dir = f'dir = "{args.data}"\n' if args.data else ""
    text = (f"[data]\n{data_dir}limit = {args.samples}\ntest_limit = {args.test_limit}\n"
            f"[model]\nlayers = [784, {args.width}, {args.width}, 26]\n"
            f"[train]\nepochs = {args.epochs}\nbatch_size = {batch}\nlr = {args.lr}\n"
            f'[output]\ndir = "{out}"\n[parity]\nreference = "serial"\n[[strategy]]\nname = "serial"\n')
    for label, body in entries:
        text += f'[[strategy]]\nlabel = "{label}"\n{body}\n'
    with open(config, "w") as f:
        f.write(text)
    cmd = [os.path.join(args.build, "bin", "nnpar"), "compare", config, "--quiet"]
    commands.append(shlex.join(cmd))
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode not in (0, 1):  # 1: a parity check failed, which the table shows
        raise SystemExit(f"{shlex.join(cmd)} failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    result = {}
    for row, j in compare_results(out):
        epochs = j["epochs"]
        timed = epochs[1:] or epochs  # the first epoch pays for warm-up (NCCL set-up, page faults)
        steps = sum(e["steps"] for e in timed)
        comm = sum(e["phases"]["communication"] for e in timed)
        result[row["label"]] = {"rate": statistics.median(e["samples_per_second"] for e in timed),
                                "comm_ms_per_step": 1000 * comm / steps if steps else float("nan"),
                                "verdict": row["verdict"], "acc": float(row["test_accuracy"]),
                                "device": j.get("device", "")}
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--build", default=os.path.join(ROOT, "build"), help="nnpar build folder (bin/nnpar, plugins/)")
    p.add_argument("--ranks", default="2", help="comma-separated rank counts, e.g. 2,4,8,16")
    p.add_argument("--batch", default="1024", help="comma-separated global batch sizes")
    p.add_argument("--width", type=int, default=256, help="hidden width: model 784-W-W-26")
    p.add_argument("--samples", type=int, default=20000, help="training samples ([data] limit)")
    p.add_argument("--test-limit", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.3)
    p.add_argument("--data", default=os.environ.get("NNPAR_DATA", ""), help="letters dataset folder ($NNPAR_DATA)")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "ring-vs-collectives"))
    p.add_argument("--no-nccl", action="store_true", help="leave nccl-data out even with GPUs")
    args = p.parse_args()
    args.build = os.path.abspath(args.build)
    if not os.path.exists(os.path.join(args.build, "bin", "nnpar")):
        raise SystemExit(f"no nnpar in {args.build}/bin: build it first (or pass --build)")
    for name in ("mpi-ring", "mpi-data", "serial"):
        if not os.path.exists(os.path.join(args.build, "plugins", f"nnpar_strategy_{name}.so")):
            raise SystemExit(f"{args.build}/plugins has no {name} plugin")
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # no NVLink multicast on the lent machines
    gpus, why_none = gpu_count()
    have_nccl = os.path.exists(os.path.join(args.build, "plugins", "nnpar_strategy_nccl-data.so"))
    params = 784 * args.width + args.width + args.width * args.width + args.width + args.width * 26 + 26
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())

    print(f"# ring vs MPI_Allreduce vs NCCL ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"command: `{shlex.join([sys.executable, *sys.argv])}`  ")
    print(f"machine: {machine()}  ")
    print(f"model 784-{args.width}-{args.width}-26 ({params:,} floats = {4 * params / 1e6:.2f} MB of gradient), "
          f"{args.samples:,} samples x {args.epochs} epochs, sync, overlap = false; samples/s = median of "
          f"epochs 2..{args.epochs}\n")
    for b in [int(x) for x in args.batch.split(",")]:
        print(f"## global batch {b}\n")
        print("| ranks | allreduce | samples/s | vs MPI_Allreduce | vs serial | comm ms/step | parity |")
        print("|---|---|---|---|---|---|---|")
        notes, commands, serial_shown = [], [], False
        for n in [int(x) for x in args.ranks.split(",")]:
            entries, skipped = [], {}
            for key, plugin, extra, _ in KINDS:
                if plugin == "nccl-data":
                    reason = ""
                    if args.no_nccl:
                        reason = "--no-nccl"
                    elif not have_nccl:
                        reason = "this build has no nccl-data plugin (CPU-only build)"
                    elif gpus < n:
                        reason = f"{n} ranks need {n} GPUs, this machine has {gpus}"
                        reason += f" ({why_none})" if why_none else ""
                    if reason:
                        skipped[key] = reason
                        continue
                entries.append((f"{key}-{n}", f'name = "{plugin}"\nranks = {n}\nmode = "sync"\noverlap = false\n{extra}'))
            r = run_compare(args, os.path.join(args.out, f"{stamp}-b{b}-n{n}"), b, entries, commands)
            serial, mpi = r["serial"]["rate"], r[f"mpi-{n}"]["rate"]
            if not serial_shown:  # one serial row per batch: it runs in every compare as the reference
                print(f"| 1 | none (serial) | {serial:,.0f} | {serial / mpi:.2f}x | 1.00x | - | reference |")
                serial_shown = True
            for key, _, _, what in KINDS:
                if key in skipped:
                    print(f"| {n} | {what} | skipped | | | | |")
                    notes.append(f"{n} ranks, {what}: SKIPPED: {skipped[key]}")
                    continue
                x = r[f"{key}-{n}"]
                # A replayed epoch has no per-step host clock: its phases are split by FLOPs.
                comm = "n/a" if key == "nccl-graph" else f"{x['comm_ms_per_step']:.3f}"
                print(f"| {n} | {what} | {x['rate']:,.0f} | {x['rate'] / mpi:.2f}x | {x['rate'] / serial:.2f}x | "
                      f"{comm} | {x['verdict']} |", flush=True)
        print()
        for note in notes:
            print(f"- {note}")
            print(f"SKIP: {note}", file=sys.stderr)  # visible even when stdout goes to a file
        print("\nthe compares it ran (configs beside their results):\n")
        for c in commands:
            print(f"    {c}")
        print(flush=True)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
