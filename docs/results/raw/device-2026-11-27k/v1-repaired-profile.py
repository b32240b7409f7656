#!/usr/bin/env python3
"""Call V1's profile with its 512x512 points at 1-32 rows replaced by twice the 512x256 points
(the FLOP ratio), for re-predicting V1's stored runs: how much of V1's deep-16 error those points
made. Usage: v1-repaired-profile.py V1/profile.json OUT.json"""
import copy, json, sys
p = json.load(open(sys.argv[1]))
q = copy.deepcopy(p)
for form, table in q["cpu"]["kernels"].items():
    ref = {(x["in"], x["out"], x["rows"]): x["seconds"] for x in p["cpu"]["kernels"][form]["points"]}
    for x in table["points"]:
        if x["in"] == 512 and x["out"] == 512 and x["rows"] <= 32:
            x["seconds"] = 2 * ref[(512, 256, x["rows"])]
json.dump(q, open(sys.argv[2], "w"))
