#!/usr/bin/env python3
"""Multicore scaling: nnpar serial, nnpar openmp (data_parallel and intra_op) and PyTorch on the
CPU, at the same thread counts, batch sizes and widths, in one run.

    /usr/bin/python3 bench/openmp_scaling.py [--build build] [--threads 1,2,4,8,16]
        [--batch 32,128,1024] [--width 256,1024] [--epochs 2] [--samples N] [--json FILE]
        [--modes data_parallel,intra_op] [--omp-option KEY=VALUE ...] [--no-torch] [--no-serial]
        [--no-ceiling]

The model is 784-W-W-26 (sigmoid hidden layers, softmax cross-entropy, plain SGD) on the letters
training set (NNPAR_DATA or ../shared/data), visited in file order (shuffle off, as PyTorch's
loop below does). nnpar runs as `nnpar train --quiet` and its results JSON gives samples/s per
epoch; PyTorch runs in this process with torch.set_num_threads(t). The first epoch is a
warm-up and is not counted when --epochs > 1 (median of the others). --samples N caps each
epoch at the first N samples (data.limit) for a quick run. --modes limits the openmp modes run
(the others show as "-"); --omp-option sets an openmp option (e.g. schedule=static) on every
openmp run, to compare variants of one build. --no-serial and --modes "" leave out nnpar serial
and openmp, so that repeated runs (bench/openmp_repeats.py) can interleave variants cheaply.

The host's ceiling: before and after the sweep, build/bin/bench_cpu_clock times T threads of
register-only FMAs (AVX-512, else AVX2) at every thread count of the sweep, and the tables
show T x (one such thread's rate at T / its rate alone): the most any T-thread run can gain
over one thread on this host at that moment. On a VM whose vCPUs share physical cores it is
well below T (docs/results/2026-11-27-openmp-scaling-8.md). --no-ceiling skips it.

Thread placement: set OMP_PROC_BIND / OMP_PLACES in the environment (e.g. OMP_PROC_BIND=close
OMP_PLACES=cores); nnpar (a child process) and PyTorch (this process, both libgomp) honour
them, and they are recorded in the JSON. Thread counts above the cores available are run but
flagged: oversubscribed barriers measure the scheduler, not the strategy.
"""
import os

# Taken before anything loads an OpenMP runtime: with OMP_PROC_BIND set, libgomp binds this
# process's main thread to one place when PyTorch starts it, and every nnpar child would inherit
# that one-core mask (its whole team then shares one core). Children get this mask back.
ALL_CPUS = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None

import argparse
import datetime
import json
import platform
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from serial_vs_torch import cpu_model, data_dir, read_idx  # noqa: E402  (shared helpers)

MODES = ("data_parallel", "intra_op")


def ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def counted(rates):
    """Median samples/s of the epochs after the warm-up one."""
    rates = rates[1:] if len(rates) > 1 else rates
    return float(np.median(rates)) if rates else float("nan")


def write_config(workdir, args):
    # Batch, width and threads come in as --set overrides, so one file serves every run.
    path = os.path.join(workdir, "scaling.toml")
    strategies = "".join(f'\n[[strategy]]\nname = "openmp"\nlabel = "omp-{m}"\nmode = "{m}"\nthreads = 1\n'
                         for m in MODES)
    with open(path, "w") as f:
        f.write(f"""[data]
dir = "{data_dir()}"
limit = {args.samples}
test_limit = 1000
[model]
layers = [784, 256, 256, 26]
[train]
epochs = {args.epochs}
batch_size = 128
lr = {args.lr}
shuffle = false
eval_every = 0
[output]
dir = "{workdir}/results"
[[strategy]]
name = "serial"
{strategies}""")
    return path


def run_child(cmd):
    """A child process with the CPU mask this script started with (see ALL_CPUS)."""
    restore = (lambda: os.sched_setaffinity(0, ALL_CPUS)) if ALL_CPUS else None
    return subprocess.run(cmd, capture_output=True, text=True, preexec_fn=restore)


def run_nnpar(args, config, label, batch, width, threads=None):
    cmd = [os.path.join(args.build, "bin", "nnpar"), "train", config, "--quiet", "--strategy", label,
           "--set", f"train.batch_size={batch}", "--set", f"model.layers=[784,{width},{width},26]"]
    if threads is not None:
        cmd += ["--set", f"strategy.{label}.threads={threads}"]
        for option in args.omp_option:
            cmd += ["--set", f"strategy.{label}.{option}"]
    proc = run_child(cmd)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr or proc.stdout}")
    files = [l.split("results: ", 1)[1].strip() for l in proc.stdout.splitlines() if l.startswith("results: ")]
    with open(files[0]) as f:
        run = json.load(f)
    return {"samples_per_second": [e["samples_per_second"] for e in run["epochs"]],
            "loss": [e["loss"] for e in run["epochs"]],
            "phases": run.get("totals", {}).get("phases"), "device": run.get("machine", {}).get("device")}


