#!/usr/bin/env python3
# Copyright © 2026 The cohmap developers
# SPDX-License-Identifier: MIT
"""Smoke test of `cohmap bench --quick` (TAP output).

usage: check-bench-csv.py COHMAP_TOOL CSV_PATH

Runs `COHMAP_TOOL bench --quick --csv CSV_PATH` and checks that it exits 0
and that the CSV has exactly the documented header and one numeric row per
(pattern, size, fraction, method) of the --quick run: no row missing, none
twice, none unexpected.  The numbers themselves are not judged: they
belong to the machine.  Methods the bench reports as unavailable on this
kernel ("note: scan unavailable here ...") may be absent.

A few argument checks ride along: --help exits 0, bad arguments exit 2,
and --plot without gnuplot on PATH exits 1 naming the Debian package.
"""

import csv
import math
import os
import re
import subprocess
import sys
import tempfile
import time

HEADER = ["pattern", "size_bytes", "dirty_fraction", "method",
          "median_ns_per_submit", "bytes_uploaded"]
# What --quick covers (src/tools/bench.c, docs/benchmarks.md).
QUICK_SIZES = [64 * 1024, 1024 * 1024, 4 * 1024 * 1024]
FRACTIONS = [0.0, 0.0001, 0.001, 0.01, 0.1, 0.5, 1.0]
PATTERNS = ["random", "sequential", "strided", "ring"]
METHODS = ["full", "compare", "fault", "scan", "auto", "auto-fault", "ideal"]

results = []


def check(ok, name, detail=""):
    results.append(ok)
    print("%s %d - %s" % ("ok" if ok else "not ok", len(results), name))
    if not ok and detail:
        for line in detail.rstrip().splitlines():
            print("# " + line)
    return ok


def run(args, env=None, timeout=600):
    return subprocess.run(args, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env,
                          timeout=timeout)


def key_of(row):
    return (row[0], int(row[1]), float(row[2]), row[3])


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    tool, csv_path = sys.argv[1], sys.argv[2]

    r = run([tool, "bench", "--help"])
    check(r.returncode == 0 and "--quick" in r.stdout,
          "bench --help exits 0 and documents --quick", r.stderr)
    for bad in (["--bogus"], ["--methods", "full,nosuch"],
                ["--sizes", "12Q"], ["--fractions", "150"],
                ["--quick", "--full"], ["--csv"]):
        r = run([tool, "bench"] + bad)
        check(r.returncode == 2 and "cohmap bench:" in r.stderr,
              "bench %s exits 2 with a message" % " ".join(bad),
              "exit %d\n%s" % (r.returncode, r.stderr))
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, PATH=os.path.join(d, "empty"))
        r = run([tool, "bench", "--quick", "--plot", d], env=env)
        check(r.returncode == 1 and "gnuplot-nox" in r.stderr,
              "--plot without gnuplot exits 1 naming gnuplot-nox",
              "exit %d\n%s" % (r.returncode, r.stderr))

    if os.path.exists(csv_path):
        os.unlink(csv_path)
    t0 = time.monotonic()
    r = run([tool, "bench", "--quick", "--csv", csv_path])
    elapsed = time.monotonic() - t0
    print("# bench --quick took %.1f s" % elapsed)
    for line in r.stdout.splitlines():
        if line.startswith("total") or line.startswith("note:"):
            print("# " + line)
    if not check(r.returncode == 0, "bench --quick exits 0",
                 "exit %d\nstderr (end):\n%s" % (r.returncode,
                                                 r.stderr[-4000:])):
        return finish()

    skipped = set(re.findall(r"^note: (\S+) unavailable here",
                             r.stdout, re.M))
    methods = [m for m in METHODS if m not in skipped]
    expected = set()
    for size in QUICK_SIZES:
        for m in methods:
            expected.add(("phase", size, -1.0, m))
            for p in PATTERNS:
                for f in FRACTIONS:
                    expected.add((p, size, f, m))

    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    check(bool(rows) and rows[0] == HEADER, "CSV header is exactly %s"
          % ",".join(HEADER), "got: %r" % (rows[0] if rows else None))
    bad, seen, dup = [], set(), []
    for n, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != len(HEADER):
                raise ValueError("%d fields" % len(row))
            k = key_of(row)
            for v in (float(row[4]), float(row[5])):
                if not math.isfinite(v) or v < 0:
                    raise ValueError("not a finite non-negative number")
        except ValueError as e:
            bad.append("line %d: %s: %s" % (n, ",".join(row), e))
            continue
        if k in seen:
            dup.append(",".join(row))
        seen.add(k)
    check(not bad, "every row has 6 fields and numeric values",
          "\n".join(bad[:20]))
    check(not dup, "no (pattern, size, fraction, method) twice",
          "\n".join(dup[:20]))
    missing = sorted(expected - seen)
    check(not missing, "all %d expected rows present" % len(expected),
          "\n".join(str(m) for m in missing[:20]) +
          ("\n... %d missing" % len(missing) if len(missing) > 20 else ""))
    extra = sorted(seen - expected)
    check(not extra, "no unexpected rows",
          "\n".join(str(e) for e in extra[:20]))
    return finish()


def finish():
    print("1..%d" % len(results))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
