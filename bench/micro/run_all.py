#!/usr/bin/env python3
"""Run every Cython hot-path micro-benchmark (bench/micro/bench_*.py, pyperf) and keep
the results: each benchmark's pyperf JSON and its printed summary (GB/s, MB/s,
rates, speed-ups over the pure-Python reference and the obvious library) under
bench/results/micro-<timestamp>/, and one summary.json naming them.

    python bench/micro/run_all.py            # pyperf --fast (what ci/bench runs)
    python bench/micro/run_all.py --rigorous # pyperf's longer mode
    python bench/micro/run_all.py --only crc32c,walcodec
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

MICRO = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(os.path.dirname(MICRO), "results")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rigorous", action="store_true", help="pyperf --rigorous instead of --fast")
    ap.add_argument("--only", default="", help="comma-separated names (crc32c, walcodec, ...)")
    ap.add_argument("--out", default=None, help="directory for the results")
    args = ap.parse_args(argv)
    scripts = sorted(glob.glob(os.path.join(MICRO, "bench_*.py")))
    if args.only:
        wanted = set(args.only.split(","))
        scripts = [s for s in scripts if os.path.basename(s)[6:-3] in wanted]
    out = args.out or os.path.join(RESULTS, time.strftime("micro-%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    summary, failed = {}, []
    for script in scripts:
        name = os.path.basename(script)[6:-3]
        data = os.path.join(out, f"{name}.json")
        cmd = [sys.executable, script, "--rigorous" if args.rigorous else "--fast",
               "--quiet", "-o", data]
        print(f"== {name}: {' '.join(os.path.basename(c) for c in cmd[1:])}", flush=True)
        t0 = time.monotonic()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        print(p.stdout, end="", flush=True)
        if p.returncode != 0:
            print(p.stderr, file=sys.stderr)
            failed.append(name)
        with open(os.path.join(out, f"{name}.txt"), "w") as f:
            f.write(p.stdout)
        summary[name] = {"pyperf_json": os.path.relpath(data, out), "returncode": p.returncode,
                         "seconds": round(time.monotonic() - t0, 1), "output": p.stdout}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"results: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
