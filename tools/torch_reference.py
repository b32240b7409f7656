#!/usr/bin/env python3
"""PyTorch reference for nnpar's MLP (in the spirit of llm.c's test_gpt2).

Reads a safetensors file written by tests/test_torch_reference.cpp holding
  layers.<i>.weight [out,in], layers.<i>.bias [out]   the initial parameters
  x       [steps, batch, features]                     one input batch per SGD step
  labels  [steps, batch]                               class indices, stored as F32
  __metadata__ {"lr": "...", "steps": "..."}
builds the same network in PyTorch (Linear, Sigmoid between Linears, mean cross-entropy,
plain SGD), runs `steps` steps and writes, all float32:
  logits                 [batch, classes]   first forward pass
  loss                   [1]                first mean loss
  losses                 [steps]            mean loss of every step (before its update)
  grad.layers.<i>.*                         gradients of step 1
  final.layers.<i>.*                        parameters after all steps

Usage: torch_reference.py INPUT.safetensors OUTPUT.safetensors
The python `safetensors` package is not needed: the format is small enough to read and
write here with json + struct + numpy.
"""
import json
import os
import struct
import sys

import numpy as np
import torch


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    body = data[8 + n:]
    tensors = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name}: dtype {info['dtype']} not supported")
        begin, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[begin:end], dtype="<f4").reshape(info["shape"]).copy()
    return tensors, metadata


def write_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        chunks.append(a.tobytes())
        offset += a.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)


class Mlp(torch.nn.Module):
    # A ModuleList (not nn.Sequential) so parameter names are layers.<i>.weight with i
    # counting Linear layers, exactly nnpar's names.
    def __init__(self, sizes):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = torch.sigmoid(x)
        return x


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tensors, metadata = read_safetensors(sys.argv[1])
    lr = float(metadata["lr"])
    steps = int(metadata["steps"])

    count = 0
    while f"layers.{count}.weight" in tensors:
        count += 1
    sizes = [tensors["layers.0.weight"].shape[1]] + [
        tensors[f"layers.{i}.weight"].shape[0] for i in range(count)]
    model = Mlp(sizes)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(tensors[name]))

    x = torch.from_numpy(tensors["x"])
    labels = torch.from_numpy(tensors["labels"]).long()
    assert x.shape[0] == steps and labels.shape[0] == steps

    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()  # mean over the batch
    out = {}
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        logits = model(x[step])
        loss = loss_fn(logits, labels[step])
        loss.backward()
        losses.append(loss.item())
        if step == 0:
            out["logits"] = logits.detach().numpy()
            out["loss"] = np.array([loss.item()], dtype=np.float32)
            for name, p in model.named_parameters():
                out["grad." + name] = p.grad.numpy().copy()
        optimizer.step()
    out["losses"] = np.array(losses, dtype=np.float32)
    for name, p in model.named_parameters():
        out["final." + name] = p.detach().numpy().copy()
    write_safetensors(sys.argv[2], out)
    print(f"torch {torch.__version__}: {sizes}, {steps} steps, lr {lr}, "
          f"loss {losses[0]:.6f} -> {losses[-1]:.6f}")


if __name__ == "__main__":
    main()
