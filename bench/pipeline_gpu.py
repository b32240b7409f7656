#!/usr/bin/env python3
"""nccl-pipeline on 2 GPUs against one GPU and against data parallelism on the same 2 GPUs,
as the micro-batch count and the hidden width change (issue 6): one `nnpar compare` per width
with cuda (reference), nccl-data sync on 2 and nccl-pipeline (1F1B) with each micro-batch count.

    python3 bench/pipeline_gpu.py --width 256,1024 --micro 1,2,4,8,16 --batch 1024

samples/s is the median over the epochs after the first. The ideal 2-stage pipeline speedup
over one GPU is 2 x (1 - bubble), bubble = (S-1)/(M+S-1), for equal stages and free messages.
"""
import argparse
import os
import subprocess
import time

from compare_results import compare_results, median_rate  # bench/, beside this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--width", default="256,1024")
    p.add_argument("--micro", default="1,2,4,8,16")
    p.add_argument("--batch", type=int, default=1024, help="global batch")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", default=os.path.join(ROOT, "results", "pipeline-gpu"))
    p.add_argument("--set", action="append", default=[])
    a = p.parse_args()
    micros = [int(m) for m in a.micro.split(",")]
    print(f"# nccl-pipeline on 2 GPUs vs micro-batches and width\n\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"global batch {a.batch}, model 784-W-W-W-26 (4 Linear layers, auto partition), 1F1B\n")
    for w in [int(x) for x in a.width.split(",")]:
        out = os.path.join(a.out, f"w{w}")
        os.makedirs(out, exist_ok=True)
        text = (f"[data]\ntest_limit = 2000\n[model]\nlayers = [784, {w}, {w}, {w}, 26]\nseed = 42\n"
                f"[train]\nepochs = {a.epochs}\nbatch_size = {a.batch}\nlr = 1.0\nseed = 1\neval_every = 0\n"
                f'[output]\ndir = "{out}"\n[parity]\nreference = "cuda"\n[[strategy]]\nname = "cuda"\n'
                f'[[strategy]]\nname = "nccl-data"\nlabel = "data-2"\nranks = 2\n')
        for m in micros:
            text += f'[[strategy]]\nname = "nccl-pipeline"\nlabel = "pipe-m{m}"\nranks = 2\nmicro_batches = {m}\n'
        config = os.path.join(out, "pipeline.toml")
        open(config, "w").write(text)
        cmd = [os.path.join(a.build, "bin", "nnpar"), "compare", config, "--quiet"] + sum((["--set", s] for s in a.set), [])
        print(f"## width {w}\n\n`{' '.join(cmd)}`\n", flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode not in (0, 1):
            print("```\n" + r.stdout[-3000:] + r.stderr[-3000:] + "\n```\n")
            continue
        rate = {row["label"]: (median_rate(j), row["verdict"]) for row, j in compare_results(out)}
        print("| run | samples/s | vs 1 GPU | vs data-2 | ideal 2-stage (2(1-bubble)) | parity |\n|---|---|---|---|---|---|")
        for label, (s, verdict) in rate.items():
            ideal = "-"
            if label.startswith("pipe-m"):
                m = int(label[6:])
                ideal = f"{2 * (1 - 1 / (m + 1)):.2f}x"
            print(f"| {label} | {s:,.0f} | {s / rate['cuda'][0]:.2f}x | {s / rate['data-2'][0]:.2f}x | {ideal} | {verdict} |")
        print(flush=True)


if __name__ == "__main__":
    main()
