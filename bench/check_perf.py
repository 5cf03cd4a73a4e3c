#!/usr/bin/env python3
"""`etcdctl check perf` (ETCDCTL_API=3, Debian's etcdctl 3.4) against etcd and fastkv.

etcdctl's own performance check: a load (`--load=s`: 60 s of 150 writes/s from 50
clients; m, l, xl are heavier) with wall-clock limits (throughput, slowest request
under 500 ms, latency stddev). It is a benchmark, so it lives here and not in the
test suite: a shared, noisy machine can fail it without any bug. Each server gets a
fresh single member on the same disk, etcd first; the check's output and verdict for
each are printed and written to bench/results/check_perf-<timestamp>.json. Exits
non-zero if fastkv does not PASS (or leaves its /etcdctl-check-perf/ keys behind).

    python3 bench/check_perf.py [--load s|m|l|xl] [--servers etcd,fastkv]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, os.path.join(REPO, "tests"))

from servers import EtcdProcess, FastkvProcess  # noqa: E402

SERVERS = {"etcd": EtcdProcess, "fastkv": FastkvProcess}


def etcdctl(url: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, ETCDCTL_API="3")
    return subprocess.run(["etcdctl", "--endpoints", url, *args], capture_output=True,
                          text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--load", default="s", choices=["s", "m", "l", "xl"])
    ap.add_argument("--servers", default="etcd,fastkv")
    ap.add_argument("--out", default=os.path.join(BENCH, "results"))
    args = ap.parse_args(argv)
    record = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load": args.load,
              "runs": []}
    ok = True
    for kind in [s for s in args.servers.split(",") if s]:
        srv = SERVERS[kind]().start(timeout=60)
        try:
            os.sync()   # start with the disk quiet: fsync latency is what the check measures
            p = etcdctl(srv.url, "check", "perf", f"--load={args.load}", timeout=600)
            left = etcdctl(srv.url, "get", "/etcdctl-check-perf/", "--prefix", "--keys-only",
                           "--limit", "1", timeout=30)
        finally:
            srv.cleanup()
        passed = p.returncode == 0 and p.stdout.rstrip().endswith("PASS")
        clean = left.returncode == 0 and left.stdout == ""
        print(f"== {kind}: {'PASS' if passed else 'FAIL'}"
              f"{'' if clean else ' (left its keys behind)'}\n{p.stdout}{p.stderr}", flush=True)
        record["runs"].append({"server": kind, "rc": p.returncode, "passed": passed,
                               "cleaned_up": clean, "output": p.stdout + p.stderr})
        if kind == "fastkv" and not (passed and clean):
            ok = False
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"check_perf-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    print(f"results: {os.path.relpath(path, REPO)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
