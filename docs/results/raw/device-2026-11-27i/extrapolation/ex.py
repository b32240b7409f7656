"""The extrapolation table of plan-validation-7: python3 ex.py PROFILE (from the repository root)."""
import json, os, subprocess, sys
HERE = os.path.dirname(os.path.abspath(__file__))
prof = sys.argv[1]
rows = [("deep", 1024, "ib-ndr"), ("deep", 1024, "100gbe"), ("deep", 128, "ib-ndr"), ("deep", 128, "100gbe"), ("small", 128, "ib-ndr"), ("small", 1024, "ib-ndr")]
print("| model, per-GPU batch, network | 1 GPU | 8 GPUs | 64 | 1024 | recommended at 1024 |")
print("|---|---|---|---|---|---|")
for model, b, net in rows:
    cmd = ["build/bin/nnpar", "plan", os.path.join(HERE, f"{model}.toml"), "--profile", prof, "--workers", "1,8,64,1024",
           "--batch-per-worker", str(b), "--per-node", "8", "--intra-node", "nvlink", "--inter-node", net, "--json"]
    j = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    by = {w["workers"]: w for w in j["worker_counts"]}
    one = max(c["samples_per_second"] for c in by[1]["candidates"] if c["exact"])
    cells = []
    for n in (8, 64, 1024):
        rec = next(c for c in by[n]["candidates"] if c["label"] == by[n]["recommended"])
        cells.append(f"{rec['samples_per_second'] / 1e6:,.1f}M ({100 * rec['samples_per_second'] / (n * one):.0f}%)")
    rec = next(c for c in by[1024]["candidates"] if c["label"] == by[1024]["recommended"])
    split = f"{100 * rec['communication_seconds'] / rec['step_seconds']:.0f}% communication"
    best_approx = max((c for c in by[1024]["candidates"] if not c["exact"]), key=lambda c: c["samples_per_second"], default=None)
    extra = f"; fastest approximate: {best_approx['label']} {best_approx['samples_per_second'] / 1e6:,.0f}M" if best_approx else ""
    print(f"| {model} {'784-1024x8-26' if model == 'deep' else '784-256-256-26'}, {b}, {net} | {one / 1e6:,.2f}M | {' | '.join(cells)} | {rec['label']}: {split}{extra} |")
