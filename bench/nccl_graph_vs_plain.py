#!/usr/bin/env python3
"""python3 bench/nccl_graph_vs_plain.py [--batch 128,1024] [--epochs 4]

nccl-data with graph = true vs graph = false in the same `nnpar compare` (same machine,
same global batch, `cuda` as the parity reference), via bench/data_parallel_gpu.py's run_compare."""
import argparse, os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data_parallel_gpu as dp

p = argparse.ArgumentParser()
p.add_argument("--batch", default="128,1024")
p.add_argument("--epochs", type=int, default=4)
p.add_argument("--out", default="results/graph-vs-plain")
a = p.parse_args()
args = argparse.Namespace(build="build", test_limit=0, width=256, epochs=a.epochs, lr=1.0, target=0.70)
for b in [int(x) for x in a.batch.split(",")]:
    single, _ = dp.run_compare(args, os.path.join(a.out, f"b{b}-single"), b, [("cuda", 'name = "cuda"')])
    print(f"cuda on 1 GPU at batch {b}: {single['cuda']['rate']:,.0f} samples/s", flush=True)
    strategies = [("cuda", 'name = "cuda"')]
    for g in ("false", "true"):
        base = f'name = "nccl-data"\nranks = 2\ngraph = {g}\n'
        strategies += [(f"sync-graph-{g}", base + 'mode = "sync"'),
                       (f"sync-no-overlap-graph-{g}", base + 'mode = "sync"\noverlap = false'),
                       (f"local-sgd-1-graph-{g}", base + 'mode = "local_sgd"\nperiod = 1'),
                       (f"local-sgd-64-graph-{g}", base + 'mode = "local_sgd"\nperiod = 64')]
    res, _ = dp.run_compare(args, os.path.join(a.out, f"b{b}"), 2 * b, strategies)
    print(f"## per-GPU batch {b} (global {2 * b})")
    for label, r in res.items():
        print(f"{label:28s} {r['rate']:>12,.0f} samples/s {r['rate'] / single['cuda']['rate']:.2f}x  acc {100 * r['acc']:.2f}%  {r['verdict']}  epochs "
              + " ".join(f"{e['samples_per_second']:,.0f}" for e in r["epochs"]), flush=True)
