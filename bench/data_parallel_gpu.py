#!/usr/bin/env python3
"""nccl-data on N GPUs against the single-GPU `cuda` strategy, per-GPU batch 32/128/1024,
sync (with and without overlap) and local SGD with period 1/4/16/64, in `nnpar compare` runs:

    python3 bench/data_parallel_gpu.py --gpus 2 --batch 32,128,1024 --epochs 8 --target 0.70

For each per-GPU batch B: one compare of `cuda` at batch B (the single-GPU baseline), and one
at global batch N*B with `cuda` as the parity reference (same global batch, so `sync` must
match it) and every nccl-data variant. samples/s is the median of the epochs after the
first; time to accuracy is the training wall time until the test accuracy first reaches
--target (evaluated after every epoch, outside the timed region).

--sync-variants adds sync runs with other nccl-data options to the same compares, so old and
new engines are measured against the same baseline, e.g.
    --sync-variants "old:symmetric=false,layer0_chunks=1,bucket_update=false;c2:layer0_chunks=2"
A variant that sets `mode` runs in that mode instead (label "local-sgd-LABEL"), e.g.
    --sync-variants 'gathered:stage_input=false;gathered:mode="local_sgd",period=64,stage_input=false'
"""
import argparse
import json
import os
import subprocess
import time

from compare_results import compare_results, median_rate  # bench/, beside this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_compare(args, out, batch, strategies):
    os.makedirs(out, exist_ok=True)
    config = os.path.join(out, "config.toml")
    limit = f"limit = {args.limit}\n" if args.limit else ""
    text = (f"[data]\n{limit}test_limit = {args.test_limit}\n[model]\nlayers = [784, {args.width}, {args.width}, 26]\n"
            f"[train]\nepochs = {args.epochs}\nbatch_size = {batch}\nlr = {args.lr}\neval_every = 1\n"
            f'[output]\ndir = "{out}"\n[parity]\nreference = "cuda"\n')
    for label, body in strategies:
        text += f'[[strategy]]\nlabel = "{label}"\n{body}\n'
    open(config, "w").write(text)
    cmd = [os.path.join(args.build, "bin", "nnpar"), "compare", config, "--quiet"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    result = {}
    for r, j in compare_results(out):
        tta = next((e["elapsed_seconds"] for e in j["epochs"]
                    if e["test_accuracy"] is not None and e["test_accuracy"] >= args.target), None)
        result[r["label"]] = {"rate": median_rate(j), "acc": float(r["test_accuracy"]),
                              "verdict": r["verdict"], "tta": tta,
                              "phases": j["totals"]["phases"], "epochs": j["epochs"]}
    return result, run.stdout


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--batch", default="32,128,1024", help="per-GPU batch sizes")
    p.add_argument("--periods", default="1,4,16,64")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--target", type=float, default=0.70)
    p.add_argument("--test-limit", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="training samples (0 = all); two sizes separate per-epoch from per-step costs")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "dp-gpu"))
    p.add_argument("--json")
    p.add_argument("--sync-variants", default="",
                   help="LABEL:OPT=VALUE,...;... extra runs of nccl-data, sync unless they set mode (values as TOML)")
    args = p.parse_args()
    n = args.gpus
    everything = {}
    print(f"# nccl-data on {n} GPUs vs cuda on 1 ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"model 784-{args.width}-{args.width}-26, lr {args.lr}, {args.epochs} epochs of the training set, "
          f"time to {100 * args.target:.0f}% test accuracy\n")
    for b in [int(x) for x in args.batch.split(",")]:
        single, _ = run_compare(args, os.path.join(args.out, f"b{b}-single"), b, [("cuda", 'name = "cuda"')])
        strategies = [("cuda", 'name = "cuda"'),
                      ("sync", f'name = "nccl-data"\nranks = {n}\nmode = "sync"'),
                      ("sync-no-overlap", f'name = "nccl-data"\nranks = {n}\nmode = "sync"\noverlap = false')]
        for variant in filter(None, args.sync_variants.split(";")):
            label, _, opts = variant.partition(":")
            pairs = [(k.strip(), v.strip()) for k, v in (kv.split("=", 1) for kv in filter(None, opts.split(",")))]
            mode = next((v.strip('"') for k, v in pairs if k == "mode"), None)
            body = f'name = "nccl-data"\nranks = {n}' + ("" if mode else '\nmode = "sync"')
            mode = mode or "sync"
            for k, v in pairs:
                body += f"\n{k} = {v}"
            strategies.append((f"{'sync' if mode == 'sync' else mode.replace('_', '-')}-{label}", body))
        for period in [int(x) for x in args.periods.split(",")]:
            strategies.append((f"local-sgd-{period}", f'name = "nccl-data"\nranks = {n}\nmode = "local_sgd"\nperiod = {period}'))
        multi, _ = run_compare(args, os.path.join(args.out, f"b{b}-x{n}"), n * b, strategies)
        base = single["cuda"]["rate"]
        everything[b] = {"single": single, "multi": multi}
        print(f"## per-GPU batch {b} (global {n * b} on {n} GPUs), "
              f"{single['cuda']['epochs'][0]['samples']:,} samples per epoch\n")
        print("| strategy | GPUs | global batch | samples/s | vs 1 GPU | us/step | final test acc | time to target | parity |")
        print("|---|---|---|---|---|---|---|---|---|")
        def tta(r):
            return f"{r['tta']:.2f} s" if r["tta"] is not None else "not reached"
        s = single["cuda"]
        print(f"| cuda | 1 | {b} | {s['rate']:,.0f} | 1.00x | {1e6 * b / s['rate']:.1f} | {100 * s['acc']:.2f}% | "
              f"{tta(s)} | - |")
        for label, r in multi.items():
            gpus = 1 if label == "cuda" else n
            print(f"| {label} | {gpus} | {n * b} | {r['rate']:,.0f} | {r['rate'] / base:.2f}x | "
                  f"{1e6 * n * b / r['rate']:.1f} | {100 * r['acc']:.2f}% | {tta(r)} | {r['verdict']} |")
        print(flush=True)
    if args.json:
        json.dump(everything, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
