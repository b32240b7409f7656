"""What one `nnpar compare` wrote, for the benchmark scripts: its summary CSV rows, each with
the results JSON it names, and the throughput figure they all report."""
import csv
import glob
import json
import os
import statistics


def compare_results(out):
    """[(summary row, results JSON)] of the newest `*-compare.csv` in `out`, in table order."""
    table = sorted(glob.glob(os.path.join(out, "*-compare.csv")))[-1]
    with open(table) as f:
        rows = list(csv.DictReader(f))
    runs = []
    for row in rows:
        with open(os.path.join(out, row["results_file"])) as f:
            runs.append((row, json.load(f)))
    return runs


def median_rate(result):
    """Median samples/s of the epochs after the first (which pays for warm-up), or of the only one."""
    rates = [e["samples_per_second"] for e in result["epochs"]]
    return statistics.median(rates[1:] or rates)
