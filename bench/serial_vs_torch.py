#!/usr/bin/env python3
"""Serial nnpar vs PyTorch on one CPU thread: the same MLP, data, batch and learning rate,
side by side in one run.

    python3 bench/serial_vs_torch.py [--build build] [--epochs 2] [--batch 128] [--layers 784,256,256,26]

Both train on the letters training set (NNPAR_DATA or ../shared/data) from the same initial
weights (nnpar writes them as safetensors, PyTorch loads them) in the same sample order, and
report samples/s per epoch; the first epoch of each is a warm-up and not counted when
--epochs > 1. Prints a table and the ratio nnpar / PyTorch; --json FILE saves the numbers.
"""
import argparse
import gzip
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from torch_reference import read_safetensors  # noqa: E402  (our own small reader)


def read_idx(path):
    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def data_dir():
    if os.environ.get("NNPAR_DATA"):
        return os.environ["NNPAR_DATA"]
    return os.path.join(ROOT, "..", "shared", "data")


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_nnpar(args, workdir, layers):
    config = os.path.join(workdir, "bench.toml")
    with open(config, "w") as f:
        f.write(f"""[data]
dir = "{data_dir()}"
test_limit = 2000
[model]
layers = [{", ".join(map(str, layers))}]
[train]
epochs = {args.epochs}
batch_size = {args.batch}
lr = {args.lr}
shuffle = false
eval_every = 0
[output]
dir = "{workdir}/results"
[[strategy]]
name = "serial"
""")
    init = os.path.join(workdir, "init.safetensors")
    # Zero epochs would be neater; one tiny run writes the initial weights PyTorch loads.
    subprocess.run([os.path.join(args.build, "bin", "nnpar"), "train", config, "--quiet",
                    "--set", "train.epochs=1", "--set", "data.limit=1", "--set", "train.lr=1e-30",
                    "--save-checkpoint", init, "--set", f"output.dir={workdir}/init-results"],
                   check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run([os.path.join(args.build, "bin", "nnpar"), "train", config, "--quiet"],
                         check=True, capture_output=True, text=True).stdout
    results = [l.split("results: ", 1)[1].strip() for l in out.splitlines() if l.startswith("results: ")]
    with open(results[0]) as f:
        run = json.load(f)
    return init, [e["samples_per_second"] for e in run["epochs"]], [e["loss"] for e in run["epochs"]]


def run_torch(args, init, layers):
    import torch
    torch.set_num_threads(1)
    images = read_idx(os.path.join(data_dir(), "letters-train-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir(), "letters-train-labels-idx1-ubyte.gz")).astype(np.int64) - 1
    x_all = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    y_all = torch.from_numpy(labels)
    mods = []
    for i in range(len(layers) - 1):
        mods.append(torch.nn.Linear(layers[i], layers[i + 1]))
        if i + 2 < len(layers):
            mods.append(torch.nn.Sigmoid())
    model = torch.nn.Sequential(*mods)
    tensors = read_safetensors(init)[0]
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for i, lin in enumerate(linears):
            lin.weight.copy_(torch.from_numpy(np.array(tensors[f"layers.{i}.weight"])))
            lin.bias.copy_(torch.from_numpy(np.array(tensors[f"layers.{i}.bias"])))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = len(x_all)
    rates, losses = [], []
    for _ in range(args.epochs):
        start = time.perf_counter()
        total = 0.0
        for b in range(0, n, args.batch):
            x = x_all[b:b + args.batch]
            y = y_all[b:b + args.batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
        rates.append(n / (time.perf_counter() - start))
        losses.append(total / n)
    return rates, losses, torch.__version__


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--layers", default="784,256,256,26")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    layers = [int(v) for v in args.layers.split(",")]
    with tempfile.TemporaryDirectory() as workdir:
        init, nnpar_rates, nnpar_losses = run_nnpar(args, workdir, layers)
        torch_rates, torch_losses, torch_version = run_torch(args, init, layers)
    counted = slice(1, None) if args.epochs > 1 else slice(0, None)
    nn = float(np.median(nnpar_rates[counted]))
    pt = float(np.median(torch_rates[counted]))
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; torch {torch_version}, 1 thread")
    print(f"MLP {args.layers}, batch {args.batch}, lr {args.lr}, {args.epochs} epochs of 124,800 samples"
          f" (median of epochs {'2..' if args.epochs > 1 else '1..'}{args.epochs})")
    print(f"{'':12}{'samples/s':>12}{'per epoch':>12}   loss by epoch")
    print(f"{'nnpar serial':12}{nn:12.0f}{124800 / nn:11.2f}s   " + " ".join(f"{l:.4f}" for l in nnpar_losses))
    print(f"{'PyTorch':12}{pt:12.0f}{124800 / pt:11.2f}s   " + " ".join(f"{l:.4f}" for l in torch_losses))
    print(f"ratio nnpar / PyTorch: {nn / pt:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"layers": layers, "batch": args.batch, "lr": args.lr, "epochs": args.epochs,
                       "nnpar_samples_per_second": nnpar_rates, "torch_samples_per_second": torch_rates,
                       "nnpar_loss": nnpar_losses, "torch_loss": torch_losses, "ratio": nn / pt,
                       "cpu": cpu_model(), "torch": torch_version}, f, indent=2)


if __name__ == "__main__":
    main()
