#!/usr/bin/env python3
"""Does a GPU train slower while the host's other GPUs train too? The single-GPU `cuda`
strategy alone on GPU 0, then one copy per GPU at the same time (independent processes, no
communication), same config:

    python3 bench/concurrent_gpus.py --gpus 2 --batch 1024,128

Why: nccl-data's local steps on 2 GPUs are longer than `cuda`'s on one
(docs/results/2026-11-26-data-parallel-4.md). Local SGD talks once per period, so a gap that
remains between independent copies comes from sharing the host (CPU, power, PCIe), not from
NCCL. samples/s is the median of the epochs after the first of each process.
"""
import argparse
import os
import subprocess
import time

from compare_results import compare_results, median_rate  # bench/, beside this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_text(args, out, batch):
    data = f'dir = "{args.data}"\n' if args.data else ""
    return (f"[data]\n{data}test_limit = 1000\n[model]\nlayers = [784, {args.width}, {args.width}, 26]\n"
            f"[train]\nepochs = {args.epochs}\nbatch_size = {batch}\nlr = 1.0\neval_every = 0\n"
            f'[output]\ndir = "{out}"\n[parity]\nreference = "{args.strategy}"\n[[strategy]]\nname = "{args.strategy}"\n')


def launch(args, out, batch, gpu):
    os.makedirs(out, exist_ok=True)
    config = os.path.join(out, "config.toml")
    with open(config, "w") as f:
        f.write(config_text(args, out, batch))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu))
    cmd = [os.path.join(args.build, "bin", "nnpar"), "compare", config]
    log = open(os.path.join(out, "log.txt"), "w")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def finish(process, out, timeout):
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise SystemExit(f"nnpar compare in {out} did not finish in {timeout} s; its output: {out}/log.txt")
    if process.returncode not in (0, 1):
        with open(os.path.join(out, "log.txt")) as f:
            raise SystemExit(f"nnpar compare in {out} failed:\n{f.read()[-3000:]}")
    (row, result), = compare_results(out)
    return median_rate(result)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--batch", default="1024,128")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--epochs", type=int, default=60,
                   help="enough that the copies overlap for seconds (an epoch is ~20-50 ms)")
    p.add_argument("--strategy", default="cuda", help="any single-process strategy (serial: a dry run without a GPU)")
    p.add_argument("--data", help="data.dir for the runs (default: the config default / NNPAR_DATA)")
    p.add_argument("--timeout", type=float, default=60, help="seconds each nnpar run may take")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "concurrent-gpus"))
    args = p.parse_args()
    print(f"# {args.strategy} alone vs one copy on each of {args.gpus} GPUs at once "
          f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print("| batch | alone on GPU 0 (samples/s, us/step) | " +
          " | ".join(f"GPU {g} beside the others" for g in range(args.gpus)) + " | slowest / alone |")
    print("|---|---|" + "---|" * args.gpus + "---|")
    for batch in [int(b) for b in args.batch.split(",")]:
        alone_dir = os.path.join(args.out, f"b{batch}-alone")
        alone = finish(launch(args, alone_dir, batch, 0), alone_dir, args.timeout)
        dirs = [os.path.join(args.out, f"b{batch}-together-gpu{g}") for g in range(args.gpus)]
        processes = [launch(args, d, batch, g) for g, d in enumerate(dirs)]
        together = [finish(pr, d, args.timeout) for pr, d in zip(processes, dirs)]
        cells = " | ".join(f"{r:,.0f} ({1e6 * batch / r:.1f} us)" for r in together)
        print(f"| {batch} | {alone:,.0f} ({1e6 * batch / alone:.1f} us) | {cells} | {alone / min(together):.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
