#!/usr/bin/env python3
"""A/B: nccl-tensor and nccl-pipeline before and after the multi-block softmax, interleaved,
small model, global batch 256 and 2048, 3 repetitions; median of epochs 2..4 per run."""
import json, os, statistics, subprocess, sys
builds = {"old": sys.argv[1], "new": sys.argv[2]}
out = sys.argv[3]
toml = """[data]
test_limit = 2000
[model]
layers = [784, 256, 256, 26]
seed = 42
[train]
epochs = 4
batch_size = 256
lr = 1.0
seed = 1
[output]
dir = "%s"
[[strategy]]
name = "nccl-tensor"
label = "tensor"
ranks = 2
[[strategy]]
name = "nccl-pipeline"
label = "pipeline"
ranks = 2
schedule = "1f1b"
micro_batches = 4
"""
rates = {}
for rep in range(3):
    for batch in (256, 2048):
        for label in ("tensor", "pipeline"):
            for variant, build in builds.items():
                d = f"{out}/{variant}-{label}-{batch}-{rep}"
                os.makedirs(d, exist_ok=True)
                open(f"{d}/ab.toml", "w").write(toml % d)
                r = subprocess.run([f"{build}/bin/nnpar", "train", f"{d}/ab.toml", "--quiet", "--strategy", label,
                                    "--set", f"train.batch_size={batch}"], capture_output=True, text=True, timeout=120)
                files = [f for f in os.listdir(d) if f.endswith(".json")]
                if r.returncode != 0 or not files:
                    print(variant, label, batch, "rc", r.returncode, r.stderr[-500:]); continue
                j = json.load(open(f"{d}/{files[0]}"))
                rate = statistics.median(e["samples_per_second"] for e in j["epochs"][1:])
                rates.setdefault((label, batch, variant), []).append(rate)
                print(f"rep {rep} {label} batch {batch} {variant}: {rate:,.0f} samples/s", flush=True)
print("\n| strategy | global batch | before (one-block softmax) | after (multi-block) | after / before |")
print("|---|---|---|---|---|")
for label in ("tensor", "pipeline"):
    for batch in (256, 2048):
        o = statistics.median(rates.get((label, batch, "old"), [0])); n = statistics.median(rates.get((label, batch, "new"), [0]))
        print(f"| nccl-{label} | {batch} | {o:,.0f} | {n:,.0f} | {n / o if o else 0:.3f}x |")
