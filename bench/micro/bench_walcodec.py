"""WAL codec throughput: encode_entries and decode of one batch of 1,000
entries of 100 bytes (plus a HARDSTATE record), Cython against the
pure-Python reference.

    python bench/micro/bench_walcodec.py --fast

pyperf prints the time per batch; the MB/s summary (bytes of encoded batch
per second) follows at the end.
"""
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import pyperf  # noqa: E402

from fastkv.storage import _walcodec, walcodec_ref  # noqa: E402

CODECS = {"cython": _walcodec, "reference": walcodec_ref}


def main():
    runner = pyperf.Runner()
    rng = random.Random(1)
    entries = [(7, 1000 + i, 0, rng.randbytes(100)) for i in range(1000)]
    hardstate = (7, 1, 1999)
    encoded = _walcodec.encode_entries(42, entries, hardstate)
    assert encoded == walcodec_ref.encode_entries(42, entries, hardstate)
    results = []
    for name, codec in CODECS.items():
        bench = runner.bench_func(f"walcodec encode_entries {name}", codec.encode_entries,
                                  42, entries, hardstate)
        if bench is not None and not runner.args.worker:
            results.append((name, "encode_entries", len(encoded) / bench.mean() / 1e6))
        bench = runner.bench_func(f"walcodec decode {name}", codec.decode, encoded)
        if bench is not None and not runner.args.worker:
            results.append((name, "decode", len(encoded) / bench.mean() / 1e6))
    if results:
        print(f"\nbatch: 1000 entries x 100 B + hardstate = {len(encoded)} bytes")
        print("throughput (MB/s):")
        for name, op, mbs in results:
            print(f"  {name:10s} {op:15s} {mbs:10.1f}")


if __name__ == "__main__":
    main()
