#!/usr/bin/python3
"""Predicted beside measured, for reports: runs `nnpar plan --compare-results DIR --json` and
hands back its rows (schema "nnpar-plan-compare/1", docs/plan.md), or prints them as Markdown.

As a module (e.g. from `nnpar report`):

    import plan_vs_measured
    data = plan_vs_measured.compare("build/bin/nnpar", "profiles/h200-fitted.json", "results/gpu-grid")
    by_file = plan_vs_measured.predictions_by_file(data)   # {result file: row}
    print(plan_vs_measured.markdown(data))

From the command line:

    python3 tools/plan_vs_measured.py --nnpar build/bin/nnpar --profile P DIR [--json]
"""
import argparse
import json
import subprocess
import sys


def compare(nnpar, profile, results_dir, extra_args=()):
    """The parsed JSON of `nnpar plan --compare-results`; raises RuntimeError with nnpar's message."""
    command = [nnpar, "plan", "--profile", profile, "--compare-results", results_dir, "--json", *extra_args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return json.loads(done.stdout)


def predictions_by_file(data):
    """Rows keyed by the result file (relative to the folder compared), skipped rows included."""
    return {row["file"]: row for row in data["rows"]}


def split_text(split):
    total = sum(split.values())
    if total <= 0:
        return "-"
    return "/".join(f"{100 * split[k] / total:.0f}" for k in ("compute", "communication", "idle"))


def markdown(data):
    lines = ["| run | strategy | workers | batch | measured samples/s | predicted | error | rank-0 split measured | predicted |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in data["rows"]:
        if "skipped" in row:
            continue
        p = row["predicted"]
        predicted_split = {"compute": p["compute_seconds"], "communication": p["communication_seconds"],
                           "idle": p["idle_seconds"]}
        lines.append(f"| {row['file']} | {row['plugin']} {row['configuration']} | {row['workers']} | {row['batch']} | "
                     f"{row['measured_samples_per_second']:,.0f} | {row['predicted_samples_per_second']:,.0f} | "
                     f"{100 * row['error']:+.0f}% | {split_text(row.get('measured_split', {}))} | "
                     f"{split_text(predicted_split)} |")
    s = data["summary"]
    lines.append("")
    lines.append(f"{s['predicted']} runs predicted, {s['within_15_percent']} within 15%; |error| mean "
                 f"{100 * s['mean_abs_error']:.0f}%, median {100 * s['median_abs_error']:.0f}%, "
                 f"worst {100 * s['worst_abs_error']:.0f}%")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="folder of nnpar result JSONs (searched recursively)")
    ap.add_argument("--nnpar", default="build/bin/nnpar")
    ap.add_argument("--profile", required=True)
    ap.add_argument("--json", action="store_true", help="print nnpar's JSON instead of a Markdown table")
    ap.add_argument("plan_args", nargs="*", help="more `nnpar plan` arguments, after --")
    args = ap.parse_args()
    try:
        data = compare(args.nnpar, args.profile, args.results, args.plan_args)
    except (RuntimeError, OSError) as e:
        print(f"plan_vs_measured: {e}", file=sys.stderr)
        return 2
    print(json.dumps(data, indent=2) if args.json else markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
