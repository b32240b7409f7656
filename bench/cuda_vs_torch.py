#!/usr/bin/env python3
"""nnpar's `cuda` strategy vs PyTorch (eager, and the training step captured in a CUDA graph)
on one GPU: the same MLP, initial weights, data and batch size, side by side in one run.

    python3 bench/cuda_vs_torch.py [--build build] [--batches 1,32,128,1024] [--widths 256,1024]
                                   [--epochs 3] [--max-steps 20000] [--precision fp32|tf32|bf16]
                                   [--variant graph|resident|auto] [--json FILE]

Model: 784-W-W-26 (sigmoid hidden layers, softmax cross-entropy, plain SGD) for each width W.
nnpar runs through `nnpar train CONFIG --quiet --strategy cuda` and its results JSON; PyTorch
keeps the whole training set on the GPU and gathers each batch there. The first epoch of each
is a warm-up and not counted (median of the rest). An epoch is the whole training set
(124,800 samples) or --max-steps batches, whichever is smaller (batch 1 would otherwise take
minutes in eager PyTorch). --precision tf32 runs nnpar with strategy.cuda.precision=tf32 and
PyTorch with torch.backends.cuda.matmul.allow_tf32 (both: TF32 tensor-core products, fp32
sums). --precision bf16 runs nnpar with precision=bf16 (BF16 operands, fp32 sums, fp32 values
in memory) and PyTorch's forward and loss under torch.autocast(bfloat16), its nearest mode
(autocast also keeps the activations in BF16). The "% fp32 peak" column still divides by the
fp32 peak. FLOP/s counts 2 FLOPs per multiply-add: forward + weight gradient
+ input gradient = 6 x weights per sample, less the first layer's input gradient.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from torch_reference import read_safetensors  # noqa: E402
from serial_vs_torch import read_idx, data_dir  # noqa: E402


def write_config(path, args, layers, batch, samples, workdir):
    with open(path, "w") as f:
        f.write(f"""[data]
dir = "{data_dir()}"
limit = {samples}
test_limit = 100
[model]
layers = [{", ".join(map(str, layers))}]
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


def run_nnpar(args, workdir, layers, batch, samples):
    config = os.path.join(workdir, f"bench-{layers[1]}-{batch}.toml")
    write_config(config, args, layers, batch, samples, workdir)
    nnpar = os.path.join(args.build, "bin", "nnpar")
    init = os.path.join(workdir, f"init-{layers[1]}.safetensors")
    if not os.path.exists(init):
        # A one-sample run with a vanishing learning rate writes the initial weights for PyTorch.
        subprocess.run([nnpar, "train", config, "--quiet", "--strategy", "serial", "--set", "train.epochs=1",
                        "--set", "data.limit=1", "--set", "train.lr=1e-30", "--save-checkpoint", init,
                        "--set", f"output.dir={workdir}/init-results"], check=True, stdout=subprocess.DEVNULL)
    cmd = [nnpar, "train", config, "--quiet", "--strategy", "cuda", "--set", f"strategy.cuda.precision={args.precision}"]
    if args.variant:
        cmd += ["--set", f"strategy.cuda.variant={args.variant}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = [l.split("results: ", 1)[1].strip() for l in out.splitlines() if l.startswith("results: ")][0]
    with open(result) as f:
        run = json.load(f)
    return init, [e["samples_per_second"] for e in run["epochs"]], run.get("device", "")


def torch_model(layers, init):
    import torch
    mods = []
    for i in range(len(layers) - 1):
        mods.append(torch.nn.Linear(layers[i], layers[i + 1]))
        if i + 2 < len(layers):
            mods.append(torch.nn.Sigmoid())
    model = torch.nn.Sequential(*mods).cuda()
    tensors = read_safetensors(init)[0]
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for i, lin in enumerate(linears):
            lin.weight.copy_(torch.from_numpy(np.array(tensors[f"layers.{i}.weight"])))
            lin.bias.copy_(torch.from_numpy(np.array(tensors[f"layers.{i}.bias"])))
    return model


def autocast(args):
    """BF16 autocast for --precision bf16 (no weight-cast cache: the step may be captured)."""
    import torch
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.precision == "bf16", cache_enabled=False)


