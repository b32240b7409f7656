#!/usr/bin/python3
"""Builds an H200 profile for `nnpar plan` from measurements already in docs/results, for use
until `nnpar calibrate --gpu` has run on a GPU machine (docs/plan.md, "The fitted H200 profile").

What comes from measurements (fit set; none of it is in docs/results/raw/gpu-grid-4xH200, the
validation set):
  - kernel latency in a CUDA graph and the per-FLOP / per-element cost of our three products:
    least squares (relative error) on the single-GPU `cuda` strategy's step time at 8 shapes
    (784-W-W-26, W = 256 / 1024, batch 1 / 32 / 128 / 1024), from
    raw/2026-11-26-h200-cuda_vs_torch.json, with the step model nnpar plan uses for `cuda`:
        step = (2L+1) * latency + sum over the 3L-1 products of (flops * f + elements * e)
    (latencies add along the dependency chain; arithmetic and memory traffic share the GPU);
  - NCCL allreduce vs size on 2 ranks: raw/2026-11-26-h200x2-allreduce.txt.
What is assumed (stated in the profile's "assumptions"): the extra latency of a plain launch over
a graph node, the host's cost per launch and per NCCL call, NCCL send/recv latency and bandwidth,
HBM bandwidth for the streaming kernels.

    python3 tools/fit_gpu_profile.py --out profiles/h200-fitted.json
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RAW = os.path.join(HERE, "..", "docs", "results", "raw")


def solve(a, b):
    """Gaussian elimination with partial pivoting for a small dense system."""
    n = len(a)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                for k in range(c, n + 1):
                    m[r][k] -= f * m[c][k]
    return [m[i][n] / m[i][i] for i in range(n)]


def least_squares(rows, target):
    n = len(rows[0])
    ata = [[sum(r[i] * r[j] for r in rows) for j in range(n)] for i in range(n)]
    atb = [sum(r[i] * t for r, t in zip(rows, target)) for i in range(n)]
    return solve(ata, atb)


def step_features(layers, batch):
    """(latencies on the critical path, total flops, total elements) of one cuda step."""
    L = len(layers) - 1
    flops = elements = 0.0
    for i in range(L):
        fin, fout = layers[i], layers[i + 1]
        products = 3 if i > 0 else 2  # forward, weight gradient, input gradient (not layer 0)
        flops += products * 2.0 * batch * fin * fout
        elements += products * (batch * fin + batch * fout + fin * fout)
    return 2 * L + 1, flops, elements


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()
    if os.path.exists(args.out) and not args.overwrite:
        sys.exit(f"{args.out} exists; pass --overwrite to replace it")

    with open(os.path.join(RAW, "2026-11-26-h200-cuda_vs_torch.json")) as f:
        cuda = json.load(f)
    rows, target, points = [], [], []
    for r in cuda["rows"]:
        layers = [784, r["width"], r["width"], 26]
        step = r["batch"] / r["nnpar_median"]
        lat, fl, el = step_features(layers, r["batch"])
        rows.append([lat / step, fl / step, el / step])  # relative error
        target.append(1.0)
        points.append((layers, r["batch"], step))
    latency, per_flop, per_element = least_squares(rows, target)
    if min(latency, per_flop, per_element) < 0:
        sys.exit(f"fit gave a negative coefficient: {latency}, {per_flop}, {per_element}")
    print(f"graph latency {latency * 1e6:.2f} us, {1e-9 / per_flop / 1e3:.1f} TFLOP/s effective, "
          f"{4e-9 / per_element:.0f} GB/s effective")
    for layers, batch, step in points:
        lat, fl, el = step_features(layers, batch)
        model = lat * latency + fl * per_flop + el * per_element
        print(f"  {'-'.join(map(str, layers))} batch {batch:5d}: measured {step * 1e6:8.1f} us, "
              f"fit {model * 1e6:8.1f} us ({100 * (model / step - 1):+.0f}%)")

    allreduce = []
    with open(os.path.join(RAW, "2026-11-26-h200x2-allreduce.txt")) as f:
        section = None
        for line in f:
            if "allreduce" in line:
                section = line.split()[0]
                continue
            parts = line.split()
            if section == "nccl" and len(parts) == 5 and parts[0].isdigit():
                allreduce.append({"ranks": 2, "bytes": int(parts[1]), "seconds": float(parts[2]) * 1e-6})

    # Assumptions (no measurement in the repository isolates them).
    plain_extra = 1.0e-6   # a plain launch's device-side gap over a graph node
    launch = 5.0e-6        # host cost to enqueue one kernel, cudaLaunchKernel and our wrapper
    nccl_call = 8.0e-6     # host cost to enqueue one NCCL operation through our communicator
    p2p_call, p2p_bw = 15.0e-6, 150e9  # NCCL send/recv over NVLink: latency floor, bandwidth
    hbm = 3.5e12           # achievable HBM3e bandwidth of the streaming kernels

    def stream(bytes_per_element):
        n, out = 1, []
        while n <= 2 ** 31:
            out.append({"elements": n, "seconds": latency + n * bytes_per_element / hbm})
            n *= 2
        return out

    fit = {"call_s": latency, "per_flop_s": per_flop, "per_element_s": per_element}
    profile = {
        "schema": "nnpar-profile/1",
        "source": "fitted by tools/fit_gpu_profile.py from docs/results (single-GPU cuda step times, "
                  "2-GPU NCCL allreduce); NOT calibrated: replace with `nnpar calibrate --gpu` output",
        "machine": {"gpu": cuda["gpu"], "note": "H200 of the 2026-11-26 leases (1 and 2 GPU hosts)"},
        "assumptions": {
            "plain_latency_s": "graph latency + 1 us",
            "launch_s": "5 us per plain kernel launch (host)",
            "comm.nccl.host_call_s": "8 us per NCCL operation (host)",
            "comm.nccl.p2p_fit": "15 us + bytes / 150 GB/s",
            "streams": "latency + bytes / 3.5 TB/s (HBM3e)",
            "count": "4 GPUs per node, as the validation machine",
        },
        "gpu": {
            "name": cuda["gpu"],
            "count": 4,
            "memory_bytes": 141e9,
            "graph_latency_s": latency,
            "plain_latency_s": latency + plain_extra,
            "launch_s": launch,
            "kernels": {"forward": {"fit": fit}, "weight_grad": {"fit": fit}, "input_grad": {"fit": fit}},
            "streams": {
                "softmax_xent": stream(8.0),
                "sgd": stream(12.0),
                "sgd_momentum": stream(20.0),
                "scale": stream(8.0),
                "copy": stream(8.0),
            },
        },
        "comm": {
            "nccl": {
                "allreduce": allreduce,
                "p2p_fit": {"call_s": p2p_call, "bytes_per_s": p2p_bw},
                "host_call_s": nccl_call,
            }
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(profile, f, indent=1)
        f.write("\n")
    os.replace(tmp, args.out)
    print(f"profile: {args.out}")


if __name__ == "__main__":
    main()
