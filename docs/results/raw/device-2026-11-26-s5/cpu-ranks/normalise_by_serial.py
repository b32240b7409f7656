#!/usr/bin/env python3
"""Diagnostic for validation.md (plan_validate.py's table): each point's predictions scaled by
that point's own serial run (measured / predicted), i.e. the model's error if the host's
single-core speed at the time of the point had been known. Not a validation result."""
import sys
rows = [l for l in open(sys.argv[1] if len(sys.argv) > 1 else "validation.md") if l.startswith("| ") and ".json" in l]
points = {}
for line in rows:
    c = [x.strip() for x in line.strip().strip("|").split("|")]
    points.setdefault(c[0].split("/")[0], []).append((c[1], float(c[5].replace(",", "")), float(c[6].replace(",", ""))))
families, total, raw_ok, norm_ok = {}, 0, 0, 0
for point, runs in sorted(points.items()):
    serial = next(r for r in runs if r[0].startswith("serial"))
    speed = serial[1] / serial[2]
    print(f"{point:9s} serial measured / predicted {speed:.2f}")
    for strategy, measured, predicted in runs:
        raw, norm = predicted / measured - 1, predicted * speed / measured - 1
        total += 1; raw_ok += abs(raw) <= 0.15; norm_ok += abs(norm) <= 0.15
        fam = families.setdefault(strategy.split(" ")[0].rstrip(","), [0, 0, []])
        fam[0] += 1; fam[1] += abs(norm) <= 0.15; fam[2].append(round(100 * norm))
print(f"{total} runs: {raw_ok} within 15% as measured, {norm_ok} after scaling by each point's serial")
for name, (n, ok, errs) in families.items():
    print(f"{name:13s} {ok:2d}/{n:2d} within 15% after scaling; errors % {errs}")