class TorchRunner:
    def __init__(self, samples):
        import torch  # Debian's python3-torch: run this script with /usr/bin/python3
        self.torch = torch
        # Debian's python3-torch is built with BLAS_INFO=generic: its GEMMs run on whatever
        # libblas.so.3 the alternatives system points at (netlib's reference BLAS by default,
        # single-threaded and slow; install libopenblas0 for a fair comparison).
        blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
        lib = "/usr/lib/x86_64-linux-gnu/libblas.so.3"
        self.blas = (blas.group(1) if blas else "?") + (f" -> {os.path.realpath(lib)}" if os.path.exists(lib) else "")
        images = read_idx(os.path.join(data_dir(), "letters-train-images-idx3-ubyte.gz"))
        labels = read_idx(os.path.join(data_dir(), "letters-train-labels-idx1-ubyte.gz")).astype(np.int64) - 1
        if samples:
            images, labels = images[:samples], labels[:samples]
        self.x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
        self.y = torch.from_numpy(labels)

    def run(self, threads, batch, width, epochs, lr):
        torch = self.torch
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(784, width), torch.nn.Sigmoid(),
                                    torch.nn.Linear(width, width), torch.nn.Sigmoid(),
                                    torch.nn.Linear(width, 26))
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        loss_fn = torch.nn.CrossEntropyLoss()
        n = len(self.x)
        rates, losses = [], []
        for _ in range(epochs):
            start = time.perf_counter()
            total = 0.0
            for b in range(0, n, batch):
                x, y = self.x[b:b + batch], self.y[b:b + batch]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
                total += loss.item() * len(x)
            rates.append(n / (time.perf_counter() - start))
            losses.append(total / n)
        return {"samples_per_second": rates, "loss": losses}


def host_ceiling(args, threads_list):
    """{threads: T x rate(T) / rate(1)} from bench_cpu_clock, or None where it cannot run."""
    tool = os.path.join(args.build, "bin", "bench_cpu_clock")
    if not os.access(tool, os.X_OK):
        return None
    for kind in ("fma512", "fma256"):
        cmd = [tool, "--threads", ",".join(str(t) for t in threads_list), "--ms", "200", "--reps", "3",
               "--kinds", kind]
        proc = run_child(cmd)
        if proc.returncode != 0 and "none of the kinds can run" in proc.stderr:
            continue  # no AVX-512 here: try the AVX2 loop
        if proc.returncode != 0:
            print(f"warning: {' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}", file=sys.stderr)
            return None
        rows = [l.split() for l in proc.stdout.splitlines() if l.startswith(kind + " ")]
        if rows:
            return {"kind": kind, "gain": {int(r[1]): float(r[-1]) for r in rows}}
    return None


def print_ceiling(ceiling, when, lead=""):
    if ceiling:
        print(f"{lead}host ceiling ({ceiling['kind']}, {when}): "
              + ", ".join(f"{t} threads {g:.2f}x" for t, g in sorted(ceiling["gain"].items())))


def fmt(x):
    return "-" if x is None or x != x else f"{x:,.0f}"


def ratio(a, b):
    return "-" if a is None or b is None or not b or a != a or b != b else f"{a / b:.2f}x"


