#!/usr/bin/python3
"""Estimates the two GPU cost-model terms an older calibration lacks from 2-GPU training runs,
and writes a copy of the profile with them (docs/results/2026-11-26-plan-validation-2.md).

    python3 tools/estimate_profile_terms.py --nnpar build/bin/nnpar \\
        --profile profiles/h200-calibrated.json --results docs/results/raw/gpu-grid-4xH200 \\
        --out profiles/h200-calibrated-estimated.json

- comm.nccl.overlap_share (how much of an allreduce hidden behind the backward still costs it):
  the value in 0, 0.05, ..., 1 whose worst |error| over the 2-GPU `nccl-data` sync runs
  (folders *-g2, label data-sync-2) is smallest;
- comm.nccl.pending_slowdown (pipeline compute beside posted NCCL receives): the same over
  1, 1.05, ..., 1.6 and the 2-GPU `nccl-pipeline` runs (label pipeline-2), with the
  overlap_share found first.

Only 2-GPU runs are used, so the 4-GPU runs of the same folder stay a validation set. These
are estimates from training runs, not measurements: `nnpar calibrate --gpu` measures both
(nnpar-calibrate-gpu nccl), and a profile that has them needs no estimate. The output says
which runs and values it used under "estimated".
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile


def errors(nnpar, profile, folder, label):
    done = subprocess.run([nnpar, "plan", "--profile", profile, "--compare-results", folder, "--json"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"nnpar plan --compare-results {folder} failed: {done.stderr.strip() or done.stdout.strip()}")
    return {os.path.join(folder, r["file"]): r["error"] for r in json.loads(done.stdout)["rows"]
            if r.get("label") == label and "error" in r}


def best(nnpar, base, key, grid, folders, label):
    scores = []
    with tempfile.TemporaryDirectory() as tmp:
        trial = os.path.join(tmp, "profile.json")
        for value in grid:
            p = copy.deepcopy(base)
            p["comm"]["nccl"][key] = value
            with open(trial, "w") as f:
                json.dump(p, f)
            errs = {}
            for folder in folders:
                errs.update(errors(nnpar, trial, folder, label))
            if not errs:
                raise RuntimeError(f"no run labelled {label} under {folders}")
            scores.append((max(abs(e) for e in errs.values()), value, errs))
    worst, value, errs = min(scores, key=lambda s: (s[0], s[1]))
    return value, worst, errs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nnpar", default="build/bin/nnpar")
    ap.add_argument("--profile", required=True)
    ap.add_argument("--results", required=True, help="folder of run folders; the *-g2 ones are used")
    ap.add_argument("--out", required=True)
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args()
    if os.path.exists(a.out) and not a.overwrite:
        sys.exit(f"{a.out} exists (--overwrite replaces it)")
    with open(a.profile) as f:
        base = json.load(f)
    nccl = base.get("comm", {}).get("nccl")
    if nccl is None:
        sys.exit(f"{a.profile}: no comm.nccl section")
    for key in ("overlap_share", "pending_slowdown"):
        if key in nccl:
            sys.exit(f"{a.profile}: comm.nccl.{key} is already calibrated; nothing to estimate")
    folders = sorted(os.path.join(a.results, d) for d in os.listdir(a.results)
                     if d.endswith("-g2") and os.path.isdir(os.path.join(a.results, d)))
    share, w1, e1 = best(a.nnpar, base, "overlap_share", [i / 20 for i in range(21)], folders, "data-sync-2")
    base["comm"]["nccl"]["overlap_share"] = share
    slow, w2, e2 = best(a.nnpar, base, "pending_slowdown", [1 + i / 20 for i in range(13)], folders, "pipeline-2")
    base["comm"]["nccl"]["pending_slowdown"] = slow
    base["estimated"] = {
        "by": "tools/estimate_profile_terms.py",
        "from_profile": a.profile,
        "note": "comm.nccl.overlap_share and comm.nccl.pending_slowdown are NOT measured: each is the grid "
                "value with the smallest worst |error| over the 2-GPU runs listed; nnpar calibrate --gpu measures them",
        "comm.nccl.overlap_share": {"value": share, "worst_abs_error": w1, "runs": sorted(e1)},
        "comm.nccl.pending_slowdown": {"value": slow, "worst_abs_error": w2, "runs": sorted(e2)},
    }
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(base, f, indent=1)
        f.write("\n")
    os.replace(tmp, a.out)
    print(f"overlap_share {share} (worst |error| {100 * w1:.0f}% on {len(e1)} runs), "
          f"pending_slowdown {slow} (worst |error| {100 * w2:.0f}% on {len(e2)} runs) -> {a.out}")


if __name__ == "__main__":
    main()
