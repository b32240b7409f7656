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

`--refit pending_slowdown` (or overlap_share) estimates a term the profile has measured too,
for where the measurement does not explain the runs (2026-11-26-plan-validation-3.md: the
micro-benchmark on 4 x H100 measured pending_slowdown 1.00 while the pipeline runs need
~1.25); the measured value is kept beside the estimate under "estimated".
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
    ap.add_argument("--refit", action="append", default=[], choices=["overlap_share", "pending_slowdown"],
                    help="estimate this term even where the profile measured it (repeatable)")
    a = ap.parse_args()
    if os.path.exists(a.out) and not a.overwrite:
        sys.exit(f"{a.out} exists (--overwrite replaces it)")
    with open(a.profile) as f:
        base = json.load(f)
    nccl = base.get("comm", {}).get("nccl")
    if nccl is None:
        sys.exit(f"{a.profile}: no comm.nccl section")
    todo = [k for k in ("overlap_share", "pending_slowdown") if k not in nccl or k in a.refit]
    if not todo:
        sys.exit(f"{a.profile}: comm.nccl.overlap_share and pending_slowdown are already calibrated; "
                 "nothing to estimate (--refit KEY estimates one anyway)")
    measured = {k: nccl[k] for k in ("overlap_share", "pending_slowdown") if k in nccl}
    folders = sorted(os.path.join(a.results, d) for d in os.listdir(a.results)
                     if d.endswith("-g2") and os.path.isdir(os.path.join(a.results, d)))
    grids = {"overlap_share": ([i / 20 for i in range(21)], "data-sync-2"),
             "pending_slowdown": ([1 + i / 20 for i in range(13)], "pipeline-2")}
    base["estimated"] = {
        "by": "tools/estimate_profile_terms.py",
        "from_profile": a.profile,
        "note": "the terms below are NOT measured: each is the grid value with the smallest worst |error| over "
                "the 2-GPU runs listed (overlap_share first); nnpar calibrate --gpu measures them",
    }
    if "pending_slowdown" in todo and "pending_slowdown_by_bytes" in nccl:
        # The model prefers the per-size table to the single number: the estimate replaces both.
        measured["pending_slowdown_by_bytes"] = nccl.pop("pending_slowdown_by_bytes")
    found = []
    for key in todo:  # overlap_share first: the pipeline runs do not depend on it, the sync runs do
        grid, label = grids[key]
        value, worst, errs = best(a.nnpar, base, key, grid, folders, label)
        base["comm"]["nccl"][key] = value
        entry = {"value": value, "worst_abs_error": worst, "runs": sorted(errs)}
        if key in measured:
            entry["measured"] = measured[key]
        if key == "pending_slowdown" and "pending_slowdown_by_bytes" in measured:
            entry["measured_by_bytes"] = measured["pending_slowdown_by_bytes"]
        base["estimated"]["comm.nccl." + key] = entry
        found.append(f"{key} {value} (worst |error| {100 * worst:.0f}% on {len(errs)} runs"
                     + (f"; measured {measured[key]:.3g}" if key in measured else "") + ")")
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(base, f, indent=1)
        f.write("\n")
    os.replace(tmp, a.out)
    print(", ".join(found) + f" -> {a.out}")


if __name__ == "__main__":
    main()
