"""Key index: insert 100k keys, point get, range scan of 1k keys; the Cython
KeyIndex against the pure-Python reference and a sortedcontainers.SortedDict
(key -> revision) baseline that keeps no history at all.

    python bench/micro/bench_keyindex.py --fast
"""
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import pyperf  # noqa: E402
from sortedcontainers import SortedDict  # noqa: E402

from fastkv.mvcc._keyindex import KeyIndex as CyKeyIndex  # noqa: E402
from fastkv.mvcc.keyindex_ref import KeyIndex as RefKeyIndex  # noqa: E402

N_KEYS = 100_000
N_GETS = 1000
SCAN = 1000
SUB_BITS = 24

rng = random.Random(7)
KEYS = [b"/registry/pods/ns-%04d/pod-%08d" % (rng.randrange(1000), i) for i in range(N_KEYS)]
rng.shuffle(KEYS)
PROBES = rng.sample(KEYS, N_GETS)
SORTED = sorted(KEYS)
SCAN_START = SORTED[N_KEYS // 2]
SCAN_END = SORTED[N_KEYS // 2 + SCAN]
AT = N_KEYS + 1


class SortedDictIndex:
    """Baseline: an ordered dict key -> mod revision (no generations)."""

    def __init__(self):
        self.d = SortedDict()

    def put(self, key, rev):
        self.d[key] = rev

    def get(self, key, at_main):
        rev = self.d.get(key)
        return None if rev is None else (rev, rev, 1)

    def range(self, start, end, at_main, limit=0):
        keys = list(self.d.irange(start, end, inclusive=(True, False)))
        return keys, [self.d[k] for k in keys]


IMPLS = {"cython": CyKeyIndex, "reference": RefKeyIndex, "SortedDict": SortedDictIndex}


def build(cls):
    ki = cls()
    for i, key in enumerate(KEYS):
        ki.put(key, (i + 1) << SUB_BITS)
    return ki


def time_insert(loops, cls):
    total = 0.0
    for _ in range(loops):
        t0 = time.perf_counter()
        build(cls)
        total += time.perf_counter() - t0
    return total


def make_time_get(ki):
    def time_get(loops):
        get = ki.get
        t0 = time.perf_counter()
        for _ in range(loops):
            for key in PROBES:
                get(key, AT)
        return time.perf_counter() - t0
    return time_get


def make_time_scan(ki):
    def time_scan(loops):
        t0 = time.perf_counter()
        for _ in range(loops):
            keys, _ = ki.range(SCAN_START, SCAN_END, AT)
        assert len(keys) == SCAN
        return time.perf_counter() - t0
    return time_scan


def main():
    runner = pyperf.Runner()
    summary = []
    for name, cls in IMPLS.items():
        b = runner.bench_time_func(f"keyindex insert {N_KEYS} keys {name}", time_insert, cls)
        if b is not None and not runner.args.worker:
            summary.append((name, f"insert {N_KEYS // 1000}k keys", b.mean() * 1e3, "ms"))
        ki = build(cls)
        b = runner.bench_time_func(f"keyindex get x{N_GETS} {name}", make_time_get(ki),
                                   inner_loops=N_GETS)
        if b is not None and not runner.args.worker:
            summary.append((name, "point get", b.mean() * 1e9, "ns"))
        b = runner.bench_time_func(f"keyindex range {SCAN} keys {name}", make_time_scan(ki))
        if b is not None and not runner.args.worker:
            summary.append((name, f"range scan {SCAN} keys", b.mean() * 1e6, "us"))
    if summary:
        print("\nsummary:")
        for name, op, value, unit in summary:
            print(f"  {name:10s} {op:22s} {value:10.1f} {unit}")


if __name__ == "__main__":
    main()