def table(batch, width, threads_list, serial, omp, torch_rates, cores, ceiling):
    lines = [f"\n### batch {batch}, model 784-{width}-{width}-26 (samples/s)\n",
             "| threads | serial | omp data_parallel | omp intra_op | torch | speedup dp | speedup intra "
             "| host ceiling | best omp / torch | best mode |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|"]
    for t in threads_list:
        dp, io = omp["data_parallel"].get(t), omp["intra_op"].get(t)
        pt = torch_rates.get(t)
        cands = [(v, m) for v, m in ((dp, "data_parallel"), (io, "intra_op")) if v is not None and v == v]
        best, mode = max(cands) if cands else (None, "-")
        note = " (oversubscribed)" if t > cores else ""
        gain = ceiling["gain"].get(t) if ceiling else None
        lines.append(f"| {t}{note} | {fmt(serial)} | {fmt(dp)} | {fmt(io)} | {fmt(pt)} | {ratio(dp, serial)} "
                     f"| {ratio(io, serial)} | {f'{gain:.2f}x' if gain else '-'} | {ratio(best, pt)} | {mode} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--threads", default="1,2,4,8,16")
    parser.add_argument("--batch", default="32,128,1024")
    parser.add_argument("--width", default="256,1024")
    parser.add_argument("--epochs", type=int, default=2, help="the first is a warm-up when > 1")
    parser.add_argument("--samples", type=int, default=0, help="cap each epoch at N samples (0 = all)")
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--no-serial", action="store_true", help="skip nnpar serial")
    parser.add_argument("--modes", default=",".join(MODES), help="openmp modes to run")
    parser.add_argument("--omp-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an openmp strategy option for every openmp run (repeatable)")
    parser.add_argument("--no-ceiling", action="store_true",
                        help="skip timing the host's FMA ceiling (bench_cpu_clock) before and after")
    parser.add_argument("--json", help="also write every number and the machine to this file")
    args = parser.parse_args()
    threads_list, batches, widths = ints(args.threads), ints(args.batch), ints(args.width)
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"--modes: unknown mode(s) {', '.join(unknown)} (choose from {', '.join(MODES)})")
    bad = [o for o in args.omp_option if "=" not in o]
    if bad:
        parser.error(f"--omp-option wants KEY=VALUE, got {bad[0]!r}")
    cores = len(ALL_CPUS) if ALL_CPUS else os.cpu_count()

    torch_runner, torch_version = None, None
    if not args.no_torch:
        try:
            torch_runner = TorchRunner(args.samples)
            torch_version = torch_runner.torch.__version__
            if "generic" in torch_runner.blas and "netlib" in torch_runner.blas:
                print(f"warning: PyTorch uses the reference BLAS ({torch_runner.blas}): its numbers "
                      "understate PyTorch with MKL or OpenBLAS", file=sys.stderr)
        except ImportError as e:
            print(f"warning: PyTorch not available ({e}); run with /usr/bin/python3 or pass --no-torch",
                  file=sys.stderr)

    machine = {"cpu": cpu_model(), "cores_available": cores, "cpu_count": os.cpu_count(),
               "platform": platform.platform(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
               "torch": torch_version, "torch_blas": torch_runner.blas if torch_runner else None,
               "env": {k: os.environ[k] for k in ("OMP_PROC_BIND", "OMP_PLACES", "OMP_NUM_THREADS",
                                                  "OMP_WAIT_POLICY") if k in os.environ}}
    print(f"machine: {machine['cpu']}, {cores} cores available; torch {torch_version or 'n/a'} "
          f"(BLAS {machine['torch_blas']}); "
          f"{machine['env'] or 'no OMP_* placement set'}")
    print(f"{args.epochs} epochs of {args.samples or 'all'} samples; samples/s = median of epochs "
          f"{'2..' if args.epochs > 1 else '1..'}{args.epochs}")

    ceiling = None if args.no_ceiling else host_ceiling(args, threads_list)
    print_ceiling(ceiling, "before")
    machine["ceiling_before"] = ceiling
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        config = write_config(workdir, args)
        for batch in batches:
            for width in widths:
                entry = {"batch": batch, "width": width, "serial": None,
                         "openmp": {m: {} for m in MODES}, "torch": {}}
                try:
                    if not args.no_serial:
                        entry["serial"] = run_nnpar(args, config, "serial", batch, width)
                except RuntimeError as e:
                    print(f"error: {e}", file=sys.stderr)
                for t in threads_list:
                    for m in modes:
                        try:
                            entry["openmp"][m][t] = run_nnpar(args, config, f"omp-{m}", batch, width, t)
                        except RuntimeError as e:
                            print(f"error: {e}", file=sys.stderr)
                    if torch_runner:
                        entry["torch"][t] = torch_runner.run(t, batch, width, args.epochs, args.lr)
                serial = counted(entry["serial"]["samples_per_second"]) if entry["serial"] else None
                omp = {m: {t: counted(r["samples_per_second"]) for t, r in entry["openmp"][m].items()}
                       for m in MODES}
                pt = {t: counted(r["samples_per_second"]) for t, r in entry["torch"].items()}
                print(table(batch, width, threads_list, serial, omp, pt, cores, ceiling), flush=True)
                entry["summary"] = {"serial": serial, "openmp": omp, "torch": pt}
                results.append(entry)

    after = None if args.no_ceiling else host_ceiling(args, threads_list)
    print_ceiling(after, "after", lead="\n")
    machine["ceiling_after"] = after
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "epochs": args.epochs, "samples": args.samples, "lr": args.lr,
                       "threads": threads_list, "modes": modes, "omp_options": args.omp_option,
                       "results": results}, f, indent=2)
        print(f"\njson: {args.json}")


if __name__ == "__main__":
    main()