def run_torch(args, layers, init, batch, samples, x_all, y_all, graph):
    import torch
    model = torch_model(layers, init)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    steps = samples // batch  # full batches only
    rates = []
    if not graph:
        for _ in range(args.epochs):
            perm = torch.randperm(samples, device="cuda")
            total = torch.zeros((), device="cuda")
            torch.cuda.synchronize()
            start = time.perf_counter()
            for s in range(steps):
                idx = perm[s * batch:(s + 1) * batch]
                opt.zero_grad(set_to_none=True)
                with autocast(args):
                    loss = loss_fn(model(x_all[idx]), y_all[idx])
                loss.backward()
                opt.step()
                total += loss.detach()
            torch.cuda.synchronize()
            rates.append(steps * batch / (time.perf_counter() - start))
        return rates
    # The documented whole-step capture: warm up on a side stream, then capture forward,
    # backward and the optimizer step; the batch is gathered inside the graph from a static
    # index tensor that is refilled before each replay.
    static_idx = torch.arange(batch, device="cuda")
    total = torch.zeros((), device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            with autocast(args):
                loss = loss_fn(model(x_all[static_idx]), y_all[static_idx])
            loss.backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    opt.zero_grad(set_to_none=True)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        with autocast(args):
            loss = loss_fn(model(x_all[static_idx]), y_all[static_idx])
        loss.backward()
        opt.step()
        total += loss.detach()
    for _ in range(args.epochs):
        perm = torch.randperm(samples, device="cuda")
        torch.cuda.synchronize()
        start = time.perf_counter()
        for s in range(steps):
            static_idx.copy_(perm[s * batch:(s + 1) * batch])
            g.replay()
        torch.cuda.synchronize()
        rates.append(steps * batch / (time.perf_counter() - start))
    return rates


def flops_per_sample(layers):
    macs = [layers[i] * layers[i + 1] for i in range(len(layers) - 1)]
    return 2 * (3 * sum(macs) - macs[0])


def median_counted(rates):
    return float(np.median(rates[1:] if len(rates) > 1 else rates))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--batches", default="1,32,128,1024")
    parser.add_argument("--widths", default="256,1024")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=20000, help="at most this many batches per epoch")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--peak-tflops", type=float, default=66.9, help="fp32 (non-tensor) peak; H100 SXM: 66.9")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default="fp32",
                        help="products of both sides: fp32, or TF32 / BF16 tensor cores")
    parser.add_argument("--variant", help="strategy.cuda.variant for nnpar (graph, resident, auto, ...; "
                        "default: the plugin's default)")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    import torch
    torch.backends.cuda.matmul.allow_tf32 = args.precision == "tf32"
    images = read_idx(os.path.join(data_dir(), "letters-train-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir(), "letters-train-labels-idx1-ubyte.gz")).astype(np.int64) - 1
    x_all = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0).cuda()
    y_all = torch.from_numpy(labels).cuda()
    gpu = torch.cuda.get_device_name(0)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for width in [int(w) for w in args.widths.split(",")]:
            layers = [784, width, width, 26]
            for batch in [int(b) for b in args.batches.split(",")]:
                samples = min(len(images), args.max_steps * batch)
                init, nn_rates, device = run_nnpar(args, workdir, layers, batch, samples)
                row = {"width": width, "batch": batch, "samples": samples, "nnpar": nn_rates, "device": device}
                if not args.no_torch:
                    row["torch_eager"] = run_torch(args, layers, init, batch, samples, x_all, y_all, False)
                    row["torch_graph"] = run_torch(args, layers, init, batch, samples, x_all, y_all, True)
                rows.append(row)
                print(f"  width {width} batch {batch}: nnpar {median_counted(nn_rates):.0f} samples/s", flush=True)
    print(f"\nGPU: {gpu}; torch {torch.__version__}; precision {args.precision}; {args.epochs} epochs, median of epochs 2..{args.epochs}; "
          f"fp32 peak {args.peak_tflops} TFLOP/s\n")
    print("| width | batch | samples/epoch | nnpar cuda samples/s | epoch (124,800) | torch eager | torch graph "
          "| vs eager | vs graph | nnpar TFLOP/s | % fp32 peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        nn = median_counted(r["nnpar"])
        tf = nn * flops_per_sample([784, r["width"], r["width"], 26]) / 1e12
        eager = median_counted(r["torch_eager"]) if "torch_eager" in r else float("nan")
        graph = median_counted(r["torch_graph"]) if "torch_graph" in r else float("nan")
        r.update({"nnpar_median": nn, "torch_eager_median": eager, "torch_graph_median": graph, "nnpar_tflops": tf})
        print(f"| {r['width']} | {r['batch']} | {r['samples']} | {nn:,.0f} | {124800 / nn * 1e3:.1f} ms | {eager:,.0f} "
              f"| {graph:,.0f} | {nn / eager:.1f}x | {nn / graph:.1f}x | {tf:.2f} | {100 * tf / args.peak_tflops:.1f}% |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gpu": gpu, "torch": torch.__version__, "precision": args.precision, "epochs": args.epochs,
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
