#!/usr/bin/env python3
"""The GEMM kernels' register budget on sm_90, checked without a GPU.

Every GEMM block has 256 threads, and an SM has 65,536 registers. At 128 registers per
thread or fewer, two blocks fit on an SM: a product of up to 264 tiles runs in one wave on an
H100/H200 (layer 0's weight gradient of 784-256-256-26 has 200). One register more and only
one block fits, so such products take two waves. In round 6 an epilogue change did exactly
that (139 registers): every 1024-row step of `cuda` and `nccl-data` got 10-19 us slower
without any test noticing (docs/results/2026-11-27-data-parallel-6.md). This check compiles
the kernels with `ptxas -v` and fails when a GEMM kernel goes over the budget.

    python3 tests/kernel_registers.py --nvcc /usr/local/cuda/bin/nvcc --source kernels/cuda/mlp_kernels.cu \\
        --include include
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

BUDGET = 65536 // (256 * 2)  # registers per thread for 2 resident 256-thread blocks per SM


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
        return out.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return names


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nvcc", required=True)
    p.add_argument("--source", required=True, help="kernels/cuda/mlp_kernels.cu")
    p.add_argument("--include", required=True, help="the project's include/ folder")
    p.add_argument("--arch", default="90")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [args.nvcc, "-O3", "-DNDEBUG", "-std=c++17", f"--generate-code=arch=compute_{args.arch},code=sm_{args.arch}",
               "-I", args.include, "-Xptxas=-v", "-c", args.source, "-o", os.path.join(tmp, "kernels.o")]
        run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        print(" ".join(cmd), file=sys.stderr)
        print(run.stderr[-4000:], file=sys.stderr)
        return 2
    kernels = []  # (mangled name, registers)
    current = None
    for line in run.stderr.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m and current is not None:
            kernels.append((current, int(m.group(1))))
            current = None
    gemms = [(name, regs) for name, regs in kernels if "gemm_kernel" in name]
    if not gemms:
        print("no gemm_kernel found in the ptxas output: the check would pass vacuously", file=sys.stderr)
        return 1
    readable = demangle([name for name, _ in gemms])
    over = []
    for (name, regs), text in zip(gemms, readable):
        text = re.sub(r"nnpar::cuda::\(anonymous namespace\)::", "", text)
        text = text.split("(")[0]
        flag = "  OVER" if regs > BUDGET else ""
        print(f"{regs:4d} registers  {text}{flag}")
        if regs > BUDGET:
            over.append((regs, text))
    print(f"{len(gemms)} GEMM kernels, budget {BUDGET} registers per thread (2 blocks of 256 threads per SM)")
    for regs, text in over:
        print(f"FAIL: {text} uses {regs} registers: only one block per SM fits, and products of more than "
              f"132 tiles take two waves", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
