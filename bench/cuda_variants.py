#!/usr/bin/env python3
"""The `cuda` strategy's variants side by side (nnpar only, no PyTorch): samples/s of each
variant for each width and batch size, in one run on one GPU.

    python3 bench/cuda_variants.py [--build build] [--variants graph,persistent,resident]
                                   [--batches 1,32,128,1024] [--widths 256,1024] [--epochs 3]
                                   [--max-steps 20000] [--json FILE]

A variant is `NAME` or `NAME:key=value:key=value` (extra strategy.cuda options, e.g.
`persistent:persistent_blocks=66`). Model 784-W-W-26; an epoch is the training set (124,800
samples) or --max-steps batches, whichever is smaller; the first epoch is a warm-up, the
number reported is the median of the rest. Set NNPAR_PERSISTENT_PLAN=1 to have the strategy
print the persistent kernel's tile plan to stderr, NNPAR_PERSISTENT_PHASES=1 for its mean time
per phase (work and grid barrier) over the first 64 steps of a launch (the script keeps only the
last 400 characters of stderr: run nnpar directly for the whole line).
"""
import argparse
import json
import os
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data_dir():  # as bench/serial_vs_torch.py
    return os.environ.get("NNPAR_DATA") or os.path.join(ROOT, "..", "shared", "data")


def run(args, workdir, width, batch, variant):
    name, *extra = variant.split(":")
    samples = min(124800, args.max_steps * batch)
    config = os.path.join(workdir, "bench.toml")
    with open(config, "w") as f:
        f.write(f"""[data]
dir = "{data_dir()}"
limit = {samples}
test_limit = 100
[model]
layers = [784, {width}, {width}, 26]
[train]
epochs = {args.epochs}
batch_size = {batch}
lr = {args.lr}
eval_every = 0
[output]
dir = "{workdir}/results"
[[strategy]]
name = "cuda"
""")
    cmd = [os.path.join(args.build, "bin", "nnpar"), "train", config, "--quiet", "--strategy", "cuda",
           "--set", f"strategy.cuda.variant={name}"]
    for kv in extra:
        cmd += ["--set", f"strategy.cuda.{kv}"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": [f"timed out after {args.timeout} s"]}
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout).strip().splitlines()[-1:]}
    result = [l.split("results: ", 1)[1].strip() for l in p.stdout.splitlines() if l.startswith("results: ")][0]
    with open(result) as f:
        r = json.load(f)
    rates = [e["samples_per_second"] for e in r["epochs"]]
    counted = sorted(rates[1:] if len(rates) > 1 else rates)
    out = {"rates": rates, "median": counted[len(counted) // 2], "device": r.get("device", ""),
           "train_loss": r["epochs"][-1].get("loss"), "test_accuracy": r.get("final_test", {}).get("accuracy")}
    if p.stderr.strip():
        out["stderr"] = p.stderr.strip()[-400:]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--variants", default="graph,persistent")
    ap.add_argument("--batches", default="1,32,128,1024")
    ap.add_argument("--widths", default="256,1024")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=20000)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=60, help="seconds per nnpar run")
    ap.add_argument("--json")
    args = ap.parse_args()
    variants = args.variants.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for width in map(int, args.widths.split(",")):
            for batch in map(int, args.batches.split(",")):
                row = {"width": width, "batch": batch}
                for v in variants:
                    row[v] = run(args, workdir, width, batch, v)
                    r = row[v]
                    print(f"  width {width} batch {batch} {v}: " +
                          (f"{r['median']:,.0f} samples/s, loss {r['train_loss']}, test acc {r['test_accuracy']}"
                           if "median" in r else f"ERROR {r['error']}"), flush=True)
                    if "stderr" in r:
                        print("    " + r["stderr"].replace("\n", "\n    "), flush=True)
                rows.append(row)
    device = next((r[v]["device"] for r in rows for v in variants if "device" in r[v]), "?")
    print(f"\nGPU: {device}; median samples/s of epochs 2..{args.epochs}\n")
    print("| width | batch | " + " | ".join(variants) + " | best |")
    print("|---|---|" + "---|" * (len(variants) + 1))
    for r in rows:
        vals = [r[v].get("median", float("nan")) for v in variants]
        best = max(range(len(variants)), key=lambda i: vals[i] if vals[i] == vals[i] else -1)
        print(f"| {r['width']} | {r['batch']} | " + " | ".join(f"{x:,.0f}" for x in vals) + f" | {variants[best]} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
