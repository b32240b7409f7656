#!/usr/bin/env python3
"""Medians over repeated bench/openmp_scaling.py runs, for goal status on a noisy host.

    python3 bench/openmp_repeats.py DIR [--goal-shape 1024x1024] [--torch-shape 128x256]

DIR holds the --json files of repeated, interleaved runs, named VARIANT-rN.json (N = the
repetition): VARIANT "serial" contributes nnpar serial (--modes "" --no-torch), "torch"
PyTorch (--modes "" --no-serial), any other name the openmp intra_op numbers of that run
(e.g. old-r1.json from one build, auto-r1.json from another). A VARIANT that starts with
"serial-" is a second serial baseline (e.g. serial-loaded: serial run while the other cores
are busy); each variant's speedup over it is printed as well. Prints, per shape and thread
count, each variant's median samples/s with its spread (min-max over the repetitions, and
the repetition count), then the goal ratios computed from medians only: speedup over the
median serial, and the ratio to PyTorch's best median at any thread count.
"""
import argparse
import glob
import json
import os
import re
import statistics
import sys


def load(directory):
    """{variant: {(batch, width): {threads or None: [samples/s per repetition]}}}"""
    values = {}
    for path in sorted(glob.glob(os.path.join(directory, "*-r*.json"))):
        m = re.match(r"(.+)-r(\d+)\.json$", os.path.basename(path))
        if not m:
            continue
        variant = m.group(1)
        with open(path) as f:
            run = json.load(f)
        for entry in run["results"]:
            shape = (entry["batch"], entry["width"])
            summary = entry["summary"]
            cell = values.setdefault(variant, {}).setdefault(shape, {})
            if variant == "serial" or variant.startswith("serial-"):
                points = {None: summary["serial"]}
            elif variant == "torch":
                points = {int(t): v for t, v in summary["torch"].items()}
            else:
                points = {int(t): v for t, v in summary["openmp"]["intra_op"].items()}
            for t, v in points.items():
                if v is not None and v == v:
                    cell.setdefault(t, []).append(v)
    return values


def median(xs):
    return statistics.median(xs) if xs else None


def cell(xs):
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:,.0f} (1 run)"
    return f"{median(xs):,.0f} ({min(xs):,.0f}-{max(xs):,.0f}, n={len(xs)})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir")
    parser.add_argument("--json", help="also write the medians to this file")
    args = parser.parse_args()
    values = load(args.dir)
    if not values:
        sys.exit(f"error: no VARIANT-rN.json files in {args.dir}")
    baselines = [v for v in sorted(values) if v.startswith("serial-")]
    variants = [v for v in sorted(values) if v not in ("serial", "torch") and v not in baselines]
    shapes = sorted({s for v in values.values() for s in v}, key=lambda s: (-s[0], -s[1]))
    out = {}
    for batch, width in shapes:
        shape = (batch, width)
        serial = values.get("serial", {}).get(shape, {}).get(None, [])
        torch = values.get("torch", {}).get(shape, {})
        threads = sorted({t for v in values.values() for t in v.get(shape, {}) if t is not None})
        torch_best = max(((median(xs), t) for t, xs in torch.items() if xs), default=(None, None))
        print(f"\n### batch {batch}, width {width}: median samples/s (min-max, n repetitions)\n")
        print(f"serial: {cell(serial)}; PyTorch's best median: "
              + (f"{torch_best[0]:,.0f} at {torch_best[1]} threads" if torch_best[0] else "-") + "\n")
        cols = variants + (["torch"] if torch else [])
        print("| threads | " + " | ".join(cols) + " |")
        print("|---:|" + "---:|" * len(cols))
        for t in threads:
            print(f"| {t} | " + " | ".join(cell(values.get(c, {}).get(shape, {}).get(t, [])) for c in cols) + " |")
        print("\n| threads | " + " | ".join(f"{v}: x serial / x torch best" for v in variants) + " |")
        print("|---:|" + "---:|" * len(variants))
        key = f"{batch}x{width}"
        out[key] = {"serial": median(serial), "serial_runs": serial, "torch_best": torch_best[0],
                    "torch_best_threads": torch_best[1], "variants": {}}
        for t in threads:
            row = []
            for v in variants:
                m = median(values.get(v, {}).get(shape, {}).get(t, []))
                s = m / median(serial) if m and serial else None
                p = m / torch_best[0] if m and torch_best[0] else None
                row.append(f"{s:.2f}x / {p:.2f}x" if s and p else (f"{s:.2f}x / -" if s else "-"))
                out[key]["variants"].setdefault(v, {})[t] = {"median": m, "runs": values.get(v, {}).get(shape, {}).get(t, []),
                                                             "x_serial": s, "x_torch_best": p}
            print(f"| {t} | " + " | ".join(row) + " |")
        for b in baselines:
            base = values[b].get(shape, {}).get(None, [])
            if not base:
                continue
            out[key][b] = {"median": median(base), "runs": base}
            print(f"\n{b}: {cell(base)} ({median(base) / median(serial):.3f}x serial)" if serial else f"\n{b}: {cell(base)}")
            print("\n| threads | " + " | ".join(f"{v}: x {b}" for v in variants) + " |")
            print("|---:|" + "---:|" * len(variants))
            for t in threads:
                row = []
                for v in variants:
                    m = median(values.get(v, {}).get(shape, {}).get(t, []))
                    row.append(f"{m / median(base):.2f}x" if m else "-")
                    if m:
                        out[key]["variants"].setdefault(v, {}).setdefault(t, {})[f"x_{b}"] = m / median(base)
                print(f"| {t} | " + " | ".join(row) + " |")
        if torch:
            out[key]["torch"] = {t: {"median": median(xs), "runs": xs} for t, xs in torch.items()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
