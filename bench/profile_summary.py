#!/usr/bin/env python3
"""Summarise a py-spy raw profile (``py-spy record --format raw -o prof.txt``): the
functions with the most samples on top of the stack (self) and anywhere on it
(inclusive), as shares of the samples of the threads kept.

    py-spy record --pid <pid> --format raw -o /tmp/prof.txt --duration 15 [--native]
    python3 bench/profile_summary.py /tmp/prof.txt            # the event loop's thread
    python3 bench/profile_summary.py /tmp/prof.txt --all-threads --top 40

Idle worker threads (the executor's, waiting for work) are left out by default: their
samples say nothing about where the loop spends its time.
"""
from __future__ import annotations

import argparse
import collections
import sys

IDLE_MARKERS = ("_worker (concurrent/futures/thread.py", "PyThread_acquire_lock_timed",
                "Thread._bootstrap")


def frame_name(frame: str) -> str:
    """'func (path/file.py:123)' -> 'func file.py'; native frames keep their library."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").split(":")[0].split("/")[-1]
    return f"{name} {where}".strip()


def summarise(lines, all_threads: bool = False):
    self_t: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        if not all_threads and any(m in stack for m in IDLE_MARKERS):
            continue
        n = int(count)
        total += n
        frames = [frame_name(f) for f in stack.split(";") if f]
        for name in set(frames):
            incl[name] += n
        if frames:
            self_t[frames[-1]] += n
    return total, self_t, incl


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--all-threads", action="store_true")
    args = ap.parse_args(argv)
    with open(args.profile) as f:
        total, self_t, incl = summarise(f, args.all_threads)
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{total} samples")
    for title, counter in (("self", self_t), ("inclusive", incl)):
        print(f"--- {title}")
        for name, n in counter.most_common(args.top):
            print(f"{100 * n / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
