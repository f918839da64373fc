#!/bin/bash
python3 - <<'PY'
import csv
with open("/app/sales.csv") as f:
    total = sum(int(r["units"]) * float(r["price"]) for r in csv.DictReader(f))
open("/app/total.txt", "w").write(f"{total:.2f}\n")
PY
